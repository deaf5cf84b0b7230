"""The project's shape: installed as a package, one-way imports, one module per tab, every module documented."""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import gradcam_core

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("gradcam_core", "dashboard", "tests", "benchmarks")


def _python_files(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py"))


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved against its package)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            module = f"{base}.{node.module}" if node.level and node.module else (node.module or base)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_version_is_kept_in_pyproject_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert gradcam_core.__version__ == project["version"]


def test_console_command_and_module_run_the_same_cli() -> None:
    command = Path(sys.executable).with_name("gradcam")
    for argv in ([str(command)], [sys.executable, "-m", "gradcam_core"]):
        done = subprocess.run([*argv, "--list-models"], capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        assert "efficientnet_lite0" in done.stdout


@pytest.mark.parametrize("path", _python_files(*SOURCES), ids=lambda path: str(path.relative_to(ROOT)))
def test_no_sys_path_edits(path: Path) -> None:
    tree = ast.parse(path.read_text())
    edits = [node.lineno for node in ast.walk(tree)
             if isinstance(node, ast.Attribute) and node.attr == "path"
             and isinstance(node.value, ast.Name) and node.value.id == "sys"]
    assert not edits, f"sys.path used on lines {edits}: the project is installed, imports need no help"


def test_the_engine_never_imports_the_dashboard_or_streamlit() -> None:
    for path in _python_files("gradcam_core"):
        leaked = {name for name in _imported_modules(path) if name.split(".")[0] in ("streamlit", "dashboard")}
        assert not leaked, f"{path.name} imports {leaked}"


def test_every_tab_is_one_module_with_render_page_and_tabs_do_not_import_each_other() -> None:
    from dashboard.app import TABS

    modules = sorted(path.stem for path in (ROOT / "dashboard" / "tabs").glob("*.py") if path.stem != "__init__")
    assert sorted(render.__module__.rsplit(".", 1)[-1] for render in TABS.values()) == modules
    for name in modules:
        render = importlib.import_module(f"dashboard.tabs.{name}").render
        assert list(inspect.signature(render).parameters) == ["page"]
        others = {f"dashboard.tabs.{other}" for other in modules if other != name}
        imported = _imported_modules(ROOT / "dashboard" / "tabs" / f"{name}.py")
        assert not imported & others, f"tab {name} imports another tab"


def test_only_the_app_imports_the_tabs() -> None:
    for path in _python_files("dashboard"):
        if path.name == "app.py" or "tabs" in path.parts:
            continue
        assert not any(name.startswith("dashboard.tabs") for name in _imported_modules(path)), path.name


def test_the_readme_layout_lists_every_module() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [str(path.relative_to(ROOT)) for path in _python_files("gradcam_core", "dashboard")
               if path.name != "__init__.py" and f"`{path.relative_to(ROOT)}`" not in readme]
    assert not missing, f"README's layout does not mention {missing}"


def test_the_app_script_has_no_bare_string_that_streamlit_would_draw() -> None:
    tree = ast.parse((ROOT / "dashboard" / "app.py").read_text())
    bare = [node.lineno for node in tree.body[1:]  # the module docstring is not drawn
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)]
    assert not bare, f"Streamlit's magic would write the strings on lines {bare} onto the page"
