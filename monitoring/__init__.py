"""The monitoring layer (DESIGN.md section 13): ingestion of meters, devices and the
distributors' data, a time-series store with aggregates kept current, the emoncms-compatible
input and feed APIs, and the web pages of members, managers, public displays and the control
centre.

Its door: the names below are what other packages may use; each is loaded from its module
on first use (`service.door`)."""

from typing import TYPE_CHECKING

from service.door import lazy_door

if TYPE_CHECKING:
    from monitoring.agreements import Agreement as Agreement
    from monitoring.agreements import AgreementError as AgreementError
    from monitoring.agreements import InstallationAllocation as InstallationAllocation
    from monitoring.agreements import InstallationHours as InstallationHours
    from monitoring.agreements import agreement_by_id as agreement_by_id
    from monitoring.agreements import agreements_of as agreements_of
    from monitoring.agreements import coefficients_of as coefficients_of
    from monitoring.agreements import in_force_on as in_force_on
    from monitoring.agreements import installation_allocation as installation_allocation
    from monitoring.agreements import installation_hours as installation_hours
    from monitoring.agreements import local_midnight as local_midnight
    from monitoring.agreements import period_bounds as period_bounds
    from monitoring.agreements import period_hours as period_hours
    from monitoring.agreements import rules_from_json as rules_from_json
    from monitoring.agreements import rules_to_json as rules_to_json
    from monitoring.agreements import save_agreement as save_agreement
    from monitoring.api import create_app as create_app
    from monitoring.auth import ROLES as ROLES
    from monitoring.auth import create_user as create_user
    from monitoring.auth import list_users as list_users
    from monitoring.auth import set_password as set_password
    from monitoring.config import ConfigError as ConfigError
    from monitoring.config import MonitorConfig as MonitorConfig
    from monitoring.config import load_config as load_config
    from monitoring.datadis import DailyFetch as DailyFetch
    from monitoring.datadis import DatadisClient as DatadisClient
    from monitoring.datadis import DatadisError as DatadisError
    from monitoring.datadis import DatadisLimited as DatadisLimited
    from monitoring.datadis import fetch_into_store as fetch_into_store
    from monitoring.distributor_csv import import_distributor_csv as import_distributor_csv
    from monitoring.distributor_csv import parse_distributor_csv as parse_distributor_csv
    from monitoring.feeds import FeedDeclaration as FeedDeclaration
    from monitoring.feeds import declare_feed as declare_feed
    from monitoring.feeds import declare_feeds as declare_feeds
    from monitoring.feeds import read_feed_declarations as read_feed_declarations
    from monitoring.keys import KeyGrant as KeyGrant
    from monitoring.keys import create_key as create_key
    from monitoring.keys import grant_of as grant_of
    from monitoring.keys import list_keys as list_keys
    from monitoring.keys import revoke_key as revoke_key
    from monitoring.masterdata import MasterDataError as MasterDataError
    from monitoring.masterdata import MasterDataRejected as MasterDataRejected
    from monitoring.masterdata import check_cups as check_cups
    from monitoring.masterdata import check_supply_point_id as check_supply_point_id
    from monitoring.masterdata import format_report as format_report
    from monitoring.masterdata import import_master_data as import_master_data
    from monitoring.masterdata import parse_master_data as parse_master_data
    from monitoring.modbus_poller import ModbusPoller as ModbusPoller
    from monitoring.mqtt_ingest import MqttIngest as MqttIngest
    from monitoring.records import installations_of as installations_of
    from monitoring.records import supply_points_of as supply_points_of
    from monitoring.samples import Refused as Refused
    from monitoring.samples import Sample as Sample
    from monitoring.samples import sample as sample
    from monitoring.service import MonitorService as MonitorService
    from monitoring.service import Storing as Storing
    from monitoring.store import STORE_ROLE as STORE_ROLE
    from monitoring.store import MonitoringStore as MonitoringStore
    from monitoring.store import MonitoringStoreError as MonitoringStoreError
    from monitoring.store import Retention as Retention
    from monitoring.store import zone as zone

__all__, __getattr__ = lazy_door(__name__, __file__)
