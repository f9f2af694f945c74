"""ONNX export of fewshot encoders, for the torch-free ``onnx:<dir>`` encoder (``fewshot/encoders/onnx.py``).

``export_encoder(encoder, out_dir, quantize=None)`` writes one self-contained folder::

    out_dir/
      manifest.json     kind, dim, modalities, source encoder, tokenizer / preprocessing, sha256 of every file
      text.onnx         (text encoders, CLIP)  (batch, seq) int64 input_ids + attention_mask → (batch, dim)
      image.onnx        (image encoders, CLIP) (batch, 3, H, W) float32 pixels → (batch, dim)
      tokenizer.json    (text encoders, CLIP)  a ``tokenizers`` tokenizer, truncation/padding off (set at load)

Pooling and L2 normalisation are inside each graph, so a graph's output is the encoder's embedding. Batch (and,
for sentence encoders, sequence) axes are dynamic. ``quantize="int8"`` rewrites every graph into fewshot's
row-wise int8 (``fewshot.export.int8``, manifest ``quantize_scheme: "rowwise-int8-v1"``): int8 weights, and
activations quantised with scales computed from each row alone, so an input's embedding does not depend on the
other inputs of its batch.

Exporting needs torch and the encoder's own libraries; running the export needs only onnxruntime, tokenizers,
numpy and PIL.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, cast, get_args

from fewshot._core import __version__, sha256_file
from fewshot._progress import progress
from fewshot.encoders.onnx import FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME
from fewshot.errors import EncoderUnavailableError, InvalidInputError
from fewshot.export.int8 import SCHEME, quantize_rowwise

Quantize = Literal["int8"]
QUANTIZE_CHOICES: tuple[str, ...] = get_args(Quantize)
DEFAULT_OPSET = 17
#: a stage of the export is done (its name shown on the bar): model ready (each exporter), a graph traced
#: (``_torch_export``), a graph checked / quantised (``_finish_graph``); ``_stage_count`` counts them, + 1 for the
#: manifest
Tick = Callable[[str], None]


# ---------------------------------------------------------------------------------------------------------------
# public entry point

def export_encoder(encoder: Any, out_dir: str | os.PathLike, quantize: str | None = None,
                   opset: int = DEFAULT_OPSET, show_progress_bar: bool | None = None) -> Path:
    """Export ``encoder`` (an Encoder or a registry name such as 'minilm', 'effnet-lite0', 'clip:ViT-B-32/...',
    'timm:...', 'st:...') to ONNX in ``out_dir`` and return ``out_dir`` as a Path.

    The folder is written next to ``out_dir`` first and moved into place at the end, so a crash never leaves a
    half-written export under that name. An existing ``out_dir`` is replaced only when it is empty or is itself
    a fewshot ONNX export. Loads with ``fewshot.load_encoder(f"onnx:{out_dir}")``. A bar over the export's
    stages follows ``fewshot._progress`` (shown once the export has run 2 s; ``show_progress_bar`` forces it).
    """
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise InvalidInputError(f"quantize must be None or one of {QUANTIZE_CHOICES}, got {quantize!r}")
    encoder = _resolve_encoder(encoder)
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir())
                                                      and not (out_dir / MANIFEST_NAME).is_file())):
        raise InvalidInputError(f"out_dir {out_dir} exists and is not a fewshot ONNX export; choose a new or "
                                "empty folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    bar = progress(total=_stage_count(encoder), desc="export to ONNX (stages)", show=show_progress_bar,
                   leave=False)

    def tick(stage: str) -> None:
        bar.set_postfix_str(stage, refresh=False)
        bar.update(1)

    try:
        manifest = _export_into(encoder, tmp, quantize, opset, tick)
        manifest.update({"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "quantize": quantize,
                         "quantize_scheme": SCHEME if quantize == "int8" else None,
                         "source_encoder": encoder.name, "dim": int(encoder.dim),
                         "modalities": sorted(encoder.modalities), "opset": opset,
                         "zero_shot_templates": list(encoder.zero_shot_templates)})
        manifest["fewshot_version"] = __version__
        manifest["files"] = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        with open(tmp / MANIFEST_NAME, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
            f.write("\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
        tick("manifest written")
    finally:
        bar.close()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _resolve_encoder(encoder: Any):
    from fewshot.encoders.base import Encoder

    if isinstance(encoder, str):
        if encoder.startswith("onnx:"):
            raise InvalidInputError(f"{encoder!r} is already an ONNX export; copy its folder instead")
        from fewshot.encoders.registry import load_encoder
        return load_encoder(encoder, device="cpu", cache=False)
    if not isinstance(encoder, Encoder):
        raise InvalidInputError(f"encoder must be an Encoder or a registry name, got {type(encoder).__name__}")
    if getattr(encoder, "name", "").startswith("onnx:"):
        raise InvalidInputError(f"encoder {encoder.name!r} is already an ONNX export; copy its folder instead")
    return encoder


def _stage_count(encoder: Any) -> int:
    """Stages of exporting ``encoder``: the model made ready, then a trace and a check per graph (CLIP has two),
    then the manifest."""
    from fewshot.encoders.clip import OpenClipEncoder

    return 1 + 2 * (2 if isinstance(encoder, OpenClipEncoder) else 1) + 1


def _export_into(encoder: Any, out: Path, quantize: str | None, opset: int, tick: Tick) -> dict:
    from fewshot.encoders.clip import OpenClipEncoder
    from fewshot.encoders.sentence import SentenceTransformerEncoder
    from fewshot.encoders.timm_image import TimmImageEncoder

    if isinstance(encoder, SentenceTransformerEncoder):
        return _export_sentence(encoder, out, quantize, opset, tick)
    if isinstance(encoder, OpenClipEncoder):
        return _export_clip(encoder, out, quantize, opset, tick)
    if isinstance(encoder, TimmImageEncoder):
        return _export_timm(encoder, out, quantize, opset, tick)
    raise EncoderUnavailableError(f"cannot export encoder {encoder.name!r} ({type(encoder).__name__}) to ONNX; "
                                  "exportable: sentence-transformers ('minilm', 'st:...'), open_clip ('clip:...') "
                                  "and timm ('effnet-lite0', 'timm:...') encoders")


# ---------------------------------------------------------------------------------------------------------------
# graph export helpers

def _cpu_copy(module: Any) -> Any:
    """The module in eval mode on the CPU (a copy when it lives elsewhere, so the caller's model is untouched)."""
    import torch

    params = list(module.parameters())
    if params and params[0].device != torch.device("cpu"):
        module = copy.deepcopy(module).to("cpu")
    return module.eval()


def _torch_export(module: Any, args: tuple, path: Path, input_names: list[str], dynamic_axes: dict,
                  opset: int, tick: Tick) -> None:
    """TorchScript-based ONNX export (robust for HF/timm/open_clip graphs), one file, output 'embedding'; then
    ``tick`` ("<stem> graph traced")."""
    import torch

    mha = getattr(torch.backends, "mha", None)
    fastpath = mha.get_fastpath_enabled() if mha is not None else None
    if mha is not None:
        mha.set_fastpath_enabled(False)  # nn.MultiheadAttention's fused kernel has no ONNX symbolic
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, str(path), dynamo=False, input_names=input_names,
                              output_names=["embedding"], dynamic_axes=dynamic_axes, opset_version=opset,
                              do_constant_folding=True)
    finally:
        if mha is not None:
            mha.set_fastpath_enabled(fastpath)
    tick(f"{path.stem} graph traced")


def _finish_graph(path: Path, quantize: str | None, tick: Tick) -> None:
    """Check the graph, then (``quantize='int8'``) replace it by its row-wise int8 version; then ``tick``."""
    import onnx

    onnx.checker.check_model(str(path))
    if quantize == "int8":
        q = path.with_name(path.stem + ".int8.onnx")
        quantize_rowwise(path, q)
        os.replace(q, path)
    tick(f"{path.stem} graph checked" + (", int8" if quantize else ""))


def _normalise(x):
    import torch
    return torch.nn.functional.normalize(x.float(), p=2.0, dim=1)


# ---------------------------------------------------------------------------------------------------------------
# sentence-transformers

@contextlib.contextmanager
def _eager_attention(st: Any):
    """Trace Hugging Face transformers with their eager (matmul-softmax-matmul) attention, restored afterwards.

    The default SDPA path traces into a boolean-mask graph with NaN guards (IsNaN/Where per layer); the eager
    graph computes the same embeddings (cosine > 0.99999 on Banking77) with fewer ops and runs a few per cent
    faster under onnxruntime, int8 included. Models without a switchable attention are traced as they are."""
    switched: list[tuple[Any, Any, Any]] = []
    for module in st.modules():
        config = getattr(module, "config", None)
        setter = getattr(module, "set_attn_implementation", None)
        current = getattr(config, "_attn_implementation", None)
        if setter is None or current in (None, "eager") or any(config is c for _, c, _ in switched):
            continue
        try:
            setter("eager")
        except Exception:  # noqa: BLE001 - a model that cannot switch keeps its own attention
            continue
        switched.append((module, config, current))
    try:
        yield
    finally:
        for module, _config, previous in reversed(switched):
            module.set_attn_implementation(previous)


def _export_sentence(encoder: Any, out: Path, quantize: str | None, opset: int, tick: Tick) -> dict:
    import torch
    from tokenizers import Tokenizer

    st = _cpu_copy(encoder.model)
    tick("model ready")
    hf_tok = getattr(st, "tokenizer", None)
    backend = getattr(hf_tok, "backend_tokenizer", None)
    if backend is None:
        raise EncoderUnavailableError(f"encoder {encoder.name!r} has no fast (tokenizers) tokenizer, which the "
                                      "torch-free ONNX path needs")
    assert hf_tok is not None   # its backend_tokenizer was found just above
    uses_token_types = "token_type_ids" in getattr(hf_tok, "model_input_names", [])

    class SentenceGraph(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            features = {"input_ids": input_ids, "attention_mask": attention_mask}
            if uses_token_types:
                features["token_type_ids"] = torch.zeros_like(input_ids)
            return _normalise(self.model(features)["sentence_embedding"])

    sample = hf_tok(["fewshot export", "a somewhat longer sentence to trace the graph with"], padding=True,
                    return_tensors="pt")
    args = (sample["input_ids"].long(), sample["attention_mask"].long())
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "embedding": {0: "batch"}}
    with _eager_attention(st):
        _torch_export(SentenceGraph(st).eval(), args, out / "text.onnx", ["input_ids", "attention_mask"], axes,
                      opset, tick)
    _finish_graph(out / "text.onnx", quantize, tick)

    tok = Tokenizer.from_str(backend.to_str())
    tok.no_truncation()
    tok.no_padding()
    tok.save(str(out / "tokenizer.json"))
    max_len = int(cast(int, getattr(st, "max_seq_length", None) or getattr(hf_tok, "model_max_length", 512)))
    pad_id = hf_tok.pad_token_id if hf_tok.pad_token_id is not None else 0
    return {"kind": "text", "max_seq_length": max_len,
            "models": {"text": {"file": "text.onnx", "inputs": ["input_ids", "attention_mask"]}},
            "tokenizer": {"file": "tokenizer.json", "style": "padded", "max_length": max_len,
                          "pad_id": int(pad_id), "pad_token": str(hf_tok.pad_token or ""),
                          "strip": True}}


# ---------------------------------------------------------------------------------------------------------------
# images (timm, CLIP): preprocessing recorded as data

_INTERP = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest", "lanczos": "lanczos",
           "box": "box", "hamming": "hamming"}


def transform_steps(transform: Any) -> list[dict]:
    """A torchvision ``Compose`` (Resize, CenterCrop, RGB conversion, ToTensor, Normalize) → JSON steps that
    ``fewshot.encoders.onnx.preprocess_image`` replays with PIL + numpy. Raises for steps it cannot replay."""
    from torchvision import transforms as T

    steps: list[dict] = []
    for t in getattr(transform, "transforms", [transform]):
        if isinstance(t, T.Resize):
            if t.max_size is not None:
                raise EncoderUnavailableError(f"cannot record {t!r} (max_size) for ONNX preprocessing")
            interp = _INTERP.get(getattr(t.interpolation, "value", str(t.interpolation)))
            if interp is None:
                raise EncoderUnavailableError(f"cannot record interpolation {t.interpolation} of {t!r}")
            size = t.size if isinstance(t.size, int) else list(t.size)
            if isinstance(size, list) and len(size) == 1:
                size = size[0]
            steps.append({"op": "resize", "size": size, "interpolation": interp})
        elif isinstance(t, T.CenterCrop):
            steps.append({"op": "center_crop", "size": [int(s) for s in t.size]})
        elif isinstance(t, T.ToTensor) or type(t).__name__ == "MaybeToTensor":
            steps.append({"op": "to_float"})
        elif isinstance(t, T.Normalize):
            steps.append({"op": "normalize", "mean": [float(m) for m in t.mean], "std": [float(s) for s in t.std]})
        elif (callable(t) and getattr(t, "__name__", "") in ("_convert_to_rgb", "convert_to_rgb")) or (
                type(t).__name__ == "MaybeConvertMode" and getattr(t, "mode", "RGB") == "RGB"):
            continue  # inputs are converted to RGB on load
        else:
            raise EncoderUnavailableError(f"cannot record preprocessing step {t!r} for the torch-free ONNX path")
    if not steps or steps[-1]["op"] not in ("normalize", "to_float") or "to_float" not in [s["op"] for s in steps]:
        raise EncoderUnavailableError(f"preprocessing {transform!r} does not end in ToTensor/Normalize")
    return steps


def _input_size(steps: list[dict]) -> list[int]:
    for step in reversed(steps):
        if step["op"] == "center_crop":
            return list(step["size"])
        if step["op"] == "resize" and isinstance(step["size"], list):
            return list(step["size"])
    raise EncoderUnavailableError("preprocessing has no fixed output size (no CenterCrop or (h, w) Resize)")


def _export_image_graph(model: Any, method: str, out: Path, name: str, hw: list[int], quantize: str | None,
                        opset: int, tick: Tick) -> None:
    import torch

    class ImageGraph(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m  # a registered submodule, so its weights are exported as initialisers

        def forward(self, pixel_values):
            return _normalise(getattr(self.m, method)(pixel_values))

    graph = ImageGraph(model).eval()
    args = (torch.zeros(2, 3, int(hw[0]), int(hw[1])),)
    axes = {"pixel_values": {0: "batch"}, "embedding": {0: "batch"}}
    _torch_export(graph, args, out / name, ["pixel_values"], axes, opset, tick)
    _finish_graph(out / name, quantize, tick)


def _export_timm(encoder: Any, out: Path, quantize: str | None, opset: int, tick: Tick) -> dict:
    steps = transform_steps(encoder.transform)
    hw = _input_size(steps)
    model = _cpu_copy(encoder.model)
    tick("model ready")
    _export_image_graph(model, "forward", out, "image.onnx", hw, quantize, opset, tick)
    return {"kind": "image", "preprocessing": {"steps": steps, "config": _jsonable(encoder.preprocess_config)},
            "models": {"image": {"file": "image.onnx", "inputs": ["pixel_values"]}}}


# ---------------------------------------------------------------------------------------------------------------
# CLIP (open_clip): two towers, CLIP BPE tokenizer rebuilt as a `tokenizers` tokenizer

def clip_bpe_tokenizer(simple_tokenizer: Any):
    """open_clip's ``SimpleTokenizer`` as an equivalent ``tokenizers.Tokenizer`` (same ids for ordinary text;
    open_clip additionally runs ftfy/html-unescape, which only changes mis-encoded input)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    vocab = dict(simple_tokenizer.encoder)
    merges = [pair for pair, _ in sorted(simple_tokenizer.bpe_ranks.items(), key=lambda kv: kv[1])]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, continuing_subword_prefix="",
                               end_of_word_suffix="</w>", fuse_unk=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Strip(), normalizers.Lowercase()])
    pattern = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    return tok


def _export_clip(encoder: Any, out: Path, quantize: str | None, opset: int, tick: Tick) -> dict:
    import torch
    from open_clip.tokenizer import SimpleTokenizer

    simple = encoder.tokenizer
    if not isinstance(simple, SimpleTokenizer) or getattr(simple, "reduction_fn", None) is not None:
        raise EncoderUnavailableError(f"cannot export the tokenizer of {encoder.name!r} "
                                      f"({type(simple).__name__}); only open_clip's SimpleTokenizer (CLIP BPE, "
                                      "truncation) is supported")
    clean = getattr(getattr(simple, "clean_fn", None), "__name__", "")
    if clean and "lower" not in clean and "canonicalize" not in clean and "whitespace" not in clean:
        raise EncoderUnavailableError(f"unsupported open_clip text cleaning {clean!r} for ONNX export")
    model = _cpu_copy(encoder.model)
    tick("model ready")
    steps = transform_steps(encoder.preprocess)
    hw = _input_size(steps)
    _export_image_graph(model, "encode_image", out, "image.onnx", hw, quantize, opset, tick)

    context = int(simple.context_length)

    class TextGraph(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids):
            return _normalise(self.m.encode_text(input_ids))

    ids = simple(["a photo of a cat", "fewshot"]).long()
    _torch_export(TextGraph(model).eval(), (ids,), out / "text.onnx", ["input_ids"],
                  {"input_ids": {0: "batch"}, "embedding": {0: "batch"}}, opset, tick)
    _finish_graph(out / "text.onnx", quantize, tick)
    clip_bpe_tokenizer(simple).save(str(out / "tokenizer.json"))
    return {"kind": "clip", "max_seq_length": context,
            "preprocessing": {"steps": steps},
            "models": {"text": {"file": "text.onnx", "inputs": ["input_ids"]},
                       "image": {"file": "image.onnx", "inputs": ["pixel_values"]}},
            "tokenizer": {"file": "tokenizer.json", "style": "clip", "max_length": context,
                          "sot_id": int(simple.sot_token_id), "eot_id": int(simple.eot_token_id),
                          "pad_id": 0, "strip": True}}


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))
