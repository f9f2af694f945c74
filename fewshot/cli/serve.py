"""``fewshot serve --root DIR [--host 127.0.0.1] [--port 8000] [--token-file FILE] [--encoder NAME]``: the HTTP
service (``fewshot.serve``; needs the ``serve`` extra: fastapi, uvicorn)."""
from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from pathlib import Path

from fewshot.errors import InvalidInputError

NAME = "serve"
HELP = "serve the engines under a folder over HTTP (JSON; durable mutations, bearer-token auth)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", required=True, help="folder of engines, one sub-folder each (created if missing)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1); anything but a "
                        "loopback address needs --token-file")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    parser.add_argument("--token-file", help="file holding the bearer token every /v1 request must send")
    parser.add_argument("--encoder", default="minilm", help="encoder of engines created without one (any "
                        "registry name: minilm, st:<dir>, onnx:<dir>, ...; default minilm)")
    parser.add_argument("--allow-encoder", action="append", default=[], metavar="NAME",
                        help="a further encoder name clients may ask for when creating an engine (repeatable)")
    parser.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body (413 above)")
    parser.add_argument("--max-inputs", type=int, default=256, help="most texts per classify / examples per add")
    parser.add_argument("--max-text-chars", type=int, default=10_000, help="longest text, class name or description")
    parser.add_argument("--compact-every", type=int, default=1000,
                        help="journal entries after which an engine is compacted into a save (default 1000)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token(path: str) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read --token-file {path}: {exc}") from None
    if not token:
        raise InvalidInputError(f"--token-file {path} is empty; put the bearer token in it")
    return token


def run(args: argparse.Namespace) -> int:
    token = read_token(args.token_file) if args.token_file else None
    if token is None and not is_loopback(args.host):
        raise InvalidInputError(f"refusing to bind {args.host}: it is not a loopback address and no --token-file "
                                "was given; anyone who can reach it could change the engines. Pass "
                                "--token-file FILE, or bind 127.0.0.1")
    if not 0 <= args.port <= 65535:
        raise InvalidInputError(f"--port must be 0-65535, got {args.port}")
    try:
        import uvicorn

        from fewshot.serve import Limits, create_app
    except ImportError as exc:
        print(f"fewshot: error: `fewshot serve` needs the serve extra ({exc}); pip install 'fewshot[serve]'",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    limits = Limits(args.max_body_bytes, args.max_inputs, args.max_text_chars)
    app = create_app(args.root, encoder=args.encoder, encoders=args.allow_encoder, token=token, limits=limits,
                     compact_every=args.compact_every)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                access_log=args.log_level == "debug")
    return 0
