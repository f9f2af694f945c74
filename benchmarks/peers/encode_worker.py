"""One embedding backend in its own process, driven over stdin/stdout by ``benchmarks/onnx_peers.py``.

    PYTHON benchmarks/peers/encode_worker.py SPEC.json

Runs in whichever venv has the backend: fewshot's own (``kind: fewshot``, with the repository on PYTHONPATH) or a
peer venv with sentence-transformers and optimum (``kind: st``). Standalone: imports nothing from fewshot unless
the spec asks for a fewshot encoder. SPEC.json::

    {"kind": "fewshot", "encoder": "minilm" | "onnx:DIR", "threads": 1}
    {"kind": "st", "backend": "torch" | "onnx" | "openvino", "model": DIR, "file_name": "onnx/model.onnx" | null,
     "threads": 1}

Then one JSON command per stdin line, one JSON answer per stdout line:

    {"cmd": "time", "texts": FILE.json, "batch_size": 64}  → {"wall_s", "cpu_s", "n"}   (encode once, timed)
    {"cmd": "embed", "texts": FILE.json, "batch_size": 64, "out": FILE.npy} → {"n", "dim"}
    {"cmd": "quit"}

Threads: the spec's ``threads`` for torch, onnxruntime (intra-op; inter-op 1) and OpenVINO alike, and
OMP/MKL thread variables set by the caller.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from importlib import metadata


def _versions(names: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def load(spec: dict):
    """→ (encode(texts, batch_size) -> float32 (n, dim) ndarray, description dict)."""
    threads = int(spec.get("threads", 1))
    import numpy as np

    if not (spec["kind"] == "fewshot" and spec["encoder"].startswith("onnx:")):  # the ONNX path runs without torch
        import torch

        torch.set_num_threads(threads)
    if spec["kind"] == "fewshot":
        from fewshot.encoders import load_encoder
        from fewshot.encoders.onnx import ONNXEncoder

        name = spec["encoder"]
        enc = ONNXEncoder(name[len("onnx:"):], threads=threads, name=name) if name.startswith("onnx:") \
            else load_encoder(name, device="cpu")

        def encode(texts, batch_size):
            return np.asarray(enc.encode_text(texts, batch_size=batch_size, show_progress_bar=False), np.float32)

        info = {"encoder": enc.name, "describe": {k: str(v) for k, v in enc.describe().items()},
                "run_tokens": getattr(enc, "run_tokens", None)}
        return encode, info

    from sentence_transformers import SentenceTransformer

    backend = spec["backend"]
    kwargs: dict = {}
    if backend == "onnx":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        kwargs = {"provider": "CPUExecutionProvider", "session_options": so}
    elif backend == "openvino":
        kwargs = {"ov_config": {"INFERENCE_NUM_THREADS": str(threads)}}
    if spec.get("file_name"):
        kwargs["file_name"] = spec["file_name"]
    model = SentenceTransformer(spec["model"], device="cpu", backend=backend, model_kwargs=kwargs or None)

    def encode(texts, batch_size):
        return np.asarray(model.encode(texts, batch_size=batch_size, show_progress_bar=False,
                                       convert_to_numpy=True, normalize_embeddings=True), np.float32)

    return encode, {"backend": backend, "file_name": spec.get("file_name")}


def main() -> int:
    spec = json.loads(open(sys.argv[1], encoding="utf-8").read())
    t = time.perf_counter()
    encode, info = load(spec)
    encode(["warm up the graph", "and its allocator with a second, longer sentence"], 2)
    info.update(load_s=time.perf_counter() - t, python=platform.python_version(),
                versions=_versions(["torch", "onnxruntime", "openvino", "sentence-transformers", "transformers",
                                    "optimum", "optimum-onnx", "optimum-intel", "tokenizers", "numpy"]))
    print(json.dumps({"ready": True, "info": info}), flush=True)
    texts_cache: dict[str, list[str]] = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        path = cmd["texts"]
        if path not in texts_cache:
            texts_cache[path] = json.loads(open(path, encoding="utf-8").read())
        texts = texts_cache[path]
        if cmd["cmd"] == "time":
            w, c = time.perf_counter(), time.process_time()
            encode(texts, int(cmd["batch_size"]))
            print(json.dumps({"wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c,
                              "n": len(texts)}), flush=True)
        elif cmd["cmd"] == "embed":
            import numpy as np

            vecs = encode(texts, int(cmd["batch_size"]))
            np.save(cmd["out"], vecs)
            print(json.dumps({"n": int(vecs.shape[0]), "dim": int(vecs.shape[1])}), flush=True)
        else:
            print(json.dumps({"error": f"unknown command {cmd['cmd']!r}"}), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    raise SystemExit(main())
