"""Bad-input matrix (hypothesis) over the engine API, saved directories and the CLI.

Every call either succeeds or raises a ``FewShotError``; a failed call leaves the engine (and any saved directory)
exactly as it was. Most cases use a tiny deterministic fake encoder; a few use the real ``minilm``.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fewshot import FewShotEngine
from fewshot.cli import main as cli_main
from fewshot.errors import CorruptIndexError, FewShotError, InvalidInputError
from tests.fakes import DIM, FakeImageEncoder, FakeTextEncoder, engine_state, unit

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
                derandomize=True)
PROBE = unit(np.random.default_rng(99), 3)


def fresh_engine(index_type: str = "flat") -> FewShotEngine:
    eng = FewShotEngine(FakeTextEncoder(), index_type=index_type)
    rng = np.random.default_rng(0)
    eng.add_class("a", examples=["alpha one", "alpha two"], description="the letter a")
    eng.add_class("b", vectors=unit(rng, 3))
    return eng


surrogates = st.sampled_from(["\ud800", "x\udfffy", "\udbff\udc00"])
texts = st.one_of(st.text(max_size=40), st.text(st.characters(categories=["Zs", "Cc", "Cf", "Mn", "So"]),
                                                 max_size=20), surrogates, st.just(""), st.just("x" * 20_000))
names = st.one_of(st.sampled_from(["a", "b", "c", "", "  "]), st.text(max_size=12), st.integers(), st.none(),
                  st.lists(st.text(max_size=2), max_size=2), st.just(b"a"))
examples = st.one_of(st.none(), st.just([]), st.lists(texts, min_size=1, max_size=3), texts, st.integers(),
                     st.lists(st.one_of(st.integers(), st.none(), st.binary(max_size=4)), min_size=1, max_size=3),
                     st.lists(st.one_of(texts, st.integers()), min_size=2, max_size=3))
descriptions = st.one_of(st.none(), texts, st.integers(), st.just("   "))


@st.composite
def vector_inputs(draw):
    kind = draw(st.sampled_from(["ok", "nan", "inf", "wrongdim", "3d", "empty", "str", "ragged", "dict",
                                 "complex", "object", "scalar", "list", "int", "huge"]))
    n = draw(st.integers(1, 4))
    v = unit(np.random.default_rng(draw(st.integers(0, 10**6))), n)
    if kind == "nan":
        v[draw(st.integers(0, n - 1)), draw(st.integers(0, DIM - 1))] = np.nan
    elif kind == "inf":
        v[0, 0] = -np.inf
    elif kind == "wrongdim":
        return unit(np.random.default_rng(0), n, draw(st.sampled_from([1, DIM - 1, DIM + 1, 384])))
    elif kind == "3d":
        return v[None]
    elif kind == "empty":
        return np.zeros((0, DIM), np.float32)
    elif kind == "str":
        return "0.1 0.2"
    elif kind == "ragged":
        return [[0.1] * DIM, [0.2] * (DIM - 1)]
    elif kind == "dict":
        return {"x": 1}
    elif kind == "complex":
        return v.astype(np.complex64)
    elif kind == "object":
        return np.array([object()] * DIM, dtype=object)[None]
    elif kind == "scalar":
        return 3.0
    elif kind == "list":
        return v.tolist()
    elif kind == "int":
        return np.ones((n, DIM), np.int64)
    elif kind == "huge":
        return v * np.float32(3e38) * 10  # overflows to inf in float32
    return v


top_ks = st.one_of(st.integers(-2, 6), st.none(), st.just("2"), st.floats(allow_nan=True), st.booleans())
OPS = ["add_class", "add_examples", "add_vectors", "remove_class", "set_description", "predict",
       "predict_vectors", "predict_proba", "embed"]


@settings(max_examples=120, **SETTINGS)
@given(data=st.data(), op=st.sampled_from(OPS))
def test_engine_api_bad_input_matrix(data, op):
    eng = fresh_engine()
    before = engine_state(eng, PROBE)
    call = {
        "add_class": lambda: eng.add_class(data.draw(names), examples=data.draw(examples),
                                           description=data.draw(descriptions),
                                           vectors=data.draw(st.one_of(st.none(), vector_inputs()))),
        "add_examples": lambda: eng.add_examples(data.draw(names), data.draw(examples)),
        "add_vectors": lambda: eng.add_vectors(data.draw(names), data.draw(vector_inputs())),
        "remove_class": lambda: eng.remove_class(data.draw(names)),
        "set_description": lambda: eng.set_description(data.draw(names), data.draw(descriptions)),
        "predict": lambda: eng.predict(data.draw(examples), top_k=data.draw(top_ks),
                                       reject=data.draw(st.booleans())),
        "predict_vectors": lambda: eng.predict_vectors(data.draw(vector_inputs()), top_k=data.draw(top_ks)),
        "predict_proba": lambda: eng.predict_proba(data.draw(examples)),
        "embed": lambda: eng.embed(data.draw(examples)),
    }[op]
    try:
        out = call()
    except FewShotError:
        assert engine_state(eng, PROBE) == before, f"a failed {op} changed the engine"
        return
    # success: the engine is still consistent and usable
    if op.startswith("predict") and op != "predict_proba":
        assert all(p.label in eng.classes and 0 <= p.score <= 1 + 1e-6 for p in out if p.label is not None)
    if op == "predict_proba":
        assert out.shape[1] == len(eng.classes) and np.allclose(out.sum(1), 1, atol=1e-4)
    if eng.classes:
        assert np.isfinite(eng.scores_from_vectors(PROBE)).all()
        assert len(eng.predict_vectors(PROBE, top_k=2)) == len(PROBE)


config_values = st.one_of(st.integers(-3, 5), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                          st.none(), st.sampled_from(["x", "5", "", "cosine"]), st.lists(st.integers(0, 3), max_size=2))
CONFIG_KEYS = ["k", "prior_weight", "center", "lam", "folds", "scale", "C", "max_iter", "epochs", "lr", "beta",
               "steps", "temperature", "shrinkage", "mmd_weight", "seed", "keep", "score", "target", "per_class",
               "max_loo_examples", "bogus"]
configs = st.dictionaries(st.sampled_from(CONFIG_KEYS), config_values, max_size=3)
CONFIG_OPS = ["set_classifier", "refine", "adapt", "configure_openset", "construct", "save"]


@settings(max_examples=150, **SETTINGS)
@given(data=st.data(), op=st.sampled_from(CONFIG_OPS))
def test_engine_configuration_bad_input_matrix(data, op, tmp_path_factory):
    """Options of every configurable part (classifier, refine, adaptation, open set, constructor, save): any
    keyword with any value either works or raises a FewShotError that leaves the engine as it was."""
    eng = fresh_engine()
    before = engine_state(eng, PROBE)
    before_config = (eng.classifier_name, eng.classifier_config, dict(eng.openset_config), eng.adapt_spec)
    classifier = data.draw(st.sampled_from(["prototype", "simpleshot", "knn", "fusion", "linear", "logreg", "nope"]))
    config = data.draw(configs)
    call = {
        "set_classifier": lambda: eng.set_classifier(classifier, **config),
        "refine": lambda: eng.refine(classifier, **config),
        "adapt": lambda: eng.adapt(["alpha three", "beta four", "gamma"], method=data.draw(st.sampled_from(
            ["recenter", "coral", "soft-kmeans", "recenter+soft-kmeans", "mmd", "bad"])), **config),
        "configure_openset": lambda: eng.configure_openset(**config),
        "construct": lambda: FewShotEngine(FakeTextEncoder(), classifier=classifier, classifier_config=config,
                                           openset=data.draw(configs)),
        "save": lambda: eng.save(tmp_path_factory.mktemp("save") / "eng", portable=data.draw(st.booleans()),
                                 quantize=data.draw(st.sampled_from([None, "int8", "int4", 8]))),
    }[op]
    try:
        call()
    except FewShotError:
        assert engine_state(eng, PROBE) == before, f"a failed {op} changed the engine"
        assert (eng.classifier_name, eng.classifier_config, dict(eng.openset_config), eng.adapt_spec) == \
            before_config, f"a failed {op} changed the engine's configuration"
        return
    if eng.classes:  # success: still usable, with and without rejection
        assert np.isfinite(eng.scores_from_vectors(PROBE)).all()
        assert len(eng.predict_vectors(PROBE, top_k=2, reject=True)) == len(PROBE)


def test_a_damaged_pointer_file_is_a_corrupt_save_and_a_missing_save_is_not_found(tmp_path):
    from fewshot.errors import SaveNotFoundError

    eng = fresh_engine()
    eng.save(tmp_path / "eng")
    pointer = tmp_path / "eng" / "CURRENT"
    for damaged in (bytes([pointer.read_bytes()[0] ^ 0xFF]) + pointer.read_bytes()[1:], b"\xff\xfe\x00", b""):
        pointer.write_bytes(damaged)
        with pytest.raises(CorruptIndexError):
            FewShotEngine.load(tmp_path / "eng", encoder=FakeTextEncoder())
    for missing in (tmp_path / "no_such_engine", tmp_path / "empty"):
        (tmp_path / "empty").mkdir(exist_ok=True)
        with pytest.raises(SaveNotFoundError) as info:
            FewShotEngine.load(missing)
        assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, CorruptIndexError)


def test_quantize_without_portable_is_refused_and_keeps_the_previous_save(tmp_path):
    eng = fresh_engine()
    eng.save(tmp_path / "eng")
    files = {p: p.read_bytes() for p in (tmp_path / "eng").rglob("*") if p.is_file()}
    with pytest.raises(InvalidInputError, match="portable=True"):
        eng.save(tmp_path / "eng", quantize="int8")
    assert {p: p.read_bytes() for p in (tmp_path / "eng").rglob("*") if p.is_file()} == files


@settings(max_examples=25, **SETTINGS)
@given(content=st.one_of(st.binary(max_size=64), st.sampled_from([b"\x89PNG\r\n\x1a\n", b"GIF89a", b"\xff\xd8\xff",
                                                                   b"BM" + b"\0" * 60, b"<svg></svg>"])))
def test_non_image_files_are_image_read_errors(tmp_path, content):
    from fewshot.errors import ImageReadError
    eng = FewShotEngine(FakeImageEncoder())
    eng.add_class("ok", vectors=unit(np.random.default_rng(1), 2))
    before = engine_state(eng, PROBE)
    path = tmp_path / f"x{hashlib.sha1(content).hexdigest()[:8]}.png"
    path.write_bytes(content)
    for call in (lambda: eng.add_class("new", examples=[str(path)]), lambda: eng.add_examples("ok", [path]),
                 lambda: eng.predict([str(path)])):
        with pytest.raises(ImageReadError):
            call()
    with pytest.raises(ImageReadError):
        eng.predict([str(tmp_path / "missing.jpg")])
    assert engine_state(eng, PROBE) == before


# ---------------------------------------------------------------------------------------------- saved directories
def tree_digest(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def resign(snapshot: Path) -> None:
    """Rewrite MANIFEST.json so checksums match the (tampered) files: a crafted, not a damaged, save."""
    manifest = json.loads((snapshot / "MANIFEST.json").read_text())
    for rel in manifest["files"]:
        p = snapshot / rel
        manifest["files"][rel] = {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "bytes": p.stat().st_size}
    (snapshot / "MANIFEST.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def saved_template(tmp_path_factory):
    root = tmp_path_factory.mktemp("saved")
    eng = fresh_engine("hnsw")
    eng.add_class("c", examples=["gamma"])
    eng.remove_class("b")  # leaves HNSW tombstones in the save
    eng.save(root / "eng")
    return root / "eng", eng.predict_vectors(PROBE, top_k=2)


@settings(max_examples=30, **SETTINGS)
@given(seed=st.integers(0, 2**32 - 1), how=st.sampled_from(["flip", "truncate", "delete", "garbage", "append",
                                                           "pointer", "manifest"]))
def test_damaged_saves_fail_checksum_and_stay_untouched(tmp_path, saved_template, seed, how):
    import shutil
    src, _ = saved_template
    import tempfile
    root = Path(tempfile.mkdtemp(dir=tmp_path)) / "eng"
    shutil.copytree(src, root)
    snap = root / (root / "CURRENT").read_text().strip()
    files = sorted(p for p in snap.rglob("*") if p.is_file() and p.name != "MANIFEST.json")
    rnd = random.Random(seed)
    target = rnd.choice(files)
    data = bytearray(target.read_bytes())
    if how == "flip":
        i = rnd.randrange(len(data))
        data[i] ^= 1 << rnd.randrange(8)
        target.write_bytes(bytes(data))
    elif how == "truncate":
        target.write_bytes(bytes(data[: rnd.randrange(len(data))]))
    elif how == "delete":
        target.unlink()
    elif how == "garbage":
        target.write_bytes(rnd.randbytes(len(data)))
    elif how == "append":
        target.write_bytes(bytes(data) + b"\0")
    elif how == "pointer":
        (root / "CURRENT").write_text(rnd.choice(["snap-999999", "../etc", "", "snap-\x00", "MANIFEST.json"]))
    else:
        (snap / "MANIFEST.json").write_bytes(rnd.choice([b"", b"{", b"[]", b'{"format_version": 1}',
                                                         b'{"format_version": 1, "kind": "fewshot-engine"}']))
    digest = tree_digest(root)
    if how == "manifest" and (snap / "MANIFEST.json").read_bytes().endswith(b'"fewshot-engine"}'):
        # a manifest listing no files verifies nothing: every file it omitted must still be caught on parse
        FewShotEngine.load(root, encoder=FakeTextEncoder())  # files intact → loads; that is fine
    else:
        with pytest.raises(CorruptIndexError):
            FewShotEngine.load(root, encoder=FakeTextEncoder())
    assert tree_digest(root) == digest, "a failed load modified the saved directory"


JSON_TWEAKS = [("engine.json", "format_version", 2), ("engine.json", "format_version", "1"),
               ("engine.json", "encoder_dim", 17), ("engine.json", "classifier", "no-such-method"),
               ("engine.json", "classifier", 5), ("engine.json", "templates", None), ("engine.json", None, []),
               ("engine.json", "classifier_config", {"prior_weight": -1}),
               ("engine.json", "classifier_config", {"bogus": 1}), ("engine.json", "raw_examples", 5),
               ("index/classes.json", "format_version", 0), ("index/classes.json", "dim", 8),
               ("index/classes.json", "dim", -1), ("index/classes.json", "index_type", "flat"),
               ("index/classes.json", "index_type", "nope"), ("index/classes.json", "classes", "x"),
               ("index/classes.json", "classes", []), ("index/classes.json", "next_id", 0),
               ("index/classes.json", "next_id", "many"), ("index/classes.json", None, 7),
               ("index/classes.json", "hnsw_m", "x"), ("MANIFEST.json", "format_version", 2),
               ("MANIFEST.json", "kind", "other")]


@pytest.mark.parametrize("rel,key,value", JSON_TWEAKS)
def test_crafted_saves_with_valid_checksums_fail_typed(tmp_path, saved_template, rel, key, value):
    """Version mismatches and inconsistent content behind a valid manifest: a typed error, never a crash."""
    import shutil
    src, _ = saved_template
    root = tmp_path / "eng"
    shutil.copytree(src, root)
    snap = root / (root / "CURRENT").read_text().strip()
    doc = json.loads((snap / rel).read_text())
    doc = value if key is None else {**doc, key: value}
    (snap / rel).write_text(json.dumps(doc))
    if rel != "MANIFEST.json":
        resign(snap)
    digest = tree_digest(root)
    with pytest.raises(FewShotError):
        FewShotEngine.load(root, encoder=FakeTextEncoder())
    assert tree_digest(root) == digest


@pytest.mark.parametrize("rel", ["index/index.faiss", "index/arrays.npz", "classifier.npz"])
def test_crafted_binary_files_with_valid_checksums_fail_typed(tmp_path, saved_template, rel):
    import shutil
    src, _ = saved_template
    root = tmp_path / "eng"
    shutil.copytree(src, root)
    snap = root / (root / "CURRENT").read_text().strip()
    buf = io.BytesIO()
    if rel.endswith(".npz"):  # wrong shapes / missing keys
        np.savez(buf, prompt_vectors=np.zeros((1, 3)), vector_sums=np.zeros((5, DIM)), state=np.zeros(2))
    else:  # a valid faiss index of another dimension
        import faiss
        faiss.write_index(faiss.IndexIDMap2(faiss.IndexFlatIP(DIM + 1)), str(snap / rel))
        buf.write((snap / rel).read_bytes())
    (snap / rel).write_bytes(buf.getvalue())
    resign(snap)
    try:
        FewShotEngine.load(root, encoder=FakeTextEncoder())
    except FewShotError:
        return
    assert rel == "classifier.npz"  # prototype classifiers keep no learned state: extra arrays are ignored


def test_save_refuses_foreign_directories_and_leaves_them_alone(tmp_path):
    eng = fresh_engine()
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInputError):
        eng.save(tmp_path / "file")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(InvalidInputError):
        eng.save(tmp_path / "mine")
    assert os.listdir(tmp_path / "mine") == ["notes.txt"] and (tmp_path / "file").read_text() == "x"


# ---------------------------------------------------------------------------------------------- real minilm
def test_minilm_edge_texts(minilm):
    eng = FewShotEngine(minilm)
    eng.add_class("card", examples=["I lost my card", "my card was stolen"])
    eng.add_class("hello", description="saying hello")
    odd = ["", " ", "\x00\x01", "😀" * 500, "\u202e\u0301" * 100, "ｆｕｌｌｗｉｄｔｈ", "x" * 200_000, "a\u200db"]
    preds = eng.predict(odd, top_k=2)  # documented truncation: MiniLM reads the first 256 tokens
    assert len(preds) == len(odd) and all(p.label in ("card", "hello") for p in preds)
    long_pred = eng.predict(["I lost my card " + "x" * 200_000])[0]
    assert long_pred.label == "card"
    before = engine_state(eng, unit(np.random.default_rng(0), 2, 384))
    for bad in ([], "text", [1], [None], ["ok", 2]):
        with pytest.raises(FewShotError):
            eng.add_class("bad", examples=bad)
    assert engine_state(eng, unit(np.random.default_rng(0), 2, 384)) == before


def test_minilm_lone_surrogate_is_a_typed_error(minilm):
    eng = FewShotEngine(minilm)
    eng.add_class("card", examples=["I lost my card"])
    with pytest.raises(InvalidInputError):
        eng.predict(["bad \ud800 text"])


# ---------------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def cli_engine_dir(tmp_path_factory, minilm):
    d = tmp_path_factory.mktemp("cli") / "eng"
    eng = FewShotEngine(minilm)
    eng.add_class("card", examples=["I lost my card"])
    eng.add_class("hello", description="saying hello")
    eng.save(d)
    return d


@settings(max_examples=12, **SETTINGS)
@given(inputs=st.lists(st.text(st.characters(exclude_categories=["Cs"]), max_size=60).filter(
    lambda s: not s.startswith("-")), min_size=1, max_size=3), top_k=st.integers(-1, 4))
def test_cli_classify_matrix(cli_engine_dir, capsys, inputs, top_k):
    rc = cli_main(["classify", "--index", str(cli_engine_dir), "--json", "--top-k", str(top_k), "--", *inputs])
    out, err = capsys.readouterr()
    if top_k < 1:
        assert rc == 2 and "top_k" in err and "Traceback" not in err
    else:
        assert rc == 0, err
        rows = json.loads(out)
        assert [r["input"] for r in rows] == inputs and all(len(r["top_k"]) == min(top_k, 2) for r in rows)


@pytest.mark.parametrize("argv", [
    ["classify", "--index", "{missing}", "x"],
    ["classify", "--index", "{file}", "x"],
    ["classify", "--labels", ",, ,", "x"],
    ["classify", "--labels", "a,a", "x"],
    ["classify", "--labels", "a,b", "--top-k", "0", "x"],
    ["classify", "--encoder", "no-such-encoder", "--labels", "a,b", "x"],
    ["classify", "--encoder", "timm:resnet18", "--labels", "a,b", "x"],
    ["index", "--train", "{missing}", "--out", "{out}"],
    ["index", "--train", "{file}", "--out", "{out}"],
])
def test_cli_bad_arguments_exit_2_without_traceback(tmp_path, capsys, argv, minilm):
    (tmp_path / "file").write_text("not,a\nvalid\x00file")
    argv = [a.format(missing=tmp_path / "missing", file=tmp_path / "file", out=tmp_path / "out") for a in argv]
    try:
        rc = cli_main(argv)
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and err.strip(), err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
