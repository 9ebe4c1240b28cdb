"""What every PETra service shares, and nothing of any one role: the error shape and its
handler, bounded request bodies, routes the server answers itself ahead of the application
(`DirectRoute`), draining long requests at shutdown (`http`); serving under limits no client
can talk a process out of (`serving`, imported on its own: it loads uvicorn); periodic ticks
(`ticker`); the ledger clock every service reads for interval time, accelerable for
simulations (`clock`); opening a service's own database at its schema revision, and holding
it for one process (`database`); upgrading it from one revision to the next through alembic
(`migrations`, loaded only by `migrate`: it imports alembic); the base HTTP client every
client builds on (`client`).

Its door: the names below are what other packages may use; each is loaded from its module
on first use (`service.door`)."""

from typing import TYPE_CHECKING

from service.door import lazy_door

if TYPE_CHECKING:
    from service.backup import BackupCopy as BackupCopy
    from service.backup import BackupError as BackupError
    from service.backup import backup_store as backup_store
    from service.client import PROTOCOL as PROTOCOL
    from service.client import Refusal as Refusal
    from service.client import ServiceClient as ServiceClient
    from service.client import refusal as refusal
    from service.client import retry_after_s as retry_after_s
    from service.clock import CLOCK_ENV as CLOCK_ENV
    from service.clock import WALL_CLOCK as WALL_CLOCK
    from service.clock import LedgerClock as LedgerClock
    from service.clock import ledger_clock as ledger_clock
    from service.clock import next_boundary as next_boundary
    from service.clock import now as now
    from service.clock import parse_clock as parse_clock
    from service.clock import wall_seconds_until as wall_seconds_until
    from service.database import BUSY_TIMEOUT_MS as BUSY_TIMEOUT_MS
    from service.database import PREDATES_REVISIONS as PREDATES_REVISIONS
    from service.database import SchemaOutdated as SchemaOutdated
    from service.database import StoreBusy as StoreBusy
    from service.database import StoreError as StoreError
    from service.database import StoreHolder as StoreHolder
    from service.database import StoreSchema as StoreSchema
    from service.database import check_revision as check_revision
    from service.database import create_private_file as create_private_file
    from service.database import create_store_engine as create_store_engine
    from service.database import hold_store as hold_store
    from service.database import open_schema as open_schema
    from service.database import open_service_database as open_service_database
    from service.database import service_meta as service_meta
    from service.database import sqlite_file as sqlite_file
    from service.database import store_revision as store_revision
    from service.database import version_table as version_table
    from service.door import door_names as door_names
    from service.door import lazy_door as lazy_door
    from service.health import Check as Check
    from service.health import install_health as install_health
    from service.health import readiness as readiness
    from service.http import DRAINING as DRAINING
    from service.http import NO_TELEMETRY as NO_TELEMETRY
    from service.http import ApiError as ApiError
    from service.http import DirectRoute as DirectRoute
    from service.http import Reply as Reply
    from service.http import bounded_asgi_body as bounded_asgi_body
    from service.http import bounded_body as bounded_body
    from service.http import direct_routes as direct_routes
    from service.http import draining as draining
    from service.http import error_response as error_response
    from service.http import extend_openapi as extend_openapi
    from service.http import install_error_handlers as install_error_handlers
    from service.http import internal_error as internal_error
    from service.http import send_error as send_error
    from service.http import send_json as send_json
    from service.http import serve_directly as serve_directly
    from service.http import wait_unless_draining as wait_unless_draining
    from service.metrics import MetricsServer as MetricsServer
    from service.metrics import ReadAtScrape as ReadAtScrape
    from service.metrics import gauge as gauge
    from service.metrics import labelled_registry as labelled_registry
    from service.metrics import new_registry as new_registry
    from service.metrics import serve_metrics as serve_metrics
    from service.migrations import MigrationPlan as MigrationPlan
    from service.migrations import Revision as Revision
    from service.migrations import head_revision as head_revision
    from service.migrations import migrate as migrate
    from service.migrations import migration_sql as migration_sql
    from service.migrations import plan_migration as plan_migration
    from service.serving import PetraServer as PetraServer
    from service.serving import ServeLimits as ServeLimits
    from service.serving import server as server
    from service.ticker import Ticker as Ticker

__all__, __getattr__ = lazy_door(__name__, __file__)
