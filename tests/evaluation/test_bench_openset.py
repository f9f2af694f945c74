"""fewshot bench --mode openset and --transductive, end to end on tiny CSV files."""
import json

import pytest

from fewshot.cli import main

TRAIN = {
    "card": ["I lost my card", "my card was stolen", "card missing", "where is my card", "bank card gone"],
    "rate": ["exchange rate please", "euro to dollar rate", "currency rate today", "fx rate", "pound in euros"],
    "refund": ["I want my money back", "refund my purchase", "how to get a refund", "return for refund",
               "refund not received"],
}
TEST = [("my card is gone", "card"), ("card lost yesterday", "card"), ("dollar rate", "rate"),
        ("what's the euro rate", "rate"), ("money back please", "refund"), ("refund status", "refund"),
        ("recipe for lasagna", "oos"), ("who won the football match", "oos"), ("play some jazz music", "oos")]


def write(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("text,label\n" + "".join(f"{t},{c}\n" for c, ts in TRAIN.items() for t in ts))
    test = tmp_path / "test.csv"
    test.write_text("text,label\n" + "".join(f"{t},{c}\n" for t, c in TEST))
    return str(train), str(test)


def test_openset_mode_reports_auroc_and_rejection(tmp_path):
    train, test = write(tmp_path)
    out = tmp_path / "r.json"
    assert main(["bench", "--train", train, "--test", test, "--mode", "openset", "--shot", "4",
                 "--episodes", "2", "--json", str(out)]) == 0
    row = json.loads(out.read_text())["results"][0]
    md = out.with_suffix(".md").read_text()
    assert "| AUROC |" in md and f"| {row['auroc']:.4f} |" in md   # the rejection columns are reported
    assert out.with_suffix(".png").stat().st_size > 1000
    assert row["mode"] == "openset" and row["way"] == 3 and row["shot"] == 4 and row["episodes"] == 2
    assert 0 <= row["oos_recall"] <= 1 and 0 <= row["accuracy_with_rejection"] <= row["accuracy"] <= 1
    assert row["auroc"] > 0.7


def test_transductive_flag(tmp_path):
    train, test = write(tmp_path)
    test_in = tmp_path / "test_in.csv"
    test_in.write_text("text,label\n" + "".join(f"{t},{c}\n" for t, c in TEST if c != "oos"))
    out = tmp_path / "t.json"
    assert main(["bench", "--train", train, "--test", str(test_in), "--mode", "all", "--shot", "1",
                 "--episodes", "2", "--transductive", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [r["method"] for r in rows] == ["prototype+transductive", "simpleshot+transductive",
                                           "knn+transductive"]
    assert main(["bench", "--train", train, "--test", str(test_in), "--mode", "episodic", "--transductive"]) == 2
    assert main(["bench", "--train", train, "--test", str(test_in), "--mode", "openset"]) == 2


def test_openset_score_and_target_flags_reach_the_detector(tmp_path):
    train, test = write(tmp_path)
    rows = {}
    for flags in (["--reject-score", "max-score"], ["--reject-target", "drop", "--keep", "0.5"],
                  ["--reject-target", "drop", "--keep", "1.0"]):
        out = tmp_path / "f.json"
        assert main(["bench", "--train", train, "--test", test, "--mode", "openset", "--shot", "4",
                     "--episodes", "2", "--json", str(out)] + flags) == 0
        rows[" ".join(flags)] = json.loads(out.read_text())["results"][0]
    # keep=1.0 with the drop target may not lose any accuracy; a budget of half is spent (ignored flags would
    # give both runs the default coverage threshold and equal results)
    assert rows["--reject-target drop --keep 0.5"]["reject_target"] == "drop"
    assert rows["--reject-score max-score"]["reject_score"] == "max-score"
    assert rows["--reject-target drop --keep 0.5"]["accuracy_with_rejection"] < \
        rows["--reject-target drop --keep 1.0"]["accuracy_with_rejection"]
    try:
        main(["bench", "--train", train, "--test", test, "--mode", "openset", "--reject-score", "nope"])
    except SystemExit as exc:  # argparse rejects an unknown score before anything runs
        assert exc.code == 2
    else:
        raise AssertionError("an unknown --reject-score was accepted")


def test_open_set_and_transductive_rows_refuse_methods_they_cannot_run(tmp_path):
    """A row is labelled with the method that produced it: a batched-only method such as 'prototype-l2' is an
    error in these modes, not a silent run of prototypes under its name."""
    from fewshot.errors import InvalidInputError
    from fewshot.evaluation.bench import _check_classifier_methods

    _check_classifier_methods(["prototype", "linear", "logreg"], "--mode openset")
    with pytest.raises(InvalidInputError, match="prototype-l2"):
        _check_classifier_methods(["prototype", "prototype-l2"], "--mode openset")
