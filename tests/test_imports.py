"""The package's layout: no module-level import cycles (read from the source, nothing
imported), and every sub-package listed for the wheel."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# installed name -> source folder (pyproject's package-dir)
PACKAGES = {"nas": ROOT / "nas", "nas.predictors": ROOT / "predictors",
            "nas.kernels": ROOT / "kernels", "nas.search_spaces": ROOT / "search_spaces"}


def modules() -> dict[str, Path]:
    """Every module of the package by its installed name."""
    out = {}
    for pkg, folder in PACKAGES.items():
        for f in folder.rglob("*.py"):
            parts = [p for p in f.relative_to(folder).with_suffix("").parts if p != "__init__"]
            out[".".join([pkg, *parts])] = f
    return out


def module_level_imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports when it is executed (top-level statements only;
    ``if TYPE_CHECKING`` blocks and imports inside functions are not run at import time)."""
    targets = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        body = node.body if isinstance(node, ast.Try) else [node]
        for n in body:
            if isinstance(n, ast.Import):
                targets.update(a.name for a in n.names)
            elif isinstance(n, ast.ImportFrom):
                base = n.module or ""
                if n.level:
                    pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                    pkg = pkg[:len(pkg) - n.level + 1]
                    base = ".".join([*pkg, base] if base else pkg)
                subs = [f"{base}.{a.name}" for a in n.names if f"{base}.{a.name}" in known]
                # ``from pkg import submodule`` needs the submodule, not pkg's names
                targets.update(subs if len(subs) == len(n.names) else [base, *subs])
    out = set()
    for t in targets:
        while t and t not in known:
            t = t.rpartition(".")[0]
        if t and t != name:
            out.add(t)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on, found = {}, {}, [], set(), []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_module_level_import_cycles():
    known = modules()
    assert "nas.predictors.collect" in known and "nas.arch" in known
    graph = {name: module_level_imports(name, path, known) for name, path in known.items()}
    assert "nas.space" in graph["nas.arch"]
    assert cycles(graph) == []


def test_every_package_folder_is_packaged():
    """A new sub-package (a folder with ``__init__.py``) must be listed in pyproject.toml,
    or the wheel silently leaves it out."""
    tomllib = pytest.importorskip("tomllib")
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {name for name, path in modules().items() if path.name == "__init__.py"}
    assert found == listed
