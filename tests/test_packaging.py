"""The package ships its type information (PEP 561), so users' mypy reads its annotations."""

from __future__ import annotations

import importlib.resources
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_imported_package_has_its_py_typed_marker() -> None:
    assert importlib.resources.files("viewerkit").joinpath("py.typed").is_file()


def test_a_build_of_the_package_includes_py_typed(tmp_path: Path) -> None:
    # setuptools' build_py is the step that puts package data into wheels and installs;
    # built from a copy (not a git checkout), only the package-data declaration brings it
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "viewerkit", source / "viewerkit",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    built = tmp_path / "built"
    done = subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_py", "--build-lib", str(built)],
        cwd=source, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (built / "viewerkit" / "__init__.py").is_file()
    assert (built / "viewerkit" / "py.typed").is_file()


def test_the_typed_imports_match_the_lazy_exports() -> None:
    """viewerkit/__init__.py names each export twice (lazily for speed, under TYPE_CHECKING
    for mypy and IDEs): both lists must agree."""
    import ast

    import viewerkit

    source = ast.parse(Path(viewerkit.__file__).read_text(encoding="utf-8"))
    typed: dict[str, str] = {}
    for node in ast.walk(source):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom) and statement.module is not None
                for alias in statement.names:
                    assert alias.asname == alias.name  # re-exported for type checkers
                    typed[alias.name] = statement.module
    assert typed == viewerkit._EXPORTS
    for name in viewerkit.__all__:
        assert getattr(viewerkit, name) is not None
