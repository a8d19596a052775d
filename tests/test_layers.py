"""Only app.py, app_pages/ and lib/ui.py import streamlit (DESIGN.md "Layout").

The benchmark core, the CLI and the child process must never pull Streamlit in; the
check reads every module's imports with `ast`, so an import inside a function counts.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {Path("app.py"), Path("lib/app/ui.py")}


def _imports_streamlit(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        if any(name == "streamlit" or name.startswith("streamlit.") for name in names):
            return True
    return False


def _python_files() -> list[Path]:
    files = [ROOT / "app.py", *(ROOT / "lib").rglob("*.py"), *(ROOT / "app_pages").glob("*.py")]
    files += [*(ROOT / "sandbox").rglob("*.py")] if (ROOT / "sandbox").exists() else []
    return sorted(files)


def test_only_the_ui_layer_imports_streamlit():
    offenders = [
        str(path.relative_to(ROOT))
        for path in _python_files()
        if _imports_streamlit(path)
        and path.relative_to(ROOT) not in ALLOWED
        and path.relative_to(ROOT).parts[0] != "app_pages"
    ]
    assert offenders == []


def test_the_checker_sees_imports(tmp_path):
    """The check itself finds plain, from- and nested imports, and ignores look-alikes."""
    cases = {
        "import streamlit as st\n": True,
        "from streamlit.testing.v1 import AppTest\n": True,
        "def f():\n    import streamlit\n": True,
        "import streamlit_extras\n": False,
        "from lib import ui_helpers\n": False,
    }
    for i, (source, expected) in enumerate(cases.items()):
        path = tmp_path / f"m{i}.py"
        path.write_text(source)
        assert _imports_streamlit(path) is expected, source


def test_the_ui_layer_does_import_streamlit():
    # Guards the allow-list against going stale (a renamed ui module would pass silently).
    for rel in ALLOWED:
        assert _imports_streamlit(ROOT / rel), rel
    assert any(_imports_streamlit(p) for p in (ROOT / "app_pages").glob("*.py"))
