"""The floors of shared/DESIGN.md: imports point down only, and no project module takes part in an import circle.

    theory (1)  <-  samplers (2)  <-  exact (3)  <-  studies, figures (4)  <-  benchmarks (5)

Every import statement counts, including those inside functions: a late import that points up is still a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {"theory": 1, "samplers": 2, "exact": 3, "studies": 4, "figures": 4, "benchmarks": 5}
# figures rebuilds the studies' figures, so it may import studies (same floor, one direction only).
SIDEWAYS = {("figures", "studies")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str) -> set[str]:
    """Project modules that a module's source imports (absolute or relative, at any depth of the code)."""
    package = module if module.count(".") == 0 else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            # `from exact import gaussian` may name a submodule
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in FLOORS}


def project_modules() -> dict[str, str]:
    return {module_name(p): p.read_text() for top in FLOORS for p in (ROOT / top).rglob("*.py")}


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports that point up a floor (or sideways where that is not allowed)."""
    bad = []
    for module, imported in graph.items():
        here = module.split(".")[0]
        for name in imported:
            there = name.split(".")[0]
            if FLOORS[there] > FLOORS[here] or (
                FLOORS[there] == FLOORS[here] and there != here and (here, there) not in SIDEWAYS
            ):
                bad.append(f"{module} imports {name} ({there} is floor {FLOORS[there]}, {here} is floor {FLOORS[here]})")
    return sorted(bad)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import circles among project modules (depth-first search; a package counts as its __init__)."""
    known = set(graph)
    edges = {m: {n for n in imported if n in known and n != m} for m, imported in graph.items()}
    # `import a.b.c` runs a/__init__ and a/b/__init__ too; edges to the parent packages of what is imported
    for m in edges:
        for n in list(edges[m]):
            parts = n.split(".")
            edges[m].update(p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if p in known and p != m
                            and not m.startswith(p + "."))
    found, state, stack = [], {}, []

    def visit(m: str) -> None:
        state[m] = "open"
        stack.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == "open":
                found.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m)
    return found


def graph_of(modules: dict[str, str]) -> dict[str, set[str]]:
    return {name: imports_of(src, name) for name, src in modules.items()}


def test_every_import_points_down_a_floor():
    assert violations(graph_of(project_modules())) == []


def test_no_import_circle():
    assert cycles(graph_of(project_modules())) == []


def test_theory_imports_nothing_of_the_project_outside_theory():
    graph = graph_of(project_modules())
    outside = {m: sorted(n for n in imported if not n.startswith("theory")) for m, imported in graph.items()
               if m.startswith("theory")}
    assert {m: v for m, v in outside.items() if v} == {}


@pytest.mark.parametrize("module, source", [
    ("theory.targets", "from samplers.base import ExactModel\n"),
    ("samplers.li2023", "def f():\n    from exact import measure\n"),
    ("exact.gaussian", "import studies.rates\n"),
    ("studies.rates", "from figures import __main__\n"),
])
def test_a_reversed_import_is_caught(module, source):
    """The checks can fail: an upward import planted in a copy of the real graph is reported."""
    modules = project_modules()
    modules[module] = modules[module] + source
    assert any(line.startswith(module + " imports") for line in violations(graph_of(modules)))


def test_a_planted_circle_is_caught():
    modules = project_modules()
    modules["theory.schedules"] += "\ndef late():\n    from theory import rates\n"
    modules["theory.rates"] += "\nfrom theory.schedules import Grid\n"
    assert any("theory.rates" in c and "theory.schedules" in c for c in cycles(graph_of(modules)))
