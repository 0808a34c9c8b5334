"""The README's examples are tests: every ```python block runs as written, each in a fresh interpreter and
an empty folder, and a `# prints: TEXT` comment means TEXT must appear in what the block prints (so the
documented outputs and error messages are the real ones). Blocks that import torch skip without it.
Not tested here: the shell commands (test_cli*.py) and the measured numbers (benchmarks/).
"""
import os
import pathlib
import re
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def _line(code):
    return README.read_text(encoding="utf-8")[:README.read_text(encoding="utf-8").index(code)].count("\n") + 1


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize("code", BLOCKS, ids=[f"line{_line(b)}" for b in BLOCKS])
def test_readme_block_runs(code, tmp_path):
    if re.search(r"^import torch|^from torch", code, flags=re.M):
        pytest.importorskip("torch")
    if "threadpoolctl" in code:
        pytest.importorskip("threadpoolctl")
    env = dict(os.environ, MPLBACKEND="Agg")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env=env, check=False)
    assert p.returncode == 0, f"README block at line {_line(code)} failed:\n{p.stderr[-3000:]}"
    for expected in re.findall(r"# prints: (.*)$", code, flags=re.M):
        assert expected.strip() in p.stdout, f"README says it prints {expected.strip()!r}; it printed {p.stdout!r}"
