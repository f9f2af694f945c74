import json
import subprocess
import sys

from fewshot.cli import main


def test_classify_zero_shot_json(capsys):
    assert main(["classify", "--labels", "refund,lost card,greeting", "--json", "--top-k", "2",
                 "hello there", "I want my money back"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["label"] for o in out] == ["greeting", "refund"]
    assert all(len(o["top_k"]) == 2 and 0 <= o["score"] <= 1 for o in out)


def test_index_then_classify(tmp_path, capsys):
    train = tmp_path / "train.csv"
    train.write_text("text,label\nI lost my card,card\nmy card was stolen,card\n"
                     "what is the exchange rate,rate\neuro to dollar rate,rate\n")
    assert main(["index", "--train", str(train), "--out", str(tmp_path / "eng")]) == 0
    capsys.readouterr()
    assert main(["classify", "--index", str(tmp_path / "eng"), "where is my card"]) == 0
    assert capsys.readouterr().out.split("\t")[0] == "card"


def test_errors_exit_2_with_message(tmp_path, capsys):
    assert main(["classify", "--index", str(tmp_path / "missing"), "x"]) == 2
    assert "fewshot: error:" in capsys.readouterr().err


def test_demo_runs_end_to_end():
    out = subprocess.run([sys.executable, "-m", "fewshot", "demo"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "same predictions" in out.stdout
    accuracy = float(out.stdout.split("accuracy ")[1].split("= ")[1].split()[0])
    assert accuracy >= 0.8


def test_models_command_lists_the_catalog_and_names_unknown_models(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_MODELS_DIR", str(tmp_path / "models"))
    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"mpnet", "effnet-lite1", "effnet-lite2", "smollm2"} <= {r["name"] for r in rows}
    assert not any(r["installed"] for r in rows)                    # an empty models directory
    assert main(["models", "path", "mpnet"]) == 2                   # not installed: typed error, exit status 2
    assert "fewshot models install mpnet" in capsys.readouterr().err
    assert main(["models", "path", "no-such-model"]) == 2


def test_adapt_is_a_deprecated_alias_of_transfer(capsys):
    import pytest

    for name in ("transfer", "adapt"):
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0
    assert "Deprecated alias of 'fewshot transfer'" in capsys.readouterr().out
