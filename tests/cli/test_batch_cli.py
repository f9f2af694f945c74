"""``fewshot batch`` / ``fewshot embed`` / ``fewshot index --from-embeddings`` from the command line, and
``fewshot batch --ray`` in a fresh process: two workers on a local Ray finish within a time bound, the console
shows only fewshot's own lines, Ray's output is in the log file, the rows equal ``FewShotEngine.predict``."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from importlib.resources import files

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fewshot.cli import main
from fewshot.engine import FewShotEngine

QUERIES = ["my card still has not arrived", "how do I change my PIN", "what is the weather in Oslo",
           "the exchange rate looks wrong", "please close my account", "recommend a film for tonight"]
#: seconds the Ray job may take, Ray's start included (a stalled pipeline never finishes)
TIME_BOUND_S = 240


def sample_rows() -> list[dict]:
    with files("fewshot").joinpath("data/banking77_sample.csv").open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def build_engine(encoder, path):
    engine = FewShotEngine(encoder=encoder)
    by_label: dict[str, list[str]] = {}
    for r in sample_rows():
        if r["split"] == "support":
            by_label.setdefault(r["label"], []).append(r["text"])
    for label, texts in by_label.items():
        engine.add_class(label, examples=texts)
    engine.save(path)
    return path


@pytest.fixture(scope="module")
def minilm_engine(minilm, tmp_path_factory):
    return build_engine(minilm, tmp_path_factory.mktemp("cli-batch") / "engine")


def queries_csv(path):
    texts = [r["text"] for r in sample_rows() if r["split"] == "query"] + QUERIES
    write_csv(path, ["key", "text"], [(f"q{i}", t) for i, t in enumerate(texts)])
    return texts


def assert_rows_equal_predict(out, engine, texts, top_k):
    rows = {r["id"]: r for r in pq.read_table(out).to_pylist()}
    preds = engine.predict(texts, top_k=top_k, reject=True)
    assert sorted(rows) == sorted(f"q{i}" for i in range(len(texts)))
    for i, p in enumerate(preds):
        row = rows[f"q{i}"]
        assert row["label"] == p.label and abs(row["score"] - p.score) <= 1e-6
        assert [t["label"] for t in row["top_k"]] == [lab for lab, _ in p.top_k]
    assert any(p.label is None for p in preds)


def test_batch_streams_and_reports(minilm_engine, minilm, tmp_path, capsys):
    texts = queries_csv(tmp_path / "q.csv")
    out = tmp_path / "out"
    assert main(["batch", "--engine", str(minilm_engine), "--input", str(tmp_path / "q.csv"), "--output", str(out),
                 "--id-column", "key", "--top-k", "2", "--reject", "--batch-size", "8"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"fewshot batch: classified {len(texts)} rows") and "streaming" in line
    assert_rows_equal_predict(out, FewShotEngine.load(minilm_engine, encoder=minilm), texts, 2)
    assert main(["batch", "--engine", str(minilm_engine), "--input", str(tmp_path / "q.csv"), "--output", str(out),
                 "--id-column", "key", "--overwrite", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == len(texts) and summary["top_k"] is None and "top_k" not in pq.read_schema(
        out / summary["files"][0]).names


def test_batch_errors_exit_2_naming_the_file(minilm_engine, tmp_path, capsys):
    bad = write_csv(tmp_path / "bad.csv", ["body"], [("hello",)])
    out = tmp_path / "out"
    assert main(["batch", "--engine", str(minilm_engine), "--input", str(bad), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fewshot: error:") and str(bad) in err and "no text column 'text'" in err
    assert not out.exists()
    assert main(["batch", "--engine", str(minilm_engine), "--input", str(bad), "--output", str(out),
                 "--workers", "2"]) == 2
    assert "add --ray" in capsys.readouterr().err


def test_embed_then_index_from_embeddings_equals_index_from_the_file(minilm, tmp_path, capsys):
    rows = [r for r in sample_rows() if r["split"] == "support"]
    train = write_csv(tmp_path / "train.csv", ["text", "label"], [(r["text"], r["label"]) for r in rows])
    assert main(["embed", "--encoder", "minilm", "--input", str(train), "--output", str(tmp_path / "emb")]) == 0
    assert "fewshot embed: embedded 50 rows" in capsys.readouterr().out
    table = pq.read_table(tmp_path / "emb")
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 384)
    assert main(["index", "--from-embeddings", str(tmp_path / "emb"), "--labels", str(train),
                 "--out", str(tmp_path / "from-emb")]) == 0
    assert "10 classes and 50 examples" in capsys.readouterr().out
    assert main(["index", "--train", str(train), "--out", str(tmp_path / "from-file")]) == 0
    a, b = FewShotEngine.load(tmp_path / "from-emb"), FewShotEngine.load(tmp_path / "from-file")
    assert a.classes == b.classes and a.encoder.name == b.encoder.name == "minilm"
    np.testing.assert_allclose(a.index.prototypes(), b.index.prototypes(), atol=1e-5)
    assert [p.label for p in a.predict(QUERIES)] == [p.label for p in b.predict(QUERIES)]
    assert main(["index", "--from-embeddings", str(tmp_path / "emb"), "--out", str(tmp_path / "x")]) == 2
    assert "needs --labels" in capsys.readouterr().err


def test_batch_on_a_local_ray_with_two_workers(tmp_path):
    pytest.importorskip("ray")
    from fewshot.encoders.onnx import ONNXEncoder
    from tests.onnx_exports import REPO, exported

    engine_dir = build_engine(ONNXEncoder(exported("minilm")), tmp_path / "engine")   # fp32 ONNX: no torch
    texts = queries_csv(tmp_path / "q.csv")
    log = tmp_path / "ray.log"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PYTHONPATH=str(REPO), TQDM_DISABLE="1")
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "fewshot", "batch", "--engine", str(engine_dir), "--input", str(tmp_path / "q.csv"),
         "--output", str(tmp_path / "out"), "--id-column", "key", "--top-k", "3", "--reject", "--ray",
         "--workers", "2", "--batch-size", "4", "--ray-log", str(log)],
        capture_output=True, text=True, timeout=TIME_BOUND_S, env=env, cwd=str(tmp_path))
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr[-3000:] + log.read_text()[-3000:]
    assert seconds < TIME_BOUND_S
    out_lines, err_lines = proc.stdout.strip().splitlines(), proc.stderr.strip().splitlines()
    assert len(out_lines) == 1 and out_lines[0].startswith(f"fewshot batch: classified {len(texts)} rows")
    assert "on Ray, 2 workers" in out_lines[0] and str(log) in out_lines[0]
    assert err_lines == [f"fewshot batch: running on a local Ray; Ray's own output goes to {log}"], proc.stderr
    ray_lines = log.read_text()
    assert any(s in ray_lines for s in ("MapBatches", "Dataset", "Data sink")), ray_lines  # Ray's own output
    assert_rows_equal_predict(tmp_path / "out", FewShotEngine.load(engine_dir), texts, 3)
