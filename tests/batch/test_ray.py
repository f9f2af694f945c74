"""The Ray Data mode on a local Ray with 2 CPUs, on a fake encoder: worker sizing that cannot stall, a worker killed
mid-job, typed errors naming the file, composition with a user's Dataset. (Exactness on real engines:
test_exactness.py; two workers through the CLI, in a fresh process, within a time bound:
tests/cli/test_batch_cli.py.)"""
from __future__ import annotations

import os
import time

import pyarrow.parquet as pq
import pytest
from PIL import Image

from fewshot.batch import classify_files
from fewshot.batch.ray_pipeline import fewshot_cause, plan_workers
from fewshot.engine import FewShotEngine
from fewshot.errors import DataFormatError, FewShotError, ImageReadError, InvalidInputError
from tests.batch.conftest import topic_texts, write_corpus
from tests.fakes import FakeImageEncoder, TopicTextEncoder

pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # each job starts Ray workers (seconds each)

#: a job of a few hundred rows must finish well inside this (a stalled pipeline never does)
TIME_BOUND_S = 120


def no_output(out) -> bool:
    return not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def by_id(out) -> dict:
    return {r["id"]: r for r in pq.read_table(out).to_pylist()}


@pytest.mark.parametrize("cpus, workers, expected", [
    (2, None, (2, 0.75)), (2, 1, (1, 1.0)), (2, 4, (4, 0.375)), (64, None, (64, 0.937)), (1, None, (1, 0.5)),
])
def test_workers_leave_cpus_for_reading_and_writing(cpus, workers, expected):
    n, each = plan_workers(cpus, workers)
    assert (n, each) == expected
    assert n * each <= cpus - 0.5 + 1e-9     # at least two read / write tasks always fit


def test_plan_workers_rejects_what_cannot_run():
    with pytest.raises(InvalidInputError, match="too few"):
        plan_workers(0.5)
    with pytest.raises(InvalidInputError, match="positive integer"):
        plan_workers(2, 0)


def test_fewshot_cause_unwraps_ray_errors():
    from ray.exceptions import RayTaskError

    inner = DataFormatError("a.csv: row 3 has no 'text' value")
    wrapped = RayTaskError("read", "traceback text", inner)
    outer = RuntimeError("Ray Data failed")
    outer.__cause__ = wrapped
    assert fewshot_cause(outer) is inner
    assert fewshot_cause(RuntimeError("other")) is None


def test_a_worker_that_dies_mid_job_loses_and_repeats_no_row(ray_local, tmp_path, topic_engine_dir):
    from fewshot.batch import EnginePredictor

    marker = str(tmp_path / "crashed")

    class DiesOnItsThirdBatchOnce(EnginePredictor):   # pickled by value: the workers need no test module
        def __call__(self, batch):
            self.calls = getattr(self, "calls", 0) + 1
            if self.calls == 3 and not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)                            # the worker process dies, as if killed
            return super().__call__(batch)

    texts = topic_texts(400)
    ids = [f"r{i}" for i in range(400)]
    a = write_corpus(tmp_path / "a.jsonl", texts[:250], ids=ids[:250])
    b = write_corpus(tmp_path / "b.parquet", texts[250:], ids=ids[250:])
    started = time.perf_counter()
    result = classify_files(topic_engine_dir, [a, b], tmp_path / "out", encoder=TopicTextEncoder(), ray=True,
                            workers=1, batch_size=32, top_k=2, reject=True, predictor=DiesOnItsThirdBatchOnce,
                            log_file=tmp_path / "ray.log")
    assert time.perf_counter() - started < TIME_BOUND_S
    assert os.path.exists(marker), "the worker never died: the test tested nothing"
    got = pq.read_table(tmp_path / "out").column("id").to_pylist()
    assert len(got) == 400 and sorted(got) == sorted(ids)          # every row, once
    engine = FewShotEngine.load(topic_engine_dir, encoder=TopicTextEncoder())
    rows = by_id(tmp_path / "out")
    for i, p in zip(ids, engine.predict(texts, top_k=2, reject=True)):
        assert rows[i]["label"] == p.label and abs(rows[i]["score"] - p.score) <= 1e-6
        assert [t["label"] for t in rows[i]["top_k"]] == [lab for lab, _ in p.top_k]
    assert result.rows == 400 and result.mode == "ray" and result.rejected == sum(r["label"] is None
                                                                                for r in rows.values()) > 0


@pytest.mark.parametrize("name, content, error, message", [
    ("missing.csv", "body\nhello\n", DataFormatError, "no text column 'text'"),
    ("empty.jsonl", "", DataFormatError, "empty"),
    ("null.csv", "text\nalpha\n\"\"\n", DataFormatError, "row 2 has no 'text' value"),
])
def test_bad_input_on_ray_is_the_same_typed_error_and_writes_nothing(ray_local, tmp_path, topic_engine_dir, name,
                                                                     content, error, message):
    good = write_corpus(tmp_path / "good.csv", topic_texts(30))
    bad = tmp_path / name
    bad.write_text(content)
    out = tmp_path / "out"
    with pytest.raises(error, match=message) as err:
        classify_files(topic_engine_dir, [good, bad], out, encoder=TopicTextEncoder(), ray=True, workers=1,
                       log_file=tmp_path / "ray.log")
    assert str(bad) in str(err.value) and no_output(out)


def test_an_error_inside_a_worker_is_typed_and_writes_nothing(ray_local, tmp_path):
    Image.new("RGB", (4, 4), (200, 10, 10)).save(tmp_path / "red.png")
    engine = FewShotEngine(encoder=FakeImageEncoder())
    engine.add_class("red", examples=[str(tmp_path / "red.png")])
    engine.save(tmp_path / "engine")
    listing = write_corpus(tmp_path / "list.csv", ["red.png"] * 20 + ["missing.png"])
    out = tmp_path / "out"
    with pytest.raises(ImageReadError, match="missing.png") as err:
        classify_files(tmp_path / "engine", [listing], out, encoder=FakeImageEncoder(), ray=True, workers=1,
                       log_file=tmp_path / "ray.log")
    assert str(listing) in str(err.value) and no_output(out)


def test_classify_dataset_composes_with_a_users_dataset(ray_local, topic_engine_dir):
    import ray

    from fewshot.batch import classify_dataset

    texts = topic_texts(120)
    ds = ray.data.from_items([{"doc": f"d{i}", "body": t} for i, t in enumerate(texts)])
    out = classify_dataset(ds, topic_engine_dir, text_column="body", id_column="doc", encoder=TopicTextEncoder(),
                           reject=True, workers=1, batch_size=40)
    rows = {r["id"]: r for r in out.filter(lambda r: True).take_all()}
    engine = FewShotEngine.load(topic_engine_dir, encoder=TopicTextEncoder())
    for i, p in enumerate(engine.predict(texts, reject=True)):
        assert rows[f"d{i}"]["label"] == p.label and abs(rows[f"d{i}"]["score"] - p.score) <= 1e-6
    with pytest.raises(InvalidInputError, match="id_column"):
        classify_dataset(ds, topic_engine_dir, text_column="body")


def test_a_live_engine_is_refused_on_ray(tmp_path, topic_engine_dir):
    engine = FewShotEngine.load(topic_engine_dir, encoder=TopicTextEncoder())
    src = write_corpus(tmp_path / "a.csv", ["alpha"])
    with pytest.raises(FewShotError, match="directory of a saved engine"):
        classify_files(engine, [src], tmp_path / "out", ray=True)
