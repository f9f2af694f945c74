"""Tiny deterministic encoders for the hardening tests (fast; the real model is not the point there)."""
from __future__ import annotations

import hashlib

import numpy as np

from fewshot.encoders.base import Encoder, check_texts, l2_normalise, load_image_rgb

DIM = 16


class FakeTextEncoder(Encoder):
    """Text → a hash-seeded 16-d unit vector (same text, same vector; any str, lone surrogates included)."""

    name = "fake-text"
    dim = DIM
    modalities = frozenset({"text"})

    def encode_text(self, texts, batch_size=64, show_progress_bar=None):
        texts = check_texts(texts)
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode("utf-8", "surrogatepass")).digest()[:8], "little")
            rows.append(np.random.default_rng(seed).standard_normal(DIM))
        return l2_normalise(np.asarray(rows))


class FakeImageEncoder(Encoder):
    """Image → 16-d vector of mean colour features, through the library's own ``load_image_rgb``."""

    name = "fake-image"
    dim = DIM
    modalities = frozenset({"image"})

    def encode_images(self, images, batch_size=32, show_progress_bar=None):
        rows = []
        for im in images:
            a = np.asarray(load_image_rgb(im).resize((4, 4)), np.float32).reshape(-1, 3).mean(0)
            rows.append(np.concatenate([a, np.ones(DIM - 3)]))
        return l2_normalise(np.asarray(rows))


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def engine_state(eng, probe: np.ndarray) -> tuple:
    """Everything a failed call must leave unchanged."""
    protos = eng.index.prototypes().copy()
    cv, mask = eng.index.class_vectors()
    scores = eng.scores_from_vectors(probe) if eng.classes else None
    return (eng.classes, len(eng.index), protos.tobytes(), cv.tobytes(), mask.tobytes(),
            {k: list(v) for k, v in eng.raw_examples.items()},
            {n: eng.index.entry(n).description for n in eng.classes},
            None if scores is None else scores.tobytes())
