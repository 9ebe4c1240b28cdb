"""The smart-meter node: readings, issuing, deposits and billing (DESIGN.md section 7).

Its door: the names below are what other packages may use; each is loaded from its module
on first use (`service.door`)."""

from typing import TYPE_CHECKING

from service.door import lazy_door

if TYPE_CHECKING:
    from smartmeter.config import ConfigError as ConfigError
    from smartmeter.config import load_config as load_config
    from smartmeter.deposits import deposit_key as deposit_key
    from smartmeter.modbus import FLOAT32 as FLOAT32
    from smartmeter.modbus import SDM630_CURRENTS as SDM630_CURRENTS
    from smartmeter.modbus import SDM630_EXPORT_KWH as SDM630_EXPORT_KWH
    from smartmeter.modbus import SDM630_IMPORT_KWH as SDM630_IMPORT_KWH
    from smartmeter.modbus import SDM630_TOTAL_POWER as SDM630_TOTAL_POWER
    from smartmeter.modbus import SDM630_VOLTAGES as SDM630_VOLTAGES
    from smartmeter.modbus import SUNSPEC_A as SUNSPEC_A
    from smartmeter.modbus import SUNSPEC_A_SF as SUNSPEC_A_SF
    from smartmeter.modbus import SUNSPEC_APH as SUNSPEC_APH
    from smartmeter.modbus import SUNSPEC_COMMON_LENGTH as SUNSPEC_COMMON_LENGTH
    from smartmeter.modbus import SUNSPEC_COMMON_MODEL as SUNSPEC_COMMON_MODEL
    from smartmeter.modbus import SUNSPEC_END_MODEL as SUNSPEC_END_MODEL
    from smartmeter.modbus import SUNSPEC_INVERTER_LENGTH as SUNSPEC_INVERTER_LENGTH
    from smartmeter.modbus import SUNSPEC_INVERTER_MODELS as SUNSPEC_INVERTER_MODELS
    from smartmeter.modbus import SUNSPEC_MARKER as SUNSPEC_MARKER
    from smartmeter.modbus import SUNSPEC_NOT_IMPLEMENTED_INT16 as SUNSPEC_NOT_IMPLEMENTED_INT16
    from smartmeter.modbus import SUNSPEC_NOT_IMPLEMENTED_UINT16 as SUNSPEC_NOT_IMPLEMENTED_UINT16
    from smartmeter.modbus import SUNSPEC_PHV as SUNSPEC_PHV
    from smartmeter.modbus import SUNSPEC_V_SF as SUNSPEC_V_SF
    from smartmeter.modbus import SUNSPEC_W as SUNSPEC_W
    from smartmeter.modbus import SUNSPEC_W_SF as SUNSPEC_W_SF
    from smartmeter.modbus import SUNSPEC_WH as SUNSPEC_WH
    from smartmeter.modbus import SUNSPEC_WH_SF as SUNSPEC_WH_SF
    from smartmeter.modbus import UINT32 as UINT32
    from smartmeter.modbus import BadFrame as BadFrame
    from smartmeter.modbus import CounterWentBackwards as CounterWentBackwards
    from smartmeter.modbus import DeviceUnavailable as DeviceUnavailable
    from smartmeter.modbus import MeterSample as MeterSample
    from smartmeter.modbus import Sdm630Reader as Sdm630Reader
    from smartmeter.modbus import SunSpecReader as SunSpecReader
    from smartmeter.mqtt import BadPayload as BadPayload
    from smartmeter.mqtt import ShellyPro3EmFormat as ShellyPro3EmFormat
    from smartmeter.mqtt import parse_json_path as parse_json_path
    from smartmeter.node import MeterNode as MeterNode
    from smartmeter.owner_client import OwnerApiError as OwnerApiError
    from smartmeter.owner_client import OwnerClient as OwnerClient
    from smartmeter.store import MeterStoreError as MeterStoreError

__all__, __getattr__ = lazy_door(__name__, __file__)
