"""Untrusted files: no pickle on any load path, checksums before parsing, image bombs and truncated images."""
from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from fewshot import FewShotEngine
from fewshot.encoders.base import MAX_IMAGE_PIXELS, load_image_rgb
from fewshot.encoders.timm_image import load_state_dict_safely
from fewshot.errors import CorruptIndexError, EncoderUnavailableError, ImageReadError
from tests.fakes import FakeImageEncoder, FakeTextEncoder, unit

MARKER = Path("/tmp/fewshot-untrusted-pwned")


class Payload:
    """Unpickling this runs code (writes MARKER): what a malicious checkpoint does."""

    def __reduce__(self):
        return (Path.write_text, (MARKER, "pwned"))


def test_malicious_torch_checkpoint_is_refused(tmp_path):
    MARKER.unlink(missing_ok=True)
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": Payload()}, path)
    with pytest.raises(EncoderUnavailableError, match="weights_only"):
        load_state_dict_safely(str(path))
    assert not MARKER.exists(), "the pickled payload ran"
    # proof that the file really is malicious: an unsafe load would execute it
    torch.load(path, weights_only=False)
    assert MARKER.read_text() == "pwned"
    MARKER.unlink()
    # and a plain-tensor checkpoint still loads
    torch.save({"w": torch.ones(3)}, tmp_path / "ok.pth")
    assert torch.equal(load_state_dict_safely(str(tmp_path / "ok.pth"))["w"], torch.ones(3))


def test_timm_encoder_name_with_malicious_checkpoint_is_refused(tmp_path):
    from fewshot.encoders import load_encoder
    MARKER.unlink(missing_ok=True)
    torch.save({"x": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(EncoderUnavailableError):
        load_encoder(f"timm:resnet18@{tmp_path / 'evil.pth'}", cache=False)
    assert not MARKER.exists()


def saved(tmp_path: Path, name: str = "eng") -> Path:
    eng = FewShotEngine(FakeTextEncoder())
    eng.add_class("a", examples=["one", "two"])
    eng.add_class("b", vectors=unit(np.random.default_rng(0), 2))
    eng.save(tmp_path / name)
    return tmp_path / name


def resign(snap: Path) -> None:
    import hashlib
    manifest = json.loads((snap / "MANIFEST.json").read_text())
    for rel in manifest["files"]:
        b = (snap / rel).read_bytes()
        manifest["files"][rel] = {"sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b)}
    (snap / "MANIFEST.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("rel", ["classifier.npz", "index/arrays.npz"])
def test_npz_with_object_arrays_is_refused_even_with_a_valid_manifest(tmp_path, rel):
    MARKER.unlink(missing_ok=True)
    root = saved(tmp_path)
    snap = root / (root / "CURRENT").read_text().strip()
    buf = io.BytesIO()
    np.savez(buf, prompt_vectors=np.array([Payload()], dtype=object), vector_sums=np.array([Payload()], object),
             state=np.array([Payload()], dtype=object))
    (snap / rel).write_bytes(buf.getvalue())
    with pytest.raises(CorruptIndexError, match="checksum"):  # tampered: caught before parsing
        FewShotEngine.load(root, encoder=FakeTextEncoder())
    resign(snap)  # a crafted save: checksums match, so the parser itself must refuse the pickle
    with pytest.raises(CorruptIndexError):
        FewShotEngine.load(root, encoder=FakeTextEncoder())
    assert not MARKER.exists()


def test_files_swapped_between_saves_fail_checksum(tmp_path):
    r1, r2 = saved(tmp_path, "one"), saved(tmp_path, "two")
    eng = FewShotEngine.load(r2, encoder=FakeTextEncoder())
    eng.add_class("c", examples=["three"])
    eng.save(r2)
    s1 = r1 / (r1 / "CURRENT").read_text().strip()
    s2 = r2 / (r2 / "CURRENT").read_text().strip()
    for rel in ("index/classes.json", "index/index.faiss", "engine.json"):
        a, b = (s1 / rel).read_bytes(), (s2 / rel).read_bytes()
        assert a != b
        (s1 / rel).write_bytes(b)
        with pytest.raises(CorruptIndexError, match="checksum"):
            FewShotEngine.load(r1, encoder=FakeTextEncoder())
        (s1 / rel).write_bytes(a)
    FewShotEngine.load(r1, encoder=FakeTextEncoder())  # restored: loads again
    # a manifest pointing outside its snapshot is refused too
    manifest = json.loads((s1 / "MANIFEST.json").read_text())
    manifest["files"]["../../outside"] = {"sha256": "0" * 64, "bytes": 0}
    (s1 / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptIndexError):
        FewShotEngine.load(r1, encoder=FakeTextEncoder())


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width×height pixels (a decompression bomb needs no real data)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def good_png(tmp_path: Path) -> Path:
    from PIL import Image
    path = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    return path


def test_decompression_bomb_and_truncated_images(tmp_path):
    from PIL import Image
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_claiming(30_000, 30_000))           # 900 Mpx > 2 × MAX_IMAGE_PIXELS
    assert 30_000 * 30_000 > 2 * MAX_IMAGE_PIXELS
    real_bomb = tmp_path / "real_bomb.png"                           # a real, highly compressed one
    Image.new("1", (12_000, 12_000)).save(real_bomb)
    assert real_bomb.stat().st_size < 100_000
    good = good_png(tmp_path)
    truncated_png = tmp_path / "trunc.png"
    truncated_png.write_bytes(good.read_bytes()[:200])
    jpg = tmp_path / "good.jpg"
    Image.open(good).save(jpg, quality=90)
    truncated_jpg = tmp_path / "trunc.jpg"
    truncated_jpg.write_bytes(jpg.read_bytes()[: len(jpg.read_bytes()) // 2])
    header_only = tmp_path / "header.png"
    header_only.write_bytes(good.read_bytes()[:33])
    for bad in (bomb, real_bomb, truncated_png, truncated_jpg, header_only):
        with pytest.raises(ImageReadError):
            load_image_rgb(bad)
    eng = FewShotEngine(FakeImageEncoder())
    eng.add_class("ok", examples=[str(good)])
    for bad in (bomb, truncated_png, truncated_jpg):
        with pytest.raises(ImageReadError):
            eng.add_class("bad", examples=[str(good), str(bad)])
        with pytest.raises(ImageReadError):
            eng.predict([bad])
    assert eng.classes == ["ok"] and eng.predict([good])[0].label == "ok"


def test_real_effnet_refuses_bomb_and_truncated(tmp_path, effnet):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_claiming(40_000, 40_000))
    trunc = tmp_path / "t.png"
    trunc.write_bytes(good_png(tmp_path).read_bytes()[:150])
    for bad in (bomb, trunc):
        with pytest.raises(ImageReadError):
            effnet.encode_images([str(bad)])


def test_no_pickle_on_the_load_path(tmp_path, monkeypatch):
    """Load a saved engine with pickle.load / pickle.loads / np.load(allow_pickle=True) booby-trapped."""
    import pickle
    root = saved(tmp_path)

    def trap(*a, **k):
        raise AssertionError("pickle used on the load path")
    monkeypatch.setattr(pickle, "load", trap)
    monkeypatch.setattr(pickle, "loads", trap)
    real_np_load = np.load

    def np_load(*a, **k):
        assert k.get("allow_pickle") is False, "np.load without allow_pickle=False"
        return real_np_load(*a, **k)
    monkeypatch.setattr(np, "load", np_load)
    FewShotEngine.load(root, encoder=FakeTextEncoder()).predict(["one"])
    shutil.rmtree(root)
