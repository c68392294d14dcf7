"""The package's own import graph, read from the source with ``ast``: no import circles, and the CLI with its command
modules on top (nothing below imports them)."""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import llm4rec

PACKAGE = Path(llm4rec.__file__).resolve().parent
NAME = PACKAGE.name
CLI = f"{NAME}.cli"
MAIN = f"{NAME}.__main__"


@dataclass(frozen=True)
class Import:
    """One import statement of ``source`` that loads the package's module ``target``."""

    source: str
    target: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path.relative_to(PACKAGE.parent).as_posix()}:{self.line}  {self.source} -> {self.target}"


def module_names(root: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, for its ``__init__.py``)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def resolve(name: str, level: int, source: str, is_package: bool) -> str:
    """The absolute name of ``from <level dots><name> import ...`` written in module ``source``."""
    if level == 0:
        return name
    base = source.split(".")
    base = base[: len(base) - level + (1 if is_package else 0)]
    return ".".join([*base, name] if name else base)


def module_imports(source: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """The package-internal imports of one module, wherever they stand (top level, functions, branches).
    ``from a.b import c`` loads module ``a.b.c`` when the package has one, else ``a.b``; names in strings (as for
    ``importlib.import_module``) are not imports."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = resolve(node.module or "", node.level, source, is_package)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        found += [
            Import(source, target, path, node.lineno)
            for target in dict.fromkeys(targets)
            if target in modules and target != source
        ]
    return found


@functools.cache
def package_imports() -> tuple[Import, ...]:
    modules = module_names()
    found = [each for name, path in modules.items() for each in module_imports(name, path, modules)]
    return tuple(sorted(found, key=lambda i: (i.source, i.line, i.target)))


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports."""
    graph: dict[str, set[str]] = {name: set() for name in module_names()}
    for found in package_imports():
        graph[found.source].add(found.target)
    return graph


def strongly_connected_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, without recursion: the graph's strongly connected components, each sorted. Nodes that
    only appear as targets count too."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    work: list[tuple[str, Iterator[str]]] = []  # the depth-first path, each node with its children still to see

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        work.append((node, iter(sorted(graph.get(node, ())))))

    for root in sorted(graph):
        if root in index:
            continue
        visit(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    visit(child)
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:  # every child done: close the node
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while not component or component[-1] != node:
                        component.append(stack.pop())
                        on_stack.discard(component[-1])
                    components.append(sorted(component))
    return components


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The components that hold a circle: two or more nodes, or one node with an edge to itself."""
    return sorted(c for c in strongly_connected_components(graph) if len(c) > 1 or c[0] in graph.get(c[0], ()))


def shortest_circle(graph: dict[str, set[str]], start: str) -> list[str]:
    """The shortest path from ``start`` back to itself (breadth first), as the list of nodes, ``start`` at both ends;
    empty where there is none."""
    before: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph.get(node, ())):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(before[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if child not in before:
                    before[child] = node
                    following.append(child)
        frontier = following
    return []


def test_cycle_finder_on_hand_written_graphs():
    """The checker itself: a 3-cycle with a tail, a DAG, two circles joined by one edge, a self-loop, a long ring."""
    three = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "tail": {"a"}}
    assert circles(three) == [["a", "b", "c"]]
    assert sorted(strongly_connected_components(three)) == [["a", "b", "c"], ["tail"]]
    dag = {"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set(), "e": {"a", "d"}}
    assert circles(dag) == []
    assert sorted(strongly_connected_components(dag)) == [["a"], ["b"], ["c"], ["d"], ["e"]]
    joined = {"a": {"b"}, "b": {"a", "c"}, "c": {"d"}, "d": {"c"}}  # a <-> b, then one way to c <-> d
    assert circles(joined) == [["a", "b"], ["c", "d"]]
    assert circles({"a": {"a"}, "b": {"a"}}) == [["a"]]
    assert shortest_circle(three, "a") == ["a", "b", "c", "a"] and shortest_circle(dag, "a") == []
    assert shortest_circle(joined, "c") == ["c", "d", "c"] and shortest_circle({"a": {"a"}}, "a") == ["a", "a"]
    ring = {f"m{i:05}": {f"m{(i + 1) % 5000:05}"} for i in range(5000)}  # deeper than Python's recursion limit
    assert [len(c) for c in circles(ring)] == [5000]


def test_import_edges_follow_from_imports_to_modules_or_packages(tmp_path):
    """``from a.b import c`` is an edge to module a.b.c if there is one, else to a.b; relative imports resolve."""
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    files = {
        "pkg/__init__.py": "from .sub import helper\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/helper.py": "from pkg.sub import name\nimport pkg.other\n",
        "pkg/other.py": "def f():\n    from . import sub\n    from .sub.helper import g\n    import json\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    modules = module_names(tmp_path / "pkg")
    assert set(modules) == {"pkg", "pkg.sub", "pkg.sub.helper", "pkg.other"}
    edges = {(i.source, i.target) for name, path in modules.items() for i in module_imports(name, path, modules)}
    assert edges == {
        ("pkg", "pkg.sub.helper"),
        ("pkg.sub.helper", "pkg.sub"),
        ("pkg.sub.helper", "pkg.other"),
        ("pkg.other", "pkg.sub"),
        ("pkg.other", "pkg.sub.helper"),
    }


def test_the_package_has_no_import_circles():
    """Modules that import each other (directly or round a longer circle) load only in some orders: which import
    runs first decides whether a name is defined yet. Every circle is listed with the imports that close it."""
    graph = import_graph()
    found = circles(graph)
    lines = []
    for number, members in enumerate(found, 1):
        lines.append(f"circle {number}: {', '.join(members)}")
        lines.append(f"  shortest: {' -> '.join(shortest_circle(graph, members[0]))}")
        lines.append("  imports inside it:")
        lines += [f"    {i}" for i in package_imports() if i.source in members and i.target in members]
    if found:
        pytest.fail(f"{len(found)} import circle(s) in {NAME}:\n" + "\n".join(lines))


def test_only_main_imports_the_cli():
    """The CLI is the top layer: a module below it that imports it depends on every command at once, and closes a
    circle at run time, as the CLI loads every command module."""
    wrong = [i for i in package_imports() if i.target == CLI and i.source != MAIN]
    if wrong:
        pytest.fail(f"only {MAIN} may import {CLI}:\n" + "\n".join(f"    {i}" for i in wrong))


def test_only_the_cli_imports_command_modules():
    """Command modules (``*.commands``) are the top layer with the CLI, which loads them by name; library code
    that imports one depends on argument parsing and printing."""
    wrong = [i for i in package_imports() if i.target.endswith(".commands") and i.source != CLI]
    if wrong:
        pytest.fail(f"only {CLI} may load the *.commands modules:\n" + "\n".join(f"    {i}" for i in wrong))
