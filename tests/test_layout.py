"""The layout of DESIGN.md section 2, as far as import-linter cannot see it (`make lint` runs
the layer contracts of pyproject.toml):

- one list of packages: the packages on disk are those pyproject.toml builds (sub-packages
  too, or a wheel would leave them out), and the import contracts cover every one of them;
- every package's `__init__.py` is its door: a docstring and an `__all__` of what other
  packages may use;
- a package takes from another only what that one's door offers, never a private name.
"""

from __future__ import annotations

import ast
import importlib
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
BUILT: list[str] = PYPROJECT["tool"]["setuptools"]["packages"]
PACKAGES = [p for p in BUILT if "." not in p]  # the top-level packages: the layers


def test_one_list_of_packages() -> None:
    on_disk = sorted(
        p.parent.name
        for p in ROOT.glob("*/__init__.py")
        if p.parent.name not in ("tests", "build") and not p.parent.name.startswith(".")
    )
    assert sorted(PACKAGES) == on_disk
    assert sorted(PYPROJECT["tool"]["importlinter"]["root_packages"]) == sorted(PACKAGES)
    # A wheel ships only the packages listed: every sub-package must be, or it is left out.
    nested = sorted(
        ".".join(p.parent.relative_to(ROOT).parts)
        for package in PACKAGES
        for p in (ROOT / package).glob("*/**/__init__.py")
    )
    assert sorted(p for p in BUILT if "." in p) == nested


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_has_a_door(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__doc__, f"{package}/__init__.py says nothing of what the package is"
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, list), f"{package}/__init__.py has no __all__"
    for name in exported:
        assert hasattr(module, name), f"{package}.__all__ names {name}, which it lacks"


def imports_of(path: Path) -> Iterator[tuple[str, str, int]]:
    """(module, name, line) of every `from module import name` in `path`."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                yield node.module, alias.name, node.lineno


def cross_package_imports() -> Iterator[tuple[str, str, str, str]]:
    """(importing file, its package, imported module, name) across packages."""
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for module, name, line in imports_of(path):
                target = module.split(".")[0]
                if target in PACKAGES and target != package:
                    where = f"{path.relative_to(ROOT)}:{line}"
                    yield where, package, module, name


def test_no_package_takes_a_private_name_of_another() -> None:
    private = [
        f"{where}: {module}.{name}"
        for where, _, module, name in cross_package_imports()
        if name.startswith("_") or any(part.startswith("_") for part in module.split("."))
    ]
    assert not private, "\n".join(private)


def test_packages_take_from_one_another_only_what_the_doors_offer() -> None:
    outside: list[str] = []
    for where, _, module, name in cross_package_imports():
        door = importlib.import_module(module.split(".")[0])
        if module.count(".") == 0 or module.split(".")[0] == "petra":
            continue  # `from pkg import name` goes through the door by construction
        if name not in getattr(door, "__all__", ()) and not _is_module(module, name):
            outside.append(f"{where}: {module}.{name} is not in {door.__name__}.__all__")
    assert not outside, "\n".join(outside)


def _is_module(module: str, name: str) -> bool:
    try:
        importlib.import_module(f"{module}.{name}")
    except ImportError:
        return False
    return True
