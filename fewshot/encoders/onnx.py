"""'onnx:<dir>': an encoder exported by ``fewshot export``, run with onnxruntime + tokenizers + numpy/PIL.

This module never imports torch, transformers, sentence-transformers, open_clip or timm: a process that only
serves predictions does not need them installed (the ``[onnx]`` extra).

Threads: ``threads`` argument, else $FEWSHOT_ONNX_THREADS, else the number of CPUs this process may use (at
most 8). Inter-op parallelism is off (one graph at a time); onnxruntime's full graph optimisation is on.

Runs: sentence encoders feed onnxruntime runs of at most ``batch_size`` texts and at most ``run_tokens`` padded
tokens (texts sorted by length; a longer text runs alone): small runs keep each layer's activations in the CPU
caches (MiniLM, 2,000 Banking77 texts, batch_size 64, one thread, a 2-CPU AVX2 machine: +25-50 % texts/s for
fp32 and int8 alike; 128 to 512 tokens per run measured within a few per cent of each other). An int8 export
written before ``quantize_scheme`` existed (onnxruntime dynamic quantisation: activation scales per run) is run
one input at a time, so that its results do not depend on the other inputs either.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from fewshot._core import l2_normalise, sha256_file
from fewshot._progress import progress
from fewshot.encoders.base import Encoder, check_input_list, check_texts, load_image_rgb
from fewshot.errors import CorruptIndexError, EncoderUnavailableError, InvalidInputError

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "fewshot-onnx"
#: the version ``fewshot export`` writes, and those this runtime reads
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
_TOKENIZE_CHUNK = 4096  # texts tokenised per tokenizers call in encode_text
#: default ``run_tokens``: padded tokens per onnxruntime run of a text graph, times the intra-op threads
RUN_TOKENS_PER_THREAD = 256
#: ``quantize_scheme`` that ``fewshot export --quantize int8`` writes (``fewshot.export.int8``): per-row scales
ROWWISE_INT8_SCHEME = "rowwise-int8-v1"
#: ``quantize_scheme`` of int8 exports whose manifest names none (onnxruntime quantize_dynamic, per-run scales)
LEGACY_INT8_SCHEME = "dynamic-per-batch"
#: schemes whose graphs compute each input row from that row alone, so any batching gives the same result
BATCH_INDEPENDENT_SCHEMES = frozenset({ROWWISE_INT8_SCHEME})


def default_threads() -> int:
    """$FEWSHOT_ONNX_THREADS, else the CPUs available to this process (capped at 8)."""
    env = os.environ.get("FEWSHOT_ONNX_THREADS")
    if env:
        try:
            value = int(env)
        except ValueError:
            raise InvalidInputError(f"FEWSHOT_ONNX_THREADS must be a positive integer, got {env!r}") from None
        if value < 1:
            raise InvalidInputError(f"FEWSHOT_ONNX_THREADS must be a positive integer, got {env!r}")
        return value
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def read_manifest(path: str | os.PathLike, verify: bool = True) -> dict:
    """Read and check an export folder's manifest (and, when ``verify``, every file's sha256)."""
    root = Path(path)
    if not root.exists():
        raise EncoderUnavailableError(f"no ONNX export at {root}: the folder does not exist; create one with "
                                      f"`fewshot export --encoder NAME --out {root}`")
    if not root.is_dir():
        raise EncoderUnavailableError(f"ONNX export path {root} is not a folder; pass the folder written by "
                                      "`fewshot export`")
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise CorruptIndexError(f"{root} has no {MANIFEST_NAME}, so it is not (or no longer) a complete fewshot "
                                "ONNX export; export it again with `fewshot export`")
    try:
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as exc:
        raise CorruptIndexError(f"cannot parse {manifest_path}: {exc}; export the encoder again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise CorruptIndexError(f"{manifest_path} is not a fewshot ONNX manifest (format "
                                f"{manifest.get('format') if isinstance(manifest, dict) else None!r})")
    if manifest.get("format_version") not in SUPPORTED_FORMAT_VERSIONS:
        from fewshot.errors import VersionMismatchError
        raise VersionMismatchError(f"{manifest_path} has format_version {manifest.get('format_version')!r}; "
                                   f"this fewshot reads {SUPPORTED_FORMAT_VERSIONS}; export the encoder again "
                                   "or upgrade fewshot")
    for key in ("kind", "dim", "modalities", "models", "files"):
        if key not in manifest:
            raise CorruptIndexError(f"{manifest_path} lacks the key {key!r}; export the encoder again")
    files = manifest["files"]
    needed = [m["file"] for m in manifest["models"].values()]
    if "tokenizer" in manifest:
        needed.append(manifest["tokenizer"]["file"])
    for name in needed:
        if name not in files:
            raise CorruptIndexError(f"{manifest_path} lists no checksum for {name}; export the encoder again")
    for name, digest in files.items():
        file = root / name
        if os.sep in name or "/" in name or name.startswith("."):
            raise CorruptIndexError(f"{manifest_path} names an unexpected file {name!r}")
        if not file.is_file():
            raise CorruptIndexError(f"ONNX export {root} is missing {name}; export the encoder again")
        if verify and sha256_file(file) != digest:
            raise CorruptIndexError(f"{file} does not match the sha256 in {MANIFEST_NAME} (corrupted or modified); "
                                    "export the encoder again")
    return manifest


# ---------------------------------------------------------------------------------------------------------------
# image preprocessing with PIL + numpy (replays the steps recorded from the torchvision transform)

def _pil_filter(name: str):
    from PIL import Image
    # Pillow sets these module constants with setattr at import, so its type hints don't show them
    return {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST,  # type: ignore[attr-defined]
            "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING}[name]  # type: ignore[attr-defined]


def preprocess_image(image: Any, steps: Sequence[dict]) -> np.ndarray:
    """An RGB PIL image (or path) → float32 (3, H, W), as torchvision's Resize/CenterCrop/ToTensor/Normalize."""
    from PIL import Image

    im = load_image_rgb(image)
    arr: np.ndarray | None = None
    for step in steps:
        op = step["op"]
        if op == "resize":
            size = step["size"]
            w, h = im.size
            if isinstance(size, int):  # shorter side to `size`, as torchvision (long side truncated)
                if w <= h:
                    new_w, new_h = size, int(size * h / w)
                else:
                    new_w, new_h = int(size * w / h), size
            else:
                new_h, new_w = int(size[0]), int(size[1])
            if (new_w, new_h) != (w, h):
                im = im.resize((new_w, new_h), _pil_filter(step["interpolation"]))
        elif op == "center_crop":
            th, tw = int(step["size"][0]), int(step["size"][1])
            w, h = im.size
            if tw > w or th > h:  # torchvision pads with zeros first
                padded = Image.new("RGB", (max(w, tw), max(h, th)), (0, 0, 0))
                padded.paste(im, ((max(w, tw) - w) // 2, (max(h, th) - h) // 2))
                im = padded
                w, h = im.size
            top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
            im = im.crop((left, top, left + tw, top + th))
        elif op == "to_float":
            arr = np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)
        elif op == "normalize":
            if arr is None:
                raise CorruptIndexError("preprocessing normalises before converting to float")
            mean = np.asarray(step["mean"], np.float32)[:, None, None]
            std = np.asarray(step["std"], np.float32)[:, None, None]
            arr = (arr - mean) / std
        else:
            raise CorruptIndexError(f"unknown preprocessing step {op!r} in the ONNX manifest")
    if arr is None:
        raise CorruptIndexError("preprocessing never converts the image to an array")
    return np.ascontiguousarray(arr, dtype=np.float32)


# ---------------------------------------------------------------------------------------------------------------

class ONNXEncoder(Encoder):
    """An exported encoder on onnxruntime. Outputs float32, L2-normalised (normalisation is in the graph and
    repeated here in float32)."""

    def __init__(self, path: str | os.PathLike, device: str | None = None, threads: int | None = None,
                 verify: bool = True, name: str | None = None, run_tokens: int | None = None):
        """``run_tokens``: padded tokens per onnxruntime run of the text graph (default
        ``RUN_TOKENS_PER_THREAD`` × threads; 0 = whole batches)."""
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            import onnxruntime as ort
        except ImportError:
            raise EncoderUnavailableError("the onnx: encoder needs onnxruntime (pip install 'fewshot[onnx]')") \
                from None
        self.path = Path(path)
        self.name = name or f"onnx:{path}"
        self.manifest = read_manifest(self.path, verify=verify)
        self.source = str(self.path)  # the embedding cache fingerprints the files here
        self.dim = int(self.manifest["dim"])
        self.modalities = frozenset(self.manifest["modalities"])
        self.kind = self.manifest["kind"]
        self.quantize = self.manifest.get("quantize")
        self.quantize_scheme = self.manifest.get("quantize_scheme") or (LEGACY_INT8_SCHEME if self.quantize else None)
        #: inputs per run at most: 1 where the graph's results would depend on the other inputs of a run
        self.max_run_inputs = 1 if self.quantize and self.quantize_scheme not in BATCH_INDEPENDENT_SCHEMES else None
        self.threads = int(threads) if threads is not None else default_threads()
        if self.threads < 1:
            raise InvalidInputError(f"threads must be >= 1, got {threads}")
        if run_tokens is None:
            run_tokens = RUN_TOKENS_PER_THREAD * self.threads
        if not isinstance(run_tokens, (int, np.integer)) or run_tokens < 0:
            raise InvalidInputError(f"run_tokens must be a non-negative integer, got {run_tokens!r}")
        self.run_tokens = int(run_tokens)
        self.device = device or "cpu"
        providers = self._providers(ort, self.device)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if self.quantize_scheme == ROWWISE_INT8_SCHEME:
            # fold the DequantizeLinear of constant int8 weights (Conv) into float weights at load: without this
            # onnxruntime keeps them as nodes, dequantises every run and skips its NCHWc conv kernels (2x slower)
            options.add_session_config_entry("session.disable_quant_qdq", "1")
        self.sessions: dict[str, Any] = {}
        for tower, spec in self.manifest["models"].items():
            try:
                self.sessions[tower] = ort.InferenceSession(str(self.path / spec["file"]), options,
                                                            providers=providers)
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph types
                raise CorruptIndexError(f"onnxruntime cannot load {self.path / spec['file']}: {exc}") from exc
        self.tokenizer = None
        if "tokenizer" in self.manifest:
            from tokenizers import Tokenizer

            spec = self.manifest["tokenizer"]
            try:
                self.tokenizer = Tokenizer.from_file(str(self.path / spec["file"]))
            except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exception
                raise CorruptIndexError(f"cannot load tokenizer {self.path / spec['file']}: {exc}") from exc
            self.tokenizer.no_padding()
            self.tokenizer.no_truncation()
            if spec.get("style", "padded") == "padded":  # padding is done here, per batch (see _pad)
                self.tokenizer.enable_truncation(max_length=int(spec["max_length"]))
        self._steps = (self.manifest.get("preprocessing") or {}).get("steps")

    @staticmethod
    def _providers(ort: Any, device: str) -> list[str]:
        available = ort.get_available_providers()
        if device == "cpu":
            return ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in available:
                raise EncoderUnavailableError(f"device {device!r} needs onnxruntime-gpu (CUDAExecutionProvider); "
                                              f"available providers: {available}; use device='cpu'")
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        raise InvalidInputError(f"device must be 'cpu' or 'cuda', got {device!r}")

    # -- text -------------------------------------------------------------------------------------------------
    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text (truncated to the export's max length for sentence encoders; not padded)."""
        if self.manifest["tokenizer"].get("strip", True):
            texts = [t.strip() for t in texts]
        assert self.tokenizer is not None   # loaded whenever the manifest has a tokenizer (read just above)
        return [enc.ids for enc in self.tokenizer.encode_batch(texts)]

    def _pad(self, ids: list[list[int]]) -> dict[str, np.ndarray]:
        """Right-pad one batch of token ids to its longest member: the graph's feeds."""
        spec = self.manifest["tokenizer"]
        if spec.get("style", "padded") == "clip":
            context, sot, eot = int(spec["max_length"]), int(spec["sot_id"]), int(spec["eot_id"])
            out = np.full((len(ids), context), int(spec.get("pad_id", 0)), np.int64)
            for i, row in enumerate(ids):
                tokens = [sot] + list(row) + [eot]
                if len(tokens) > context:
                    tokens = tokens[:context]
                    tokens[-1] = eot
                out[i, :len(tokens)] = tokens
            return {"input_ids": out}
        width = max((len(row) for row in ids), default=0)
        out = np.full((len(ids), width), int(spec.get("pad_id", 0)), np.int64)
        mask = np.zeros((len(ids), width), np.int64)
        for i, row in enumerate(ids):
            out[i, :len(row)] = row
            mask[i, :len(row)] = 1
        return {"input_ids": out, "attention_mask": mask}

    def _tokenize(self, texts: list[str]) -> dict[str, np.ndarray]:
        """The graph's feeds for one batch of texts."""
        return self._pad(self._token_ids(texts))

    def encode_text(self, texts: Sequence[str], batch_size: int = 64,
                    show_progress_bar: bool | None = None) -> np.ndarray:
        """Embed texts → float32 (n, dim), output in input order. Sentence encoders: texts are tokenised once,
        sorted by token count and batched in that order, so each batch is padded only to its own longest text
        (CLIP's text tower takes a fixed context, so its batches are simply taken in order)."""
        if "text" not in self.sessions:
            return super().encode_text(texts, batch_size, show_progress_bar)
        texts = check_texts(texts)
        batch_size = _check_batch_size(batch_size)
        out = np.empty((len(texts), self.dim), np.float32)
        session = self.sessions["text"]
        ids: list[list[int]] = []
        for start in range(0, len(texts), _TOKENIZE_CHUNK):
            ids.extend(self._token_ids(texts[start:start + _TOKENIZE_CHUNK]))
        spec = self.manifest["tokenizer"]
        if spec.get("style", "padded") == "clip":
            order = np.arange(len(texts))
            widths = np.full(len(texts), int(spec["max_length"]))
        else:
            order = np.argsort([-len(row) for row in ids], kind="stable")
            widths = np.asarray([len(ids[i]) for i in order])
        with progress(total=len(texts), desc="encode (onnx)", unit="texts", show=show_progress_bar,
                      leave=False) as bar:
            for start, stop in self._runs(widths, batch_size):
                idx = order[start:stop]
                out[idx] = session.run(None, self._pad([ids[i] for i in idx]))[0]
                bar.update(stop - start)
        return l2_normalise(out)

    def _runs(self, widths: np.ndarray, batch_size: int) -> list[tuple[int, int]]:
        """[start, stop) of each onnxruntime run over inputs of token ``widths`` (n,), in run order (longest
        first): at most ``batch_size`` inputs and ``run_tokens`` padded tokens each (a wider input runs alone)."""
        limit = min(batch_size, self.max_run_inputs or batch_size)
        runs, start, n = [], 0, len(widths)
        while start < n:
            size = limit
            if self.run_tokens:
                size = max(1, min(limit, self.run_tokens // max(1, int(widths[start]))))
            runs.append((start, min(n, start + size)))
            start += size
        return runs

    # -- images -----------------------------------------------------------------------------------------------
    def encode_images(self, images: Sequence[Any], batch_size: int = 32,
                      show_progress_bar: bool | None = None) -> np.ndarray:
        """Embed images (paths or PIL images) → float32 (n, dim)."""
        if "image" not in self.sessions:
            return super().encode_images(images, batch_size, show_progress_bar)
        images = check_input_list(images)
        batch_size = _check_batch_size(batch_size)
        session = self.sessions["image"]
        batch_size = min(batch_size, self.max_run_inputs or batch_size)
        out = []
        for start in progress(range(0, len(images), batch_size), desc="encode (onnx, batches)",
                              show=show_progress_bar, leave=False):
            pixels = np.stack([preprocess_image(im, cast("Sequence[dict]", self._steps))
                               for im in images[start:start + batch_size]])
            out.append(session.run(None, {"pixel_values": pixels})[0])
        return l2_normalise(np.concatenate(out))

    def encode(self, inputs: Sequence[Any], **kwargs: Any) -> np.ndarray:
        inputs = check_input_list(inputs)
        if self.modalities == {"text", "image"}:  # CLIP: strings that are files are images
            kinds = {isinstance(x, str) and not os.path.isfile(x) for x in inputs}
            if len(kinds) > 1:
                raise InvalidInputError("mixed texts and images in one call; encode them separately")
            return self.encode_text(inputs, **kwargs) if kinds == {True} else self.encode_images(inputs, **kwargs)
        return super().encode(inputs, **kwargs)

    @property
    def zero_shot_templates(self) -> list[str]:
        templates = self.manifest.get("zero_shot_templates")
        return list(templates) if templates else super().zero_shot_templates

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "source_encoder": self.manifest.get("source_encoder"),
                "quantize": self.quantize, "quantize_scheme": self.quantize_scheme, "kind": self.kind}


def _check_batch_size(batch_size: int) -> int:
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def load_onnx(path: str, device: str | None = None, threads: int | None = None) -> ONNXEncoder:
    """Registry loader for 'onnx:<dir>'."""
    return ONNXEncoder(path, device=device, threads=threads)
