"""The `rnnfast` console script (also `python -m rnnfast`): `rnnfast info`, `--version`, the applications'
subcommands (rnnfast.models.commands) and `rnnfast bench` (rnnfast.bench).
Not a library module: it parses arguments, calls into the package and turns its errors into one-line
messages (exit status 2; 130 after Ctrl-C; RNNFAST_TRACEBACK=1 shows the traceback instead).
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def _cmd_info(args):
    from ._info import collect, format_info

    d = collect()
    print(json.dumps(d, indent=2) if args.json else format_info(d))
    return 0


def build_parser():
    from . import __version__

    p = argparse.ArgumentParser(prog="rnnfast", description="Fast fused RNN kernels for NumPy")
    p.add_argument("--version", action="version", version=f"rnnfast {__version__}",
                   help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True)
    q = sub.add_parser("info", help="version, backends, BLAS, CPU features, threads")
    q.add_argument("--json", action="store_true", help="print as JSON")
    q.set_defaults(func=_cmd_info)
    from .models.commands import add_commands  # train-char, sample, caption, demo
    add_commands(sub)
    sub.add_parser("bench", add_help=False,
                   help="CPU benchmark vs the NumPy reference and torch (rnnfast bench --help)")
    return p


def _run(argv):
    if argv[:1] == ["bench"]:   # its own parser takes every option after the subcommand
        from .bench import main as bench_main
        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    cmd = next((a for a in argv if not a.startswith("-")), "rnnfast")
    try:
        return _run(argv)
    except BrokenPipeError:         # `rnnfast info --json | head`: the reader left; not an error
        try:
            sys.stdout = open(os.devnull, "w")   # noqa: SIM115 - so the interpreter's final flush is silent
        except OSError:
            pass
        return 0
    except KeyboardInterrupt:
        print(f"rnnfast {cmd}: interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except Exception as e:
        if os.environ.get("RNNFAST_TRACEBACK"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"rnnfast {cmd}: error: {msg} ({type(e).__name__}; RNNFAST_TRACEBACK=1 shows where)",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
