"""The monitoring service's configuration file: every section read, every problem named by its
dotted key, paths taken from the file's folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitoring.config import (
    CommunityConfig,
    ConfigError,
    JsonDevice,
    ModbusDevice,
    MqttSettings,
    ShellyDevice,
    load_config,
)
from monitoring.store import Retention

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "monitor.toml"

GOOD = """
[service]
store = "sqlite:///data/monitor.sqlite"
host = "0.0.0.0"
port = 8080
secure_cookies = true

[retention]
raw_days = 400

[[community]]
id = "sunrise"
name = "Sunrise energy community"
timezone = "Europe/Madrid"
currency = "EUR"
price = "0.1523"
export_price = 0.05
co2_g_per_kwh = 190

[mqtt]
host = "broker.lan"
port = 8883
username = "monitor"
password_file = "secrets/mqtt.txt"
base_topic = "home/emon"

[[mqtt.shelly]]
topic_prefix = "shellypro3em-0cb815fc3a50"
node = "house3"

[[mqtt.json]]
topic = "tele/meter/SENSOR"
node = "flat2"
time_path = "$.Time"
[mqtt.json.inputs]
power = "$.ENERGY.Power"
import_kwh = "$.ENERGY.Total"

[[modbus]]
kind = "sdm630"
host = "192.168.1.40"
node = "school"
interval_s = 5

[[modbus]]
kind = "sunspec"
host = "192.168.1.41"
port = 1502
device_id = 3
node = "pv-roof"

[datadis]
username = "12345678Z"
password_file = "secrets/datadis.txt"
supplies = ["ES0021000000000001AB", "ES0021000000000002CD0F"]
hour = 7
"""


def write(folder: Path, text: str) -> Path:
    (folder / "secrets").mkdir(exist_ok=True)
    (folder / "secrets" / "mqtt.txt").write_text("mqtt-secret\n")
    (folder / "secrets" / "datadis.txt").write_text("datadis-secret\n")
    path = folder / "monitor.toml"
    path.write_text(text)
    return path


def refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    return str(caught.value)


def test_a_good_file_is_read_whole(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))

    assert config.service.store == f"sqlite:///{tmp_path}/data/monitor.sqlite"
    assert (config.service.host, config.service.port) == ("0.0.0.0", 8080)
    assert config.service.secure_cookies is True
    assert config.retention == Retention(raw_days=400)
    assert config.communities == (
        CommunityConfig(
            id="sunrise",
            name="Sunrise energy community",
            timezone="Europe/Madrid",
            currency="EUR",
            price_micro_per_kwh=152_300,
            export_micro_per_kwh=50_000,
            co2_g_per_kwh=190.0,
        ),
    )
    assert config.mqtt == MqttSettings(
        host="broker.lan",
        port=8883,
        username="monitor",
        password="mqtt-secret",
        base_topic="home/emon",
        shelly=(ShellyDevice("shellypro3em-0cb815fc3a50", "house3"),),
        json=(
            JsonDevice(
                "tele/meter/SENSOR",
                "flat2",
                (("power", "$.ENERGY.Power"), ("import_kwh", "$.ENERGY.Total")),
                "$.Time",
            ),
        ),
    )
    assert config.modbus == (
        ModbusDevice("sdm630", "192.168.1.40", "school", interval_s=5.0),
        ModbusDevice("sunspec", "192.168.1.41", "pv-roof", port=1502, device_id=3),
    )
    assert config.datadis is not None
    assert config.datadis.password == "datadis-secret"
    assert config.datadis.supplies == ("ES0021000000000001AB", "ES0021000000000002CD0F")
    assert (config.datadis.hour, config.datadis.base_url) == (7, "https://datadis.es")
    assert "secret" not in repr(config)  # passwords stay out of logs and tracebacks


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))

    assert config.service.store == f"sqlite:///{tmp_path}/petra-monitor.sqlite"
    assert (config.service.host, config.service.port) == ("127.0.0.1", 7470)
    assert config.service.secure_cookies is False
    assert config.retention.raw_days is None
    assert (config.communities, config.mqtt, config.modbus, config.datadis) == ((), None, (), None)


def test_paths_are_taken_from_the_files_folder_not_the_working_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    path = write(folder, GOOD)
    monkeypatch.chdir(tmp_path)

    config = load_config(path.relative_to(tmp_path))

    assert config.service.store == f"sqlite:///{folder}/data/monitor.sqlite"
    assert config.mqtt is not None and config.mqtt.password == "mqtt-secret"


@pytest.mark.parametrize(
    "url",
    ["sqlite:////var/lib/petra/monitor.sqlite", "postgresql+psycopg://petra@db/monitor"],
)
def test_absolute_and_server_urls_are_kept(tmp_path: Path, url: str) -> None:
    config = load_config(write(tmp_path, f'[service]\nstore = "{url}"\n'))

    assert config.service.store == url


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[servce]\n", "unknown key servce (did you mean service?)"),
        ("[service]\nprot = 1\n", "unknown key service.prot (did you mean service.port?)"),
        ("[[community]]\nid='a'\nname='A'\nzone='UTC'\n", "unknown key community[0].zone"),
        ("[mqtt]\n[[mqtt.shelly]]\nprefix='s'\nnode='n'\n", "unknown key mqtt.shelly[0].prefix"),
        (
            "[mqtt]\n[[mqtt.json]]\ntopic='t'\nnode='n'\ninputs={a='$.a'}\ntime='$.t'\n",
            "unknown key mqtt.json[0].time (did you mean mqtt.json[0].time_path?)",
        ),
        ("[[modbus]]\nkind='sdm630'\nhost='h'\nnode='n'\nunit=1\n", "unknown key modbus[0].unit"),
        ("[datadis]\nusername='u'\npasword_file='p'\n", "unknown key datadis.pasword_file"),
    ],
)
def test_an_unknown_key_is_refused_by_its_dotted_name(
    tmp_path: Path, text: str, named: str
) -> None:
    assert named in refused(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[service]\nport = '7460'\n", "service.port must be a whole number"),
        ("[service]\nsecure_cookies = 'yes'\n", "service.secure_cookies must be true or false"),
        ("[service]\nstore = 'not a url'\n", "service.store must be an SQLAlchemy URL"),
        ("[retention]\nraw_days = 0\n", "retention.raw_days must be a whole number from 1"),
        ("service = 3\n", "[service] must be a table"),
        ("[community]\nid='a'\n", "community must be an array of tables"),
        ("[[community]]\nname='A'\n", "community[0].id is missing"),
        ("[[community]]\nid='a b'\nname='A'\n", "community[0].id must be 1-64 of"),
        ("[[community]]\nid='a'\nname='A'\nprice='cheap'\n", "community[0].price is 'cheap'"),
        ("[[community]]\nid='a'\nname='A'\nprice=true\n", "community[0].price must be a price"),
        ("[[community]]\nid='a'\nname='A'\nprice='0.1234567'\n", "at most 6 decimals"),
        ("[[community]]\nid='a'\nname='A'\nexport_price=-0.01\n", "of at least 0"),
        ("[[community]]\nid='a'\nname='A'\ncurrency='euro'\n", "ISO 4217"),
        ("[[community]]\nid='a'\nname='A'\nco2_g_per_kwh=-1\n", "community[0].co2_g_per_kwh"),
        (
            "[[community]]\nid='a'\nname='A'\n[[community]]\nid='a'\nname='B'\n",
            "two communities have the id 'a'",
        ),
        ("[mqtt]\nbase_topic='emon/#'\n", "mqtt.base_topic must be a plain MQTT topic"),
        ("[mqtt]\nbase_topic='emon//x'\n", "mqtt.base_topic must be a plain MQTT topic"),
        ("[mqtt]\npassword_file='secrets/mqtt.txt'\n", "mqtt.password_file needs mqtt.username"),
        ("[mqtt]\n[[mqtt.json]]\ntopic='t'\nnode='n'\n", "mqtt.json[0].inputs must be a table"),
        (
            "[mqtt]\n[[mqtt.json]]\ntopic='t'\nnode='n'\ninputs={a='a.b'}\n",
            "mqtt.json[0].inputs.a: JSON path 'a.b' must start with '$'",
        ),
        (
            "[mqtt]\n[[mqtt.json]]\ntopic='t'\nnode='n'\ninputs={'a b'='$.a'}\n",
            "mqtt.json[0].inputs.a b: an input name is",
        ),
        (
            "[mqtt]\n[[mqtt.json]]\ntopic='s/status/em:0'\nnode='n'\ninputs={a='$.a'}\n"
            "[[mqtt.shelly]]\ntopic_prefix='s'\nnode='m'\n",
            "two MQTT devices read the topic 's/status/em:0'",
        ),
        ("[[modbus]]\nkind='sdm120'\nhost='h'\nnode='n'\n", "modbus[0].kind must be one of"),
        ("[[modbus]]\nkind='sdm630'\nnode='n'\n", "modbus[0].host is missing"),
        ("[[modbus]]\nkind='sdm630'\nhost='h'\nnode='n'\ndevice_id=248\n", "modbus[0].device_id"),
        ("[[modbus]]\nkind='sdm630'\nhost='h'\nnode='n'\ninterval_s=0\n", "modbus[0].interval_s"),
        ("[datadis]\nusername='u'\n", "datadis.password_file is missing"),
        (
            "[datadis]\nusername='u'\npassword_file='secrets/datadis.txt'\nsupplies=['ES12']\n",
            "datadis.supplies: 'ES12' is not a CUPS",
        ),
        (
            "[datadis]\nusername='u'\npassword_file='secrets/datadis.txt'\nhour=24\n",
            "datadis.hour must be a whole number from 0 to 23",
        ),
        (
            "[datadis]\nusername='u'\npassword_file='secrets/datadis.txt'\nbase_url='datadis.es'\n",
            "datadis.base_url must be an http(s) URL",
        ),
        ("[service\n", "is not valid TOML"),
    ],
)
def test_a_bad_value_is_refused_by_its_dotted_name(tmp_path: Path, text: str, named: str) -> None:
    assert named in refused(tmp_path, text)


@pytest.mark.parametrize("port", [0, 65_536, -1])
def test_a_port_outside_tcps_range_is_refused(tmp_path: Path, port: int) -> None:
    for section in ("service", "mqtt"):
        message = refused(tmp_path, f"[{section}]\nport = {port}\n")
        assert f"{section}.port must be a whole number from 1 to 65535" in message
    message = refused(tmp_path, f"[[modbus]]\nkind='sdm630'\nhost='h'\nnode='n'\nport={port}\n")
    assert "modbus[0].port must be a whole number from 1 to 65535" in message


@pytest.mark.parametrize("timezone", ["Europe/Madird", "CET+1", "../etc/passwd", ""])
def test_a_zone_that_is_not_iana_is_refused(tmp_path: Path, timezone: str) -> None:
    message = refused(tmp_path, f"[[community]]\nid='a'\nname='A'\ntimezone='{timezone}'\n")

    assert "community[0].timezone" in message


def test_a_missing_password_file_is_named_with_its_full_path(tmp_path: Path) -> None:
    text = "[mqtt]\nusername='monitor'\npassword_file='nowhere/mqtt.txt'\n"

    message = refused(tmp_path, text)

    assert message.startswith("mqtt.password_file: cannot read ")
    assert str(tmp_path / "nowhere" / "mqtt.txt") in message


def test_an_empty_password_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "[datadis]\nusername='u'\npassword_file='secrets/datadis.txt'\n")
    (tmp_path / "secrets" / "datadis.txt").write_text("\n")

    with pytest.raises(ConfigError, match=r"datadis\.password_file: .* is empty"):
        load_config(path)


@pytest.mark.parametrize(
    ("price", "micro"),
    [("0.15", 150_000), ("0.000001", 1), ("0", 0), ("1.5", 1_500_000), ("0.1", 100_000)],
)
def test_prices_become_exact_micro_units(tmp_path: Path, price: str, micro: int) -> None:
    for written in (f"'{price}'", price):  # as text and as a TOML number
        config = load_config(write(tmp_path, f"[[community]]\nid='a'\nname='A'\nprice={written}\n"))
        assert config.communities[0].price_micro_per_kwh == micro


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_the_documented_example_is_a_valid_configuration(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "mqtt-password.txt").write_text("x\n")
    (folder / "datadis-password.txt").write_text("y\n")
    (folder / "monitor.toml").write_text(text)

    config = load_config(folder / "monitor.toml")

    assert config.mqtt is not None and config.mqtt.shelly and config.mqtt.json
    assert config.modbus and config.communities and config.datadis is not None
