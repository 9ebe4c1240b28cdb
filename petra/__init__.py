"""The `petra` command: one console script with a sub-command per role.

Its door: the names below are what other packages may use; each is loaded from its module
on first use (`service.door`)."""

from typing import TYPE_CHECKING

from service.door import lazy_door

if TYPE_CHECKING:
    from petra.cli import main as main

__all__, __getattr__ = lazy_door(__name__, __file__)
