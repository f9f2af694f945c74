"""The streaming process: the rows of ``FewShotEngine.predict`` / ``Encoder.encode``, bounded memory, typed errors
that name the file and leave no output that looks complete."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fewshot.batch import classify_files, embed_files, engine_from_embeddings, labelled_vectors
from fewshot.batch.io import SUCCESS
from fewshot.batch.jobs import plan_inputs, run_streaming
from fewshot.batch.tasks import EmbedTask
from fewshot.encoders.base import Encoder
from fewshot.engine import FewShotEngine
from fewshot.errors import DataFormatError, ImageReadError, InvalidInputError
from tests.batch.conftest import topic_texts, write_corpus
from tests.fakes import FakeImageEncoder, TopicTextEncoder


def rows_by_id(out) -> dict:
    return {r["id"]: r for r in pq.read_table(out).to_pylist()}


def assert_same_as_predict(out, ids, preds, top_k=None):
    """The output folder holds exactly ``ids`` with the predictions ``preds`` (labels equal, scores within 1e-6)."""
    got = rows_by_id(out)
    assert sorted(got) == sorted(ids) and len(pq.read_table(out)) == len(ids)
    for i, p in zip(ids, preds):
        row = got[i]
        assert row["label"] == p.label
        assert abs(row["score"] - p.score) <= 1e-6
        if top_k:
            assert [t["label"] for t in row["top_k"]] == [lab for lab, _ in p.top_k]
            np.testing.assert_allclose([t["score"] for t in row["top_k"]], [s for _, s in p.top_k], atol=1e-6)
        else:
            assert "top_k" not in row


def no_output(out) -> bool:
    """Neither OUT_DIR nor a staging folder beside it."""
    return not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


@pytest.mark.parametrize("top_k, reject", [(None, False), (3, True)])
def test_streaming_equals_predict_over_several_files_and_formats(tmp_path, topic_engine_dir, top_k, reject):
    texts = topic_texts(300)
    a = write_corpus(tmp_path / "a.csv", texts[:120])
    b = write_corpus(tmp_path / "b.jsonl", texts[120:200])
    c = write_corpus(tmp_path / "c.parquet", texts[200:])
    out = tmp_path / "out"
    result = classify_files(topic_engine_dir, [a, b, c], out, encoder=TopicTextEncoder(), top_k=top_k,
                            reject=reject, batch_size=32)
    engine = FewShotEngine.load(topic_engine_dir, encoder=TopicTextEncoder())
    preds = engine.predict(texts, top_k=top_k or 1, reject=reject)
    assert_same_as_predict(out, list(range(300)), preds, top_k)
    assert pq.read_table(out).column("id").to_pylist() == list(range(300))     # streaming keeps the order
    assert result.rows == 300 and result.mode == "streaming" and result.output == out.absolute()
    rejected = sum(p.label is None for p in preds)
    assert result.rejected == rejected and (rejected > 0) == reject
    summary = json.loads((out / SUCCESS).read_text())
    assert summary["rows"] == 300 and summary["kind"] == "classify" and summary["files"] == result.files


def test_id_column_kept_with_its_type(tmp_path, topic_engine_dir):
    texts = topic_texts(50)
    ids = [f"doc-{i}" for i in range(50)]
    path = write_corpus(tmp_path / "a.parquet", texts, ids=ids, id_column="key")
    out = tmp_path / "out"
    classify_files(topic_engine_dir, str(path), out, encoder=TopicTextEncoder(), id_column="key")
    table = pq.read_table(out)
    assert table.schema.field("id").type == pa.string() and table.column("id").to_pylist() == ids


def test_a_live_engine_streams_too(tmp_path, topic_engine_dir):
    engine = FewShotEngine.load(topic_engine_dir, encoder=TopicTextEncoder())
    texts = topic_texts(40)
    out = tmp_path / "out"
    classify_files(engine, [write_corpus(tmp_path / "a.csv", texts)], out, reject=True)
    assert_same_as_predict(out, list(range(40)), engine.predict(texts, reject=True))


def test_image_paths_are_read_relative_to_their_file(tmp_path):
    (tmp_path / "imgs").mkdir()
    colours = {"red": (220, 20, 20), "green": (20, 200, 30), "blue": (30, 40, 210)}
    paths = []
    for name, rgb in colours.items():
        for i in range(4):
            p = tmp_path / "imgs" / f"{name}{i}.png"
            Image.new("RGB", (8, 8), tuple(min(255, c + 9 * i) for c in rgb)).save(p)
            paths.append(p)
    engine = FewShotEngine(encoder=FakeImageEncoder())
    for name in colours:
        engine.add_class(name, examples=[str(p) for p in paths if p.stem.startswith(name)][:3])
    engine_dir = tmp_path / "engine"
    engine.save(engine_dir)
    listing = write_corpus(tmp_path / "list.csv", [f"imgs/{p.name}" for p in paths])   # relative paths
    out = tmp_path / "out"
    classify_files(engine_dir, [listing], out, encoder=FakeImageEncoder(), reject=True, top_k=2)
    preds = FewShotEngine.load(engine_dir, encoder=FakeImageEncoder()).predict([str(p) for p in paths], top_k=2,
                                                                               reject=True)
    assert_same_as_predict(out, list(range(len(paths))), preds, top_k=2)


def test_an_unreadable_image_fails_the_job_naming_the_file(tmp_path):
    engine = FewShotEngine(encoder=FakeImageEncoder())
    Image.new("RGB", (4, 4), (10, 10, 10)).save(tmp_path / "ok.png")
    engine.add_class("dark", examples=[str(tmp_path / "ok.png")])
    listing = write_corpus(tmp_path / "list.csv", ["ok.png", "gone.png"])
    out = tmp_path / "out"
    with pytest.raises(ImageReadError, match="gone.png") as err:
        classify_files(engine, [listing], out)
    assert str(listing) in str(err.value) and no_output(out)


@pytest.mark.parametrize("name, content, message", [
    ("missing-column.csv", "body\nhello\n", "no text column 'text'"),
    ("empty.csv", "", "empty"),
    ("header-only.csv", "text\n", "no rows"),
    ("null.jsonl", '{"text": "alpha"}\n{"text": null}\n', "row 2 has no 'text' value"),
    ("broken.parquet", "PAR1 not really", "cannot be read as PARQUET"),
])
def test_bad_input_is_a_typed_error_naming_the_file_and_writes_nothing(tmp_path, topic_engine_dir, name, content,
                                                                       message):
    good = write_corpus(tmp_path / "good.csv", topic_texts(20))
    bad = tmp_path / name
    bad.write_text(content)
    out = tmp_path / "out"
    with pytest.raises(DataFormatError, match=message) as err:
        classify_files(topic_engine_dir, [good, bad], out, encoder=TopicTextEncoder())
    assert str(bad) in str(err.value) and no_output(out)


def test_the_output_folder_is_checked_before_any_work(tmp_path, topic_engine_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    src = write_corpus(tmp_path / "a.csv", topic_texts(10))
    with pytest.raises(InvalidInputError, match="not empty"):
        classify_files(topic_engine_dir, [src], out, encoder=TopicTextEncoder())
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    classify_files(topic_engine_dir, [src], out, encoder=TopicTextEncoder(), overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [SUCCESS, "part-00000.parquet"]


def test_embed_equals_encode_and_builds_the_same_engine(tmp_path):
    texts = topic_texts(90)
    labels = [t.split()[0] for t in texts]
    train = write_corpus(tmp_path / "train.csv", texts, ids=[f"r{i}" for i in range(90)])
    import csv
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label"])
        w.writerows([(f"r{i}", lab if i % 10 else "") for i, lab in enumerate(labels)])   # every 10th unlabelled
    out = tmp_path / "emb"
    result = embed_files(TopicTextEncoder(), [train], out, batch_size=16)
    table = pq.read_table(out)
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 32)
    vectors = np.asarray(table.column("embedding").to_pylist(), np.float32)
    np.testing.assert_allclose(vectors, TopicTextEncoder().encode_text(texts), atol=1e-6)
    assert result.summary["dim"] == 32 and result.summary["encoder"] == "fake-text"

    data = labelled_vectors(out, [tmp_path / "labels.csv"])
    assert data.unlabelled == 9 and data.examples == 81 and data.dim == 32
    built = engine_from_embeddings(out, [tmp_path / "labels.csv"], encoder=TopicTextEncoder())
    direct = FewShotEngine(encoder=TopicTextEncoder())
    for label in dict.fromkeys(lab for i, lab in enumerate(labels) if i % 10):
        direct.add_class(label, examples=[t for i, t in enumerate(texts) if labels[i] == label and i % 10])
    assert built.classes == direct.classes
    np.testing.assert_allclose(built.index.prototypes(), direct.index.prototypes(), atol=1e-6)
    queries = topic_texts(20, start=500)
    assert [p.label for p in built.predict(queries)] == [p.label for p in direct.predict(queries)]


def test_from_embeddings_refuses_mismatched_rows(tmp_path):
    texts = topic_texts(10)
    src = write_corpus(tmp_path / "a.csv", texts)
    out = tmp_path / "emb"
    embed_files(TopicTextEncoder(), [src], out)
    other = write_corpus(tmp_path / "b.csv", ["a"] * 10, text_column="label")
    with pytest.raises(DataFormatError, match="same files"):
        labelled_vectors(out, [other])                  # positions of other files mean other rows
    with pytest.raises(DataFormatError, match="have no embedding"):
        labelled_vectors(out, {0: "a", 99: "b"})
    with pytest.raises(DataFormatError, match="no _SUCCESS"):
        labelled_vectors(tmp_path, {0: "a"})


class _CountingEncoder(Encoder):
    """2-d constant vectors; records the largest Arrow allocation seen while it runs."""

    name, dim, modalities = "count", 2, frozenset({"text"})
    peak = 0

    def encode_text(self, texts, batch_size=64, show_progress_bar=None):
        _CountingEncoder.peak = max(_CountingEncoder.peak, pa.total_allocated_bytes())
        return np.tile(np.float32([0.6, 0.8]), (len(texts), 1))


def test_streaming_memory_stays_bounded_whatever_the_input_size(tmp_path):
    line = "x" * 90
    path = tmp_path / "big.csv"
    with open(path, "w") as f:
        f.write("text\n")
        for _ in range(300):
            f.write(f"{line}\n" * 1000)                   # 300,000 rows, 27 MB
    plan = plan_inputs([path])
    task = EmbedTask(_CountingEncoder(), files=plan.paths, id_type=plan.id_type)
    base = pa.total_allocated_bytes()
    from fewshot.batch.io import StagedOutput
    with StagedOutput(tmp_path / "out") as staged:
        run_streaming(plan, task, task.schema(plan.id_type), staged, 1024, 1_000_000, False, "embedding")
        assert sum(pq.ParquetFile(p).metadata.num_rows for p in staged.path.glob("*.parquet")) == 300_000
    assert _CountingEncoder.peak - base < 12 << 20, "more than 12 MB of Arrow memory for a 27 MB input"
