"""Fixtures for the corpus jobs: a saved engine on a fake encoder, corpus writers, and one local Ray (2 CPUs,
its logs in a temporary folder) shared by the Ray tests of the session."""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fewshot.engine import FewShotEngine
from tests.fakes import TOPICS, TopicTextEncoder


def write_corpus(path: Path, texts: list, ids: list | None = None, text_column: str = "text",
                 id_column: str = "id") -> Path:
    """Write ``texts`` (and ``ids``) as CSV, JSONL or Parquet, chosen by the suffix of ``path``."""
    columns = {text_column: texts, **({id_column: ids} if ids is not None else {})}
    if path.suffix == ".parquet":
        pq.write_table(pa.table(columns), path)
    elif path.suffix == ".jsonl":
        rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        import csv
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(list(columns))
            writer.writerows(zip(*columns.values()))
    return path


def topic_texts(n: int, start: int = 0) -> list[str]:
    """n texts, most naming one of the engine's topics; every 7th names none (to be rejected)."""
    return [f"{TOPICS[i % 4]} question number {i}" if i % 7 else f"unrelated words {i}"
            for i in range(start, start + n)]


@pytest.fixture(scope="session")
def topic_engine_dir(tmp_path_factory) -> Path:
    """A saved prototype engine over TopicTextEncoder: 4 classes of 6 examples (load it with
    ``encoder=TopicTextEncoder()``)."""
    engine = FewShotEngine(encoder=TopicTextEncoder())
    for topic in TOPICS[:4]:
        engine.add_class(topic, examples=[f"{topic} example {i}" for i in range(6)])
    path = tmp_path_factory.mktemp("engines") / "topic"
    engine.save(path)
    return path


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray with 2 CPUs for the session; its logs and sockets in a temporary folder."""
    ray = pytest.importorskip("ray")
    root = tempfile.mkdtemp(prefix="fsray", dir="/tmp")  # short: Ray's socket paths have a length limit
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                 _temp_dir=root)
    yield ray
    ray.shutdown()
    shutil.rmtree(root, ignore_errors=True)
