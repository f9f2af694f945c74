"""`fewshot bench` end to end on tiny data with a deterministic fake encoder (no model download, fast)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import fewshot.encoders
from fewshot.cli import main as cli_main
from fewshot.evaluation.bench import RESULT_KEYS
from fewshot.evaluation.reports import markdown_table
from tests.fakes import TOPICS, ColourImageEncoder, TopicTextEncoder


@pytest.fixture
def fake_encoder(monkeypatch):
    enc = TopicTextEncoder()
    monkeypatch.setattr(fewshot.encoders, "load_encoder", lambda name=None, **kw: enc)
    TopicTextEncoder.calls = 0
    return enc


def make_split(path, n_per_class: int, seed: int, header: str = "text,label") -> str:
    rng = np.random.default_rng(seed)
    rows = [f"{w} request number {seed}-{i} {rng.integers(1e9)},{w}_intent" for w in TOPICS
            for i in range(n_per_class)]
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return str(path)


def bench(argv: list[str]) -> int:
    """``fewshot bench ARGV`` through the CLI entry point; returns the exit status."""
    return cli_main(["bench", *argv])


def test_episodic_json_report_contract(tmp_path, fake_encoder, capsys):
    train = make_split(tmp_path / "train.csv", 12, 1)
    test = make_split(tmp_path / "test.csv", 8, 2, header="text,category")
    out = tmp_path / "res" / "bench.json"
    code = bench(["--train", train, "--test", test, "--encoder", "fake-text", "--way", "3", "--shot",
                            "1", "3", "--query", "4", "--episodes", "40", "--method", "prototype", "simpleshot",
                            "knn", "zero-shot", "--json", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    payload = json.loads(out.read_text())
    assert set(payload) == {"encoder", "results"} and payload["encoder"] == "fake-text"
    assert len(payload["results"]) == 8
    for r in payload["results"]:
        assert tuple(r) == RESULT_KEYS
        assert r["mode"] == "episodic" and r["way"] == 3 and r["episodes"] == 40 and r["shot"] in (1, 3)
        assert 0.0 <= r["accuracy"] <= 1.0 and r["ci95"] >= 0 and r["seconds"] > 0
    accs = {(r["method"], r["shot"]): r["accuracy"] for r in payload["results"]}
    assert accs[("prototype", 3)] > 0.6                            # the fake topics are learnable
    assert "| episodic | prototype | 3 | 3 | 40 |" in out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "accuracy (%)" in capsys.readouterr().out
    # cached: a second run re-encodes nothing and gives identical numbers (seeded)
    calls = TopicTextEncoder.calls
    assert bench(["--train", train, "--test", test, "--way", "3", "--shot", "1", "3", "--query", "4",
                            "--episodes", "40", "--method", "prototype", "simpleshot", "knn", "zero-shot",
                            "--json", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    assert TopicTextEncoder.calls == calls
    again = json.loads(out.read_text())
    assert [r["accuracy"] for r in again["results"]] == [r["accuracy"] for r in payload["results"]]


def test_all_and_zero_shot_modes(tmp_path, fake_encoder):
    train = make_split(tmp_path / "train.csv", 12, 1)
    test = make_split(tmp_path / "test.csv", 8, 2)
    out = tmp_path / "all.json"
    assert bench(["--train", train, "--test", test, "--mode", "all", "--shot", "1", "5",
                            "--episodes", "3", "--method", "prototype", "knn", "--json", str(out),
                            "--cache-dir", str(tmp_path / "c")]) == 0
    res = json.loads(out.read_text())["results"]
    assert [(r["method"], r["shot"], r["way"], r["episodes"]) for r in res] == [
        ("prototype", 1, 6, 3), ("knn", 1, 6, 3), ("prototype", 5, 6, 3), ("knn", 5, 6, 3)]
    desc = tmp_path / "desc.json"
    desc.write_text(json.dumps({f"{w}_intent": f"{w} things" for w in TOPICS}))
    assert bench(["--train", train, "--test", test, "--mode", "zero-shot", "--descriptions", str(desc),
                            "--json", str(out), "--cache-dir", str(tmp_path / "c")]) == 0
    (z,) = json.loads(out.read_text())["results"]
    assert (z["mode"], z["method"], z["way"], z["shot"], z["episodes"]) == ("zero-shot", "zero-shot", 6, 0, 48)
    assert z["ci95"] == pytest.approx(1.96 * np.sqrt(z["accuracy"] * (1 - z["accuracy"]) / 48), abs=1e-5)


def test_same_path_draws_disjointly_and_rejects_all_mode(tmp_path, fake_encoder):
    pool = make_split(tmp_path / "pool.jsonl.csv", 10, 3)
    out = tmp_path / "p.json"
    assert bench(["--train", pool, "--test", pool, "--way", "4", "--shot", "2", "--query", "8",
                            "--episodes", "10", "--json", str(out), "--cache-dir", str(tmp_path / "c")]) == 0
    assert bench(["--train", pool, "--test", pool, "--query", "9", "--shot", "2",
                            "--cache-dir", str(tmp_path / "c")]) == 2       # 2 + 9 > 10 per class
    assert bench(["--train", pool, "--test", pool, "--mode", "all", "--cache-dir",
                            str(tmp_path / "c")]) == 2


def test_errors_exit_2_with_message(tmp_path, fake_encoder, capsys):
    train = make_split(tmp_path / "train.csv", 5, 1)
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nhello,\n")
    assert bench(["--train", train, "--test", str(bad)]) == 2
    assert "bad.csv:2: empty label" in capsys.readouterr().err
    assert bench(["--train", train, "--test", train, "--method", "nope", "--shot", "1", "--query", "1",
                            "--cache-dir", str(tmp_path / "c")]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert bench(["--train", train, "--test", train, "--shot", "0"]) == 2


def test_markdown_table_percentages():
    md = markdown_table({"encoder": "e", "results": [dict(zip(RESULT_KEYS, ("episodic", "knn", 5, 1, 600, 0.5,
                                                                            0.0123, 0.2)))]})
    assert "| episodic | knn | 5 | 1 | 600 | 50.00 | 1.23 | 0.200 |" in md


def test_chunked_cache_equals_whole_and_resumes(tmp_path):
    from fewshot.evaluation.bench import encode_cached

    enc = TopicTextEncoder()
    texts = [f"{TOPICS[i % 6]} item {i}" for i in range(10)]
    TopicTextEncoder.calls = 0
    chunked = encode_cached(enc, texts, tmp_path, chunk_size=4, progress=False)
    assert TopicTextEncoder.calls == 3 and len(list(tmp_path.glob("*.npy"))) == 3
    np.testing.assert_allclose(chunked, enc.encode_text(texts), atol=1e-6)
    TopicTextEncoder.calls = 0
    np.testing.assert_array_equal(encode_cached(enc, texts[:8], tmp_path, chunk_size=4, progress=False),
                                  chunked[:8])                 # a prefix reuses the cached chunks
    assert TopicTextEncoder.calls == 0


def test_image_folder_one_pool(tmp_path, monkeypatch):
    from PIL import Image

    colours = {"red": (200, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 200), "grey": (90, 90, 90)}
    for name, rgb in colours.items():
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (5, 5), tuple(min(255, c + 7 * i) for c in rgb)).save(tmp_path / "imgs" / name / f"{i}.png")
    enc = ColourImageEncoder()
    monkeypatch.setattr(fewshot.encoders, "load_encoder", lambda name=None, **kw: enc)
    folder, out = str(tmp_path / "imgs"), tmp_path / "img.json"
    assert bench(["--train", folder, "--test", folder, "--way", "3", "--shot", "1", "2", "--query", "3",
                            "--episodes", "20", "--json", str(out), "--cache-dir", str(tmp_path / "c")]) == 0
    res = json.loads(out.read_text())["results"]
    assert len(res) == 6 and all(r["accuracy"] > 0.9 for r in res)
    assert bench(["--train", folder, "--test", folder, "--way", "3", "--shot", "1", "--query", "3",
                            "--method", "zero-shot", "--cache-dir", str(tmp_path / "c")]) == 2   # no text side


def test_encoder_method_fine_tunes_per_repeat_in_all_mode(tmp_path, monkeypatch):
    """``--method encoder``: the real MiniLM fine-tuned on each repeat's support (tiny: 3 classes × 4 shots)."""
    from fewshot.errors import InvalidInputError
    from fewshot.evaluation.bench import prepare, run_mode

    rows = {"card_lost": ["I lost my card", "my card was stolen", "card missing since yesterday",
                          "where is my bank card", "cannot find my card", "someone took my card"],
            "exchange_rate": ["what is the exchange rate", "euro to dollar rate", "how many euros for a pound",
                              "currency conversion rate today", "rate for yen", "dollar exchange rate now"],
            "refund": ["I want my money back", "please refund my purchase", "how do I get a refund",
                       "return and refund", "refund my order", "give me a refund"]}
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    train.write_text("text,label\n" + "".join(f"{t},{c}\n" for c, ts in rows.items() for t in ts[:4]))
    test.write_text("text,label\n" + "".join(f"{t},{c}\n" for c, ts in rows.items() for t in ts[4:]))
    monkeypatch.setenv("FEWSHOT_CACHE_DIR", str(tmp_path / "cache"))
    data = prepare(str(train), str(test), "minilm", cache_dir=tmp_path / "cache")
    (res,) = run_mode(data, "all", methods=["encoder"], shots=[4], episodes=1, progress=False)
    assert (res["mode"], res["method"], res["way"], res["shot"], res["episodes"]) == ("all", "encoder", 3, 4, 1)
    assert res["accuracy"] >= 2 / 3  # six easy queries
    with pytest.raises(InvalidInputError, match="mode 'all'"):
        run_mode(data, "episodic", methods=["encoder"], shots=[1], episodes=1, progress=False)
