"""``fewshot transfer`` (formerly ``fewshot adapt``): supervised transfer of an image encoder's last stages to a
labelled source set of other classes (e.g. Omniglot background), for few-shot on new classes."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from fewshot.training.image_transfer import DEFAULTS, LOSSES

NAME = "transfer"
HELP = ("fine-tune an image encoder's last stages on a labelled source set of other classes (e.g. Omniglot "
        "background), for few-shot on new classes")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", default="effnet-lite0", help="timm image encoder to adapt (default "
                        "effnet-lite0; also timm:NAME@FILE or timm-dir:DIR)")
    parser.add_argument("--source", required=True, help="labelled source images of other classes: an image "
                        "folder (one sub-folder per class) or an Omniglot .npz (e.g. images_background.npz)")
    parser.add_argument("--out", required=True, help="directory to write the adapted encoder to; use it as "
                        "--encoder timm-dir:DIR")
    parser.add_argument("--train-blocks", type=int, default=DEFAULTS["train_blocks"],
                        help="trailing stages to train (default %(default)s)")
    parser.add_argument("--image-size", type=int, default=DEFAULTS["image_size"], help="input px (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"], help="default %(default)s")
    parser.add_argument("--loss", choices=LOSSES, default=DEFAULTS["loss"], help="default %(default)s")
    parser.add_argument("--rotations", action=argparse.BooleanOptionalAction, default=DEFAULTS["rotations"],
                        help="add 90/180/270-degree rotations as extra classes")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"], help="default %(default)s")
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="default %(default)s")
    parser.add_argument("--holdout-classes", type=int, default=DEFAULTS["holdout_classes"],
                        help="source classes held out for early stopping (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-minutes", type=float, default=DEFAULTS["max_minutes"],
                        help="wall-time budget (default %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: 1 on a busy machine, "
                        "else up to 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Transfer, save to ``--out``, print a JSON summary. Returns the exit status."""
    from fewshot.training.image_transfer import TransferConfig, load_source, transfer_encoder

    config = TransferConfig(train_blocks=args.train_blocks, image_size=args.image_size, epochs=args.epochs,
                            loss=args.loss, rotations=args.rotations, batch_size=args.batch_size, lr=args.lr,
                            holdout_classes=args.holdout_classes, seed=args.seed, max_minutes=args.max_minutes,
                            num_threads=args.threads)
    enc = transfer_encoder(args.encoder, load_source(args.source), config, progress=not args.quiet)
    out = Path(args.out)
    enc.save_to(out)
    summary = {"encoder": f"timm-dir:{out.resolve()}", **{k: v for k, v in enc.info.items() if k != "history"},
               "history": enc.info["history"]}
    print(json.dumps(summary, indent=1))
    return 0
