"""The DSO authority node: admin API, regulation, billing intake, grid controller.

Its door: the names below are what other packages may use; each is loaded from its module
on first use (`service.door`)."""

from typing import TYPE_CHECKING

from service.door import lazy_door

if TYPE_CHECKING:
    from dso.api import create_app as create_app
    from dso.auth import OPERATOR_NAME as OPERATOR_NAME
    from dso.auth import Role as Role
    from dso.auth import new_token as new_token
    from dso.auth import token_hash as token_hash
    from dso.book import StoreBook as StoreBook
    from dso.client import DEFAULT_URL as DEFAULT_URL
    from dso.client import DsoClient as DsoClient
    from dso.client import DsoClientError as DsoClientError
    from dso.errors import DsoError as DsoError
    from dso.operators import Actor as Actor
    from dso.service import DsoService as DsoService
    from dso.store import STORE_ROLE as STORE_ROLE
    from dso.store import Conflict as Conflict
    from dso.store import DsoStore as DsoStore
    from dso.store import DsoStoreError as DsoStoreError
    from dso.store import NodeRunning as NodeRunning
    from dso.store import Operator as Operator

__all__, __getattr__ = lazy_door(__name__, __file__)
