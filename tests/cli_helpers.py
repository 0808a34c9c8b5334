"""Running the `rnnfast` command line from tests: cli() in-process through rnnfast.cli.main(argv) (same
parser, handlers and exit statuses, no new interpreter), cli_process() as a real `python -m rnnfast.cli`
subprocess with the caller's environment. Not tests themselves."""
import contextlib
import io
import os
import subprocess
import sys

from rnnfast.cli import main as cli_main


def cli(*args, cwd=None, timeout=240):
    """In-process run of `rnnfast ARGS...` -> (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = cli_main([str(a) for a in args])
            except SystemExit as e:     # argparse errors and explicit exits
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        os.chdir(old)
    return (rc or 0), out.getvalue(), err.getvalue()


def cli_process(*args, cwd=None, timeout=240):
    """`python -m rnnfast.cli ARGS...` in a subprocess -> (exit status, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", "rnnfast.cli", *map(str, args)], capture_output=True, text=True,
                       cwd=cwd, timeout=timeout, env=os.environ.copy())
    return p.returncode, p.stdout, p.stderr
