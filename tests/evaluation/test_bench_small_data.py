"""`fewshot bench` on a small CSV: the default --query adapts to the data, and what cannot run is said in the
command's own flags (--way / --shot / --query), never in internal names."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

import fewshot.encoders
from fewshot.cli import main as cli_main
from fewshot.errors import InvalidInputError
from fewshot.evaluation.bench import BenchData, episodic_query
from tests.fakes import TOPICS, TopicTextEncoder


@pytest.fixture(autouse=True)
def fake_encoder(monkeypatch):
    enc = TopicTextEncoder()
    monkeypatch.setattr(fewshot.encoders, "load_encoder", lambda name=None, **kw: enc)
    return enc


def small_csv(path, per_class: dict[str, int]) -> str:
    rows = [f"{topic} request {i},{topic}_intent" for topic, n in per_class.items() for i in range(n)]
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    return str(path)


def test_default_query_adapts_to_a_small_test_set(tmp_path, capsys):
    train = small_csv(tmp_path / "train.csv", {t: 6 for t in TOPICS[:4]})
    test = small_csv(tmp_path / "test.csv", {t: 4 for t in TOPICS[:4]})
    out = tmp_path / "r.json"
    assert cli_main(["bench", "--train", train, "--test", test, "--way", "3", "--shot", "1", "--episodes", "5",
                     "--method", "prototype", "--json", str(out), "--cache-dir", str(tmp_path / "c")]) == 0
    assert json.loads(out.read_text())["results"][0]["way"] == 3
    err = capsys.readouterr().err
    assert "4 queries per class (--query 4)" in err and "embeddings (" in err   # notes through logging


@pytest.mark.parametrize("argv, words", [
    (["--way", "5"], ["--way 5", "only 4 classes of 4 qualify", "lower --way (to 4)"]),
    (["--way", "3", "--query", "9"], ["--query 9", "only 0 classes", "--shot or --query"]),
    (["--way", "2", "--shot", "7"], ["--shot 7", "--query 1"]),
    (["--mode", "all", "--shot", "9"], ["mode 'all'", "--shot 9", "4 classes have fewer", "lower --shot to 6"]),
])
def test_what_cannot_run_names_the_flags(tmp_path, capsys, argv, words):
    train = small_csv(tmp_path / "train.csv", {t: 6 for t in TOPICS[:4]})
    test = small_csv(tmp_path / "test.csv", {t: 4 for t in TOPICS[:4]})
    assert cli_main(["bench", "--train", train, "--test", test, "--episodes", "3", "--method", "prototype",
                     "--cache-dir", str(tmp_path / "c"), *argv]) == 2
    err = capsys.readouterr().err
    assert "n_way" not in err and "n_query" not in err and "n_shot" not in err, err
    for w in words:
        assert w in err, err


def _data(train_counts, test_counts, same_pool=False):
    train_y = np.repeat(np.arange(len(train_counts)), train_counts)
    test_y = train_y if same_pool else np.repeat(np.arange(len(test_counts)), test_counts)
    x = np.zeros((1, 2), np.float32)
    return BenchData("fake", [f"c{i}" for i in range(len(train_counts))], x, train_y, x, test_y, None, same_pool,
                     0.0)


def test_episodic_query_picks_the_largest_that_leaves_way_classes(caplog):
    with caplog.at_level(logging.INFO, logger="fewshot.bench"):
        assert episodic_query(_data([5, 5, 5], [20, 20, 20]), 3, [1, 5]) == 15   # enough: the default
        assert not caplog.records
        assert episodic_query(_data([5, 5, 5], [20, 9, 3]), 2, [5]) == 9         # 2 classes with >= 9
        assert "9 queries per class" in caplog.text
    assert episodic_query(_data([12, 12, 8], [], same_pool=True), 3, [5]) == 3  # one pool: K + Q <= 8
    assert episodic_query(_data([5, 5, 5], [20, 9, 3]), 2, [5], query=4) == 4    # an explicit query is kept
    with pytest.raises(InvalidInputError, match="only 1 class of 3 qualifies"):
        episodic_query(_data([5, 5, 5], [20, 9, 3]), 2, [5], query=10)
