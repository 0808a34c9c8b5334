"""The package's import graph: no cycle between rnnfast's modules (every import counted, function-level ones
included, read with ast from the source), and every module imports on its own in a fresh interpreter.
Not tested here: what the modules do.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

import rnnfast

PKG_DIR = os.path.dirname(rnnfast.__file__)


def _modules():
    """{dotted name: path} of every .py module of the package (packages by their __init__.py)."""
    out = {}
    for root, dirs, files in os.walk(PKG_DIR):
        dirs[:] = [d for d in dirs if not d.startswith((".", "__"))]
        for f in files:
            if not f.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(root, f), os.path.dirname(PKG_DIR))[:-3].split(os.sep)
            if rel[-1] == "__init__":
                rel = rel[:-1]
            out[".".join(rel)] = os.path.join(root, f)
    return out


MODULES = _modules()


def _is_extension(dotted):
    """rnnfast._C, rnnfast._C_cuda: compiled modules (no source, no imports of their own here)."""
    parts = dotted.split(".")
    d = os.path.join(os.path.dirname(PKG_DIR), *parts[:-1])
    return parts[-1].startswith("_C") and not os.path.exists(os.path.join(d, parts[-1] + ".py"))


def _imports(name, path):
    """The package modules `name` imports anywhere in its source (module level or inside functions)."""
    is_pkg = path.endswith("__init__.py")
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = ".".join(base[:len(base) - node.level + 1])
                mod = parent + ("." + node.module if node.module else "")
            else:
                mod = node.module or ""
            # `from pkg import name`: an edge to pkg.name when that is a module, else to pkg itself
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names
                       if not _is_extension(f"{mod}.{a.name}")]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:    # `import rnnfast.models.x` -> the longest package-module prefix
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def test_module_list_is_the_package():
    assert "rnnfast.functional" in MODULES and "rnnfast._stack" in MODULES and "rnnfast" in MODULES
    assert len(MODULES) >= 20


def test_import_graph_is_acyclic():
    graph = {m: _imports(m, p) for m, p in MODULES.items()}
    # Edges to a package's __init__ count like any other (`import rnnfast` inside rnnfast.bench is one);
    # the implicit "a submodule's parent is imported first" is not an edge of the source.
    state, stack = {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cyc = stack[stack.index(d):] + [d]
                pytest.fail("import cycle: " + " -> ".join(cyc))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_checks_module_is_a_leaf():
    assert _imports("rnnfast._checks", MODULES["rnnfast._checks"]) == set()


def _import_alone(mod):
    p = subprocess.run([sys.executable, "-c", f"import {mod}"], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [
                           os.path.dirname(PKG_DIR), os.environ.get("PYTHONPATH")])))
                       )
    return mod, p.returncode, p.stderr


_OPTIONAL = ("torch", "h5py", "matplotlib", "cupy", "tqdm")   # a module may need one of these extras


@pytest.mark.slow
def test_every_module_imports_on_its_own():
    with ThreadPoolExecutor(max_workers=4) as ex:
        results = list(ex.map(_import_alone, sorted(MODULES)))
    bad = []
    for mod, rc, err in results:
        if rc == 0:
            continue
        last = err.strip().splitlines()[-1] if err.strip() else ""
        if last.startswith("ModuleNotFoundError") and any(f"'{o}" in last for o in _OPTIONAL):
            continue   # an optional dependency that is not installed here
        bad.append(f"{mod}: {last}")
    assert not bad, "modules that fail to import on their own:\n" + "\n".join(bad)
