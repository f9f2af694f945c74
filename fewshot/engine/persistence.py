"""The engine's save format, in one place: what ``save`` writes into a snapshot and how ``load`` reads it back,
including every older layout this release still reads.

Snapshot layout (inside the crash-safe ``fewshot.index.storage`` snapshot, every file checksummed)::

    engine.json        EngineManifest (below)
    index/             SupportIndex.save
    classifier.npz     the classifier's learned arrays (allow_pickle=False)
    adaptation.npz     the unlabeled vectors of an adaptation (when there is one)
    encoder/           the encoder, when it belongs to the engine (fine-tuned, adapted, or an ONNX export)
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fewshot._core import check_vectors, sha256_file
from fewshot.encoders.base import Encoder
from fewshot.encoders.registry import LOCAL_DIR_PREFIXES, load_prebuilt, split_name
from fewshot.errors import CorruptIndexError, FewShotError, InvalidInputError, NotFittedError
from fewshot.index import SupportIndex, storage
from fewshot.openset import OpenSetDetector

if TYPE_CHECKING:
    from fewshot.engine.engine import FewShotEngine

ENGINE_FORMAT_VERSION = 1
SNAPSHOT_KIND = "fewshot-engine"
#: the open-set config of saves from before it was recorded: they rejected by the plain top score
LEGACY_OPENSET = {"score": "max-score"}


@dataclass
class EngineManifest:
    """``engine.json``. ``encoder`` is a registry name; a local-directory name (``st:``, ``onnx:``,
    ``timm-dir:``) relative to the snapshot means the encoder is stored in it."""

    encoder: str
    encoder_dim: int
    classifier: str
    classifier_config: dict
    templates: list
    keep_examples: bool = True
    raw_examples: dict = field(default_factory=dict)
    calibrate: bool = True
    openset: dict = field(default_factory=lambda: dict(LEGACY_OPENSET))
    adaptation: dict | None = None                     # {"method", "options"}; vectors in adaptation.npz
    encoder_seen_texts: list = field(default_factory=list)
    metadata: dict = field(default_factory=dict)       # the application's own JSON (e.g. a journal position)
    classifier_fitted: bool = True                     # False: the classifier could not fit the support at save
    format_version: int = ENGINE_FORMAT_VERSION

    def to_json(self) -> str:
        meta = asdict(self)
        meta["encoder_trained_texts"] = meta["encoder_seen_texts"]  # the key fewshot <= 0.1 reads
        problem = "it would not read back equal"
        try:
            text = json.dumps(meta, ensure_ascii=False, allow_nan=False)
            if json.loads(text)["metadata"] == self.metadata:
                return text
        except (TypeError, ValueError) as exc:
            problem = str(exc)
        raise InvalidInputError("engine.metadata must hold JSON values only (str, finite numbers, bool, None, lists, "
                                f"dicts with str keys): {problem}")

    @classmethod
    def from_json_object(cls, meta: dict, where: Path) -> EngineManifest:
        """Validate types and fill what older saves lack; CorruptIndexError for anything else."""
        required = {"encoder": str, "classifier": str, "classifier_config": dict, "templates": list,
                    "encoder_dim": int}
        if any(not isinstance(meta.get(k), t) or isinstance(meta.get(k), bool) for k, t in required.items()):
            raise CorruptIndexError(f"{where} lacks required fields or has wrong types")
        try:
            return cls(encoder=meta["encoder"], encoder_dim=meta["encoder_dim"], classifier=meta["classifier"],
                       classifier_config=meta["classifier_config"], templates=meta["templates"],
                       keep_examples=bool(meta.get("keep_examples", True)),
                       raw_examples={str(k): list(v) for k, v in (meta.get("raw_examples") or {}).items()},
                       calibrate=bool(meta.get("calibrate", True)),
                       openset={**LEGACY_OPENSET, **(meta.get("openset") or {})},
                       adaptation=_adaptation(meta.get("adaptation")),
                       encoder_seen_texts=[str(t) for t in meta.get("encoder_seen_texts",
                                                                    meta.get("encoder_trained_texts", []))],
                       metadata=dict(meta.get("metadata") or {}),
                       classifier_fitted=bool(meta.get("classifier_fitted", True)))
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise CorruptIndexError(f"{where} has malformed fields: {exc}") from None


def _adaptation(value: Any) -> dict | None:
    if not value:
        return None
    return {"method": str(value["method"]), "options": dict(value["options"])}


def resolve_encoder_name(name: str, snapshot: Path) -> tuple[str, bool]:
    """A saved encoder name → (loadable name, whether the encoder lives inside the snapshot). Local-directory
    names relative to the snapshot are made absolute."""
    prefix, rest = split_name(name)
    if prefix in LOCAL_DIR_PREFIXES and rest and not os.path.isabs(rest) and (snapshot / rest).exists():
        return f"{prefix}:{snapshot / rest}", True
    return name, False


def _saved_encoder(name: str, bundled: bool, device: str | None) -> str | Encoder:
    """The encoder an engine records: its name, or for an ONNX export inside the snapshot the encoder itself,
    built without hashing its files again (``storage.open_snapshot`` has just verified every one) and kept per
    process under its manifest's hash (a later load of the same export reuses it)."""
    prefix, rest = split_name(name)
    if not bundled or prefix != "onnx":
        return name
    from fewshot.encoders.onnx import MANIFEST_NAME, ONNXEncoder

    key = f"{name}#{sha256_file(Path(rest) / MANIFEST_NAME)}"
    return load_prebuilt(key, lambda: ONNXEncoder(rest, device=device, verify=False, name=name), device)


def write_encoder(encoder: Any, snapshot: Path, portable: bool, quantize: str | None) -> str:
    """Store the encoder in the snapshot when it belongs to the engine; returns the name to record."""
    if portable:
        from fewshot.export import export_encoder
        export_encoder(encoder, snapshot / "encoder", quantize=quantize)
        return "onnx:encoder"
    if getattr(encoder, "save_to", None) is not None and getattr(encoder, "bundle_with_engine", True):
        return encoder.save_to(snapshot / "encoder")  # a fine-tuned / adapted / loaded-from-a-save encoder
    return encoder.name


def write_arrays(snapshot: Path, classifier_state: dict, adaptation_vectors: np.ndarray | None) -> None:
    with open(snapshot / "classifier.npz", "wb") as f:
        np.savez(f, **classifier_state)
    if adaptation_vectors is not None:
        with open(snapshot / "adaptation.npz", "wb") as f:
            np.savez(f, unlabeled=adaptation_vectors)


def read_manifest(snapshot: Path) -> tuple[Path, EngineManifest]:
    """Parse the manifest of an opened snapshot (``storage.open_snapshot``: checksums verified)."""
    meta = storage.read_json_object(snapshot / "engine.json", ENGINE_FORMAT_VERSION)
    return snapshot, EngineManifest.from_json_object(meta, snapshot / "engine.json")


def read_arrays(snapshot: Path, manifest: EngineManifest, dim: int) -> tuple[dict, np.ndarray | None]:
    """(classifier state arrays, (u, dim) adaptation vectors or None); never unpickles."""
    try:
        with np.load(snapshot / "classifier.npz", allow_pickle=False) as arrays:
            state = {k: arrays[k] for k in arrays.files}  # object (pickled) arrays raise ValueError here
        vectors = None
        if manifest.adaptation:
            with np.load(snapshot / "adaptation.npz", allow_pickle=False) as arrays:
                vectors = check_vectors(arrays["unlabeled"], dim, "unlabeled")
    except (OSError, ValueError, TypeError, AttributeError, KeyError) as exc:
        raise CorruptIndexError(f"cannot read the saved classifier state in {snapshot}: {exc}") from None
    return state, vectors


def classifier_state(engine: FewShotEngine) -> tuple[dict, bool]:
    """(the fitted classifier's state arrays, whether it could be fitted). A support the classifier cannot fit
    (e.g. ``logreg`` over description-only classes) is saved all the same, without state: the loaded engine then
    raises the same ``NotFittedError`` at prediction as this one."""
    if not engine.index.n_classes:
        return {}, True
    try:
        return engine._fitted().state(), True
    except NotFittedError:
        return {}, False


def write_snapshot(engine: FewShotEngine, snapshot: Path, portable: bool, quantize: str | None) -> None:
    """Write everything of ``engine`` into the new ``snapshot`` folder (called with the engine lock held)."""
    if quantize is not None and not portable:
        raise InvalidInputError(f"quantize={quantize!r} applies to the ONNX export of a portable save; pass "
                                "portable=True as well (a plain save keeps the encoder as it is)")
    encoder_name = write_encoder(engine.encoder, snapshot, portable, quantize)
    (snapshot / "index").mkdir()
    engine.index.save(snapshot / "index")
    state, fitted = classifier_state(engine)
    spec = engine.adapt_spec
    write_arrays(snapshot, state, spec[0] if spec is not None else None)
    manifest = EngineManifest(
        encoder=encoder_name, encoder_dim=engine.encoder.dim, classifier=engine.classifier_name,
        classifier_config=engine.classifier_config, templates=engine.templates, keep_examples=engine.keep_examples,
        raw_examples=engine.raw_examples, calibrate=engine.calibrate,
        # resolved, so that a later change of defaults does not change a saved engine
        openset=OpenSetDetector(**engine.openset_config).config(),
        adaptation={"method": spec[1], "options": spec[2]} if spec is not None else None,
        encoder_seen_texts=sorted(engine.encoder_seen_texts), metadata=engine.metadata, classifier_fitted=fitted)
    (snapshot / "engine.json").write_text(manifest.to_json(), encoding="utf-8")


def load_engine(cls: type[FewShotEngine], directory: str | os.PathLike, device: str | None = None,
                encoder: str | Encoder | None = None) -> FewShotEngine:
    """``FewShotEngine.load``: rebuild an engine from its live snapshot; ``encoder`` overrides the saved one. Saves
    that replace the snapshot while it is read make it start again on the new one (``storage.read_snapshot``)."""
    return storage.read_snapshot(directory, SNAPSHOT_KIND,
                                 lambda snapshot: _load_snapshot(cls, snapshot, device, encoder))


def _load_snapshot(cls: type[FewShotEngine], snapshot: Path, device: str | None,
                   encoder: str | Encoder | None) -> FewShotEngine:
    snapshot, meta = read_manifest(snapshot)
    name, bundled = resolve_encoder_name(meta.encoder, snapshot)
    try:
        engine = cls(encoder if encoder is not None else _saved_encoder(name, bundled, device),
                     classifier=meta.classifier,
                     classifier_config=meta.classifier_config, device=device, templates=meta.templates,
                     keep_examples=meta.keep_examples, calibrate=meta.calibrate, openset=meta.openset)
    except FewShotError:
        raise
    except (TypeError, ValueError) as exc:  # e.g. an unknown classifier or bad config in engine.json
        raise CorruptIndexError(f"{snapshot / 'engine.json'} describes an engine this fewshot cannot "
                                f"build: {exc}") from None
    if engine.encoder.dim != meta.encoder_dim:
        raise CorruptIndexError(f"encoder {engine.encoder.name!r} has dimension {engine.encoder.dim}, the "
                                f"saved engine expects {meta.encoder_dim}")
    if bundled and encoder is None:
        engine.encoder.bundle_with_engine = True  # a re-save copies it into the new snapshot
    engine.index = SupportIndex.load(snapshot / "index")
    engine.raw_examples, engine.metadata = meta.raw_examples, meta.metadata
    if encoder is None or engine.encoder.name == meta.encoder:  # another encoder never saw these texts
        engine.encoder_seen_texts = frozenset(meta.encoder_seen_texts)
    state, unlabeled = read_arrays(snapshot, meta, engine.encoder.dim)
    if unlabeled is not None and meta.adaptation is not None:
        engine.adapt_spec = (unlabeled, meta.adaptation["method"], meta.adaptation["options"])
    if engine.index.n_classes and meta.classifier_fitted:
        engine.classifier.restore(engine._support_view(), state)
        engine._dirty = False
    return engine
