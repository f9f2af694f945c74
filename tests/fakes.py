"""Test doubles and array helpers shared by the test modules (tests import these, never each other).

Tiny deterministic encoders: fast, and the real model is not the point where they are used. ``conftest.py``
exposes them as fixtures too."""
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


TOPICS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]


class TopicTextEncoder(Encoder):
    """Text → class direction of the first topic word it contains, plus hash noise. 32-d, unit norm."""

    name = "fake-text"
    dim = 32
    modalities = frozenset({"text"})
    calls = 0

    def encode_text(self, texts, batch_size=64, show_progress_bar=None):
        TopicTextEncoder.calls += 1
        centres = np.random.default_rng(0).standard_normal((len(TOPICS), self.dim))
        out = []
        for t in texts:
            noise = np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)).standard_normal(self.dim)
            hit = [i for i, w in enumerate(TOPICS) if w in t]
            out.append((centres[hit[0]] if hit else 0) + 1.1 * noise)
        return l2_normalise(np.array(out))


class ColourImageEncoder(Encoder):
    """Image → (mean R, mean G, mean B, 1) plus a little pixel-hash noise, unit norm; no text."""

    name = "fake-image"
    dim = 4
    modalities = frozenset({"image"})

    def encode_images(self, images, batch_size=32, show_progress_bar=None):
        out = []
        for im in images:
            px = np.asarray(load_image_rgb(im), np.float32) / 255
            noise = np.random.default_rng(int(px.sum() * 1000)).standard_normal(4) * 0.05
            out.append(np.r_[px.mean((0, 1)), 1.0] + noise)
        return l2_normalise(np.array(out))


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of (n, d) scaled to unit norm, float32."""
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(rng, C=6, shots=5, d=16, noise=0.6, text_noise=0.8):
    """C Gaussian classes on the sphere: (support vectors (C·shots, d), labels, text vectors (C, d), queries
    (10·C, d), query labels)."""
    centres = unit_rows(rng.normal(size=(C, d)))
    labels = np.repeat(np.arange(C), shots)
    vectors = unit_rows(centres[labels] + noise * rng.normal(size=(len(labels), d)) / np.sqrt(d))
    text = unit_rows(centres + text_noise * rng.normal(size=(C, d)) / np.sqrt(d))
    queries_y = np.repeat(np.arange(C), 10)
    queries = unit_rows(centres[queries_y] + noise * rng.normal(size=(len(queries_y), d)) / np.sqrt(d))
    return vectors, labels, text, queries, queries_y
