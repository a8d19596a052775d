"""The house rules of lib/ (docs/architecture.md "Import layers"), read from the code.

Every module's imports are read with `ast`, so an import inside a function counts:
- only app.py, app_pages/ and lib/app/ import streamlit;
- a lib package imports only packages of a lower rank (never a sibling of its own rank,
  never one above), and there is no import circle between modules;
- the sandbox/ package imports only lib.core, and lib reaches the sandbox only where
  servescope works without it (lazily, in the places listed in SANDBOX_USERS).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "lib"

# Down the pipeline: a package may import only packages of a lower rank.
RANKS = {
    "core": 0,
    "engines": 1,
    "telemetry": 1,
    "store": 1,
    "quality": 2,
    "endpoints": 2,
    "launch": 2,
    "load": 3,
    "analysis": 4,
    "charts": 5,
    "report": 6,
    "app": 7,
    "cli": 7,
}
STREAMLIT_ALLOWED = ("app.py", "app_pages/", "lib/app/")
# lib packages that may import the sandbox package, inside a function only: servescope
# works without it (its endpoints, a failing engine's log tail, the sidebar's box, the
# programs of its engines for recipes, its variants for `matrix --variants sandbox`).
SANDBOX_USERS = {"endpoints", "launch", "load", "app", "cli"}


def _imports(path: Path, nested: bool = True) -> Iterator[tuple[str, int]]:
    """(absolute module name, line) for every import in the file, nested ones included
    unless `nested` is False (then only the module's top-level statements)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree) if nested else tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, node.lineno
            for alias in node.names:  # `from lib import store` imports lib.store
                yield f"{node.module}.{alias.name}", node.lineno


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _lib_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(LIB.rglob("*.py"))}


def _package(module: str) -> str | None:
    """The lib package a module belongs to ('store' for lib.store.writer); None for lib."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "lib" else None


def _lib_edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the lib modules it imports (`from lib import x` resolved to lib.x)."""
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges[name] = {m for m, _ in _imports(path) if m in modules and m not in (name, "lib")}
    return edges


def _imports_streamlit(path: Path) -> bool:
    return any(m == "streamlit" or m.startswith("streamlit.") for m, _ in _imports(path))


def _python_files() -> list[Path]:
    files = [ROOT / "app.py", *LIB.rglob("*.py"), *(ROOT / "app_pages").glob("*.py")]
    return sorted([*files, *(ROOT / "sandbox").rglob("*.py")])


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# --- Streamlit ---------------------------------------------------------------------------


def test_only_the_app_layer_imports_streamlit():
    offenders = [
        _rel(p)
        for p in _python_files()
        if _imports_streamlit(p) and not _rel(p).startswith(STREAMLIT_ALLOWED)
    ]
    assert offenders == []


def test_the_app_layer_does_import_streamlit():
    # Guards the allow-list against going stale (a moved app package would pass silently).
    assert _imports_streamlit(ROOT / "app.py")
    assert any(_imports_streamlit(p) for p in (ROOT / "app_pages").glob("*.py"))
    assert any(_imports_streamlit(p) for p in (LIB / "app").glob("*.py"))


# --- the direction of imports ------------------------------------------------------------


def test_every_lib_package_has_a_rank():
    packages = {p.name for p in LIB.iterdir() if (p / "__init__.py").exists()}
    assert packages == set(RANKS)
    loose = [p.name for p in LIB.glob("*.py") if p.name != "__init__.py"]
    assert loose == [], "lib/ holds packages only: put the module in the package it serves"


def _wrong_way(edges: dict[str, set[str]]) -> list[str]:
    """Imports of a package of the same or a higher rank, one line each."""
    wrong = []
    for name, targets in sorted(edges.items()):
        mine = _package(name)
        for target in sorted(targets):
            theirs = _package(target)
            if mine is None or theirs is None or theirs == mine:
                continue
            if RANKS[theirs] >= RANKS[mine]:
                wrong.append(f"{name} ({mine}) imports {target} ({theirs})")
    return wrong


def _circles(edges: dict[str, set[str]]) -> list[str]:
    """Every import circle met in a depth-first walk, as 'a -> b -> a'."""
    circles: list[str] = []
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    return circles


def test_imports_run_down_the_pipeline_only():
    assert _wrong_way(_lib_edges(_lib_modules())) == []


def test_there_is_no_import_circle():
    assert _circles(_lib_edges(_lib_modules())) == []


def test_the_sandbox_stays_apart():
    """sandbox/ imports only lib.core; lib imports the sandbox only in SANDBOX_USERS and
    only inside functions, so servescope runs where the sandbox package is missing."""
    for path in sorted((ROOT / "sandbox").rglob("*.py")):
        lib_imports = [m for m, _ in _imports(path) if m == "lib" or m.startswith("lib.")]
        assert all(m.startswith("lib.core") for m in lib_imports), (_rel(path), lib_imports)
    for path in sorted(LIB.rglob("*.py")):
        if not any(m == "sandbox" or m.startswith("sandbox.") for m, _ in _imports(path)):
            continue
        assert _package(_module_name(path)) in SANDBOX_USERS, _rel(path)
        top = [m for m, _ in _imports(path, nested=False)]
        assert not any(m == "sandbox" or m.startswith("sandbox.") for m in top), _rel(path)


# --- the checker itself ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import streamlit as st\n", True),
        ("from streamlit.testing.v1 import AppTest\n", True),
        ("def f():\n    import streamlit\n", True),
        ("import streamlit_extras\n", False),
        ("from lib import ui_helpers\n", False),
    ],
)
def test_the_checker_sees_streamlit_imports(tmp_path, source, expected):
    path = tmp_path / "m.py"
    path.write_text(source)
    assert _imports_streamlit(path) is expected


def test_the_checker_sees_a_wrong_way_import_and_a_circle(tmp_path):
    """The rules would catch what they are for: analysis importing charts (upward), and
    two modules importing each other (one inside a function)."""
    root = tmp_path / "lib"
    for package in ("analysis", "charts"):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "analysis" / "a.py").write_text("def f():\n    from lib.charts import b\n")
    (root / "charts" / "b.py").write_text("from lib.analysis import a\n")
    modules = {
        ".".join(p.relative_to(tmp_path).with_suffix("").parts): p for p in root.rglob("*.py")
    }
    modules = {k.removesuffix(".__init__"): v for k, v in modules.items()}
    edges = _lib_edges(modules)
    assert edges["lib.analysis.a"] == {"lib.charts", "lib.charts.b"}
    assert _wrong_way(edges) == [
        "lib.analysis.a (analysis) imports lib.charts (charts)",
        "lib.analysis.a (analysis) imports lib.charts.b (charts)",
    ]
    assert _circles(edges) == ["lib.analysis.a -> lib.charts.b -> lib.analysis.a"]
