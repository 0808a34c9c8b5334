"""The `rnnfast` console script: `rnnfast info` (and the subcommands added by later modules).
Not a library module: it only parses arguments and calls into the package.
"""
from __future__ import annotations

import argparse
import json
import sys


def _cmd_info(args):
    from ._info import collect, format_info

    d = collect()
    print(json.dumps(d, indent=2) if args.json else format_info(d))
    return 0


def build_parser():
    p = argparse.ArgumentParser(prog="rnnfast", description="Fast fused RNN kernels for NumPy")
    sub = p.add_subparsers(dest="command", required=True)
    q = sub.add_parser("info", help="version, backends, BLAS, CPU features, threads")
    q.add_argument("--json", action="store_true", help="print as JSON")
    q.set_defaults(func=_cmd_info)
    from .models.commands import add_commands   # train-char, sample, caption, demo
    add_commands(sub)
    q = sub.add_parser("bench", add_help=False,
                       help="CPU benchmark vs the NumPy reference and torch (rnnfast bench --help)")
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:   # its own parser takes every option after the subcommand
        from .bench import main as bench_main
        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
