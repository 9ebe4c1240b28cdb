"""A package's door, loaded lazily: its `__init__.py` lists what other packages may use as the
imports of one `if TYPE_CHECKING:` block (so type checkers see each name with its type), and
`lazy_door` turns that list into the package's `__all__` and a module `__getattr__` that
imports a name's module on first use. A door then costs nothing to open: the command line
starts fast and worker processes load only what they use."""

from __future__ import annotations

import ast
from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import Any


def door_names(init_file: str) -> dict[str, str]:
    """The names a door's `if TYPE_CHECKING:` block imports, and the module of each."""
    tree = ast.parse(Path(init_file).read_text(), init_file)
    names: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom) and statement.module:
                    for alias in statement.names:
                        names[alias.asname or alias.name] = statement.module
    return names


def lazy_door(package: str, init_file: str) -> tuple[list[str], Callable[[str], Any]]:
    """`__all__` and `__getattr__` for the package `package` whose `__init__.py` is
    `init_file`."""
    names = door_names(init_file)

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(module), name)

    return sorted(names), __getattr__
