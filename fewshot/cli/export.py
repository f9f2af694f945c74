"""``fewshot export --encoder NAME --out DIR [--quantize int8]``: an encoder as ONNX, loadable as ``onnx:DIR``."""
from __future__ import annotations

import argparse
import json

from fewshot.encoders.onnx import MANIFEST_NAME
from fewshot.export.onnx_export import DEFAULT_OPSET, QUANTIZE_CHOICES

NAME = "export"
HELP = "export an encoder to ONNX (optionally int8)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", default="minilm",
                        help="encoder to export: minilm, effnet-lite0, st:..., clip:<arch>/<pretrained>, "
                             "timm:<name>@<checkpoint> (default: minilm)")
    parser.add_argument("--out", required=True, help="output folder (created; replaced if it is an export)")
    parser.add_argument("--quantize", choices=QUANTIZE_CHOICES, default=None,
                        help="row-wise int8 quantisation of the graphs (about 4x smaller; a row's result never "
                             "depends on the rest of its batch)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")


def run(args: argparse.Namespace) -> int:
    """Export; prints the folder and its manifest summary. Returns 0."""
    from fewshot.export.onnx_export import export_encoder

    out = export_encoder(args.encoder, args.out, quantize=args.quantize, opset=args.opset)
    with open(out / MANIFEST_NAME, encoding="utf-8") as f:
        manifest = json.load(f)
    size = sum((out / name).stat().st_size for name in manifest["files"])
    print(f"exported {manifest['source_encoder']} → {out} ({manifest['kind']}, dim {manifest['dim']}, "
          f"{'int8' if manifest['quantize'] else 'fp32'}, {size / 2**20:.1f} MiB); "
          f"load it with encoder 'onnx:{out}'")
    return 0
