"""`fewshot serve` start-up checks (no server is started: each refusal happens before binding)."""
from __future__ import annotations

from fewshot.cli import build_parser, main
from fewshot.cli.serve import is_loopback


def test_non_loopback_without_a_token_is_refused(tmp_path, capsys):
    assert main(["serve", "--root", str(tmp_path / "r"), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "refusing to bind 0.0.0.0" in err and "--token-file" in err
    assert not (tmp_path / "r").exists()        # refused before anything was created


def test_a_missing_or_empty_token_file_is_refused(tmp_path, capsys):
    assert main(["serve", "--root", str(tmp_path / "r"), "--token-file", str(tmp_path / "nope")]) == 2
    assert "cannot read --token-file" in capsys.readouterr().err
    (tmp_path / "empty").write_text("\n")
    assert main(["serve", "--root", str(tmp_path / "r"), "--token-file", str(tmp_path / "empty")]) == 2
    assert "is empty" in capsys.readouterr().err


def test_loopback_addresses():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.5.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.com")


def test_the_contract_flags_parse():
    args = build_parser().parse_args(["serve", "--root", "d", "--host", "127.0.0.1", "--port", "8001",
                                      "--token-file", "t", "--encoder", "onnx:/m"])
    assert (args.root, args.host, args.port, args.token_file, args.encoder) == ("d", "127.0.0.1", 8001, "t", "onnx:/m")
    assert build_parser().parse_args(["serve", "--root", "d"]).encoder == "minilm"
