"""Run one FastFit (IBM ``fast-fit``) training + prediction job; standalone, runs in FastFit's own venv.

    HF_HUB_OFFLINE=1 /work/fastfit-venv/bin/python benchmarks/peers/fastfit_runner.py JOB.json RESULT.json

JOB.json (written by ``benchmarks/peers_fastfit.py``)::

    {"model_name_or_path": PATH, "train": {"text": [...], "label": [...]}, "test": {"text": [...], "label": [...]},
     "args": {FastFitTrainer keyword arguments}}

Labels are class *names* (strings): FastFit embeds the label text as the class "document". RESULT.json::

    {"status": "ok", "labels": FastFit's sorted label list, "predictions": [index into labels, one per test text],
     "accuracy": ..., "train_seconds": trainer.train() wall time, "predict_seconds": ..., "setup_seconds": ...,
     "args": every argument FastFit resolved (training, data, config, model), "versions": {...}, "log_history": [...]}

Workarounds for fast-fit 1.2.1, applied here without touching site-packages:
- ``fastfit.train.load_metric("accuracy")`` needs the network: replaced by a local accuracy metric;
- prediction needs a ``test`` split: the test texts are passed as ``test_dataset``;
- ``Dataset.from_pandas`` turns label ids into strings under pandas 3: datasets are built with ``Dataset.from_dict``.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from importlib import metadata

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")


class LocalAccuracy:
    """Stands in for ``datasets.load_metric("accuracy")``: ``compute(predictions, references) -> {"accuracy"}``."""

    def compute(self, predictions=None, references=None, **_):
        import numpy as np

        p, r = np.asarray(predictions), np.asarray(references)
        return {"accuracy": float((p == r).mean()) if len(r) else 0.0}


def local_load_metric(name="accuracy", *args, **kwargs):
    if name != "accuracy":
        raise ValueError(f"fastfit_runner only provides the 'accuracy' metric offline, not {name!r}")
    return LocalAccuracy()


def _jsonable(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


class _Progress:
    """A transformers callback printing one line per epoch (elapsed seconds), for polling the log."""

    def __init__(self):
        from transformers import TrainerCallback

        t0 = time.perf_counter()

        class CB(TrainerCallback):
            def on_epoch_end(self, args, state, control, **kw):
                print(f"[fastfit_runner] epoch {state.epoch:.2f}/{args.num_train_epochs} step {state.global_step} "
                      f"{time.perf_counter() - t0:.1f} s", flush=True)

        self.callback = CB()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    job_path, out_path = argv
    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    t_start = time.perf_counter()

    import fastfit.train as ff_train
    import numpy as np
    import torch
    from datasets import Dataset
    from fastfit import FastFitTrainer

    ff_train.load_metric = local_load_metric          # workaround 1 (no network)
    train = Dataset.from_dict({"text": list(job["train"]["text"]), "label": [str(v) for v in job["train"]["label"]]})
    test = Dataset.from_dict({"text": list(job["test"]["text"]), "label": [str(v) for v in job["test"]["label"]]})
    args = dict(job["args"])
    args.setdefault("label_column_name", "label")
    args.setdefault("text_column_name", "text")
    torch_threads = job.get("torch_threads")
    if torch_threads:
        torch.set_num_threads(int(torch_threads))

    trainer = FastFitTrainer(model_name_or_path=job["model_name_or_path"], train_dataset=train,
                             test_dataset=test, **args)
    trainer.trainer.add_callback(_Progress().callback)
    setup_seconds = time.perf_counter() - t_start
    print(f"[fastfit_runner] setup {setup_seconds:.1f} s; {len(train)} train, {len(test)} test, "
          f"{trainer.num_labels} labels; epochs {trainer.training_args.num_train_epochs}; "
          f"torch threads {torch.get_num_threads()}", flush=True)

    load_start = os.getloadavg()
    t0 = time.perf_counter()
    trainer.train()
    load_after_train = os.getloadavg()
    train_seconds = time.perf_counter() - t0
    print(f"[fastfit_runner] trained in {train_seconds:.1f} s", flush=True)

    predict_path = job.get("predict", "inference")
    t0 = time.perf_counter()
    if predict_path == "trainer":
        # transformers' Trainer.predict: FastFitTrainable.forward in eval mode also computes the training loss
        # (queries and docs repeated num_repeats times), several times the work of inference alone
        out = trainer.trainer.predict(trainer.predict_dataset)   # the test split (workaround 2)
        logits = out.predictions[0] if isinstance(out.predictions, tuple) else out.predictions
    elif predict_path == "inference":
        # what the exported model (trainer.export_model() -> fastfit.FastFit, whose forward is exactly
        # inference_forward) computes, on the same tokenised test split, without the save/load round trip
        model = trainer.model.eval()
        ds = trainer.predict_dataset.with_format("torch", columns=["query_input_ids", "query_attention_mask"])
        bs = int(trainer.training_args.per_device_eval_batch_size)
        chunks = []
        with torch.no_grad():
            for i in range(0, len(ds), bs):
                batch = ds[i:i + bs]
                chunks.append(model.inference_forward(batch["query_input_ids"],
                                                      batch["query_attention_mask"]).float().numpy())
        logits = np.concatenate(chunks)
    else:
        raise ValueError(f"unknown predict path {predict_path!r} (trainer | inference)")
    predict_seconds = time.perf_counter() - t0
    pred = np.asarray(logits).argmax(1)
    labels = list(trainer.labels)
    gold = np.asarray([labels.index(lab) for lab in test["label"]])
    acc = float((pred == gold).mean())
    print(f"[fastfit_runner] predicted {len(pred)} in {predict_seconds:.1f} s; accuracy {acc:.4f}", flush=True)

    ta = trainer.training_args.to_dict()
    result = {
        "status": "ok",
        "labels": labels,
        "predictions": [int(p) for p in pred],
        "accuracy": acc,
        "n_train": len(train), "n_test": len(test),
        "setup_seconds": round(setup_seconds, 3),
        "train_seconds": round(train_seconds, 3),
        "predict_seconds": round(predict_seconds, 3),
        "predict_path": predict_path,
        "total_seconds": round(time.perf_counter() - t_start, 3),
        "requested_args": _jsonable(args),
        "args": {"training": _jsonable(ta), "data": _jsonable(vars(trainer.data_args)),
                 "config": _jsonable(vars(trainer.config_args)), "model": _jsonable(vars(trainer.model_args))},
        "log_history": _jsonable(trainer.trainer.state.log_history),
        "versions": {d: _version(d) for d in ("fast-fit", "torch", "transformers", "datasets", "numpy",
                                              "sentence-transformers", "accelerate")},
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "load_average": {"before_train": list(load_start), "after_train": list(load_after_train),
                         "after_predict": list(os.getloadavg())},
        "workarounds": ["fastfit.train.load_metric replaced by a local accuracy metric (no network)",
                        "test texts passed as test_dataset (FastFit requires a test split to predict)",
                        "datasets built with Dataset.from_dict (not from_pandas)"],
    }
    tmp = out_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f)
    os.replace(tmp, out_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
