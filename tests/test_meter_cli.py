"""`petra meter keygen`, `run`'s refusals and `withdraw`'s assets in process, and `OwnerClient`'s
requests and errors over a mock transport."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from assets import Epa, Fa, Keypair, Output
from assets.codec import output_to_wire
from assets.keyfile import dump_keys, is_sealed, load_keys
from assets.signing import verify
from petra.cli import app
from simulation.scenario import Scenario
from smartmeter.api import request_message
from smartmeter.owner_client import OwnerApiError, OwnerClient

PASSPHRASE = "correct horse battery staple"
PASSPHRASE_ENV = "PETRA_PASSPHRASE"
METER_ID = "ES0021000000000001AB"
NOW = 1_700_000_000.75
URL = "http://meter.test:7440"


def keygen(*args: str | Path, passphrase: str | None) -> Result:
    """`petra meter keygen ARGS` with `$PETRA_PASSPHRASE` set to `passphrase` (unset: None)."""
    return CliRunner().invoke(
        app, ["meter", "keygen", *map(str, args)], env={PASSPHRASE_ENV: passphrase}
    )


def refused(result: Result) -> str:
    """The error sentence of a command that must refuse cleanly: exit 2, one line, no trace."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


# -- keygen


def test_keygen_writes_a_sealed_key_file_and_prints_its_public_key(tmp_path: Path) -> None:
    out = tmp_path / "meter-keys.json"
    done = keygen("--out", out, passphrase=PASSPHRASE)

    assert done.exit_code == 0, done.output
    raw = out.read_bytes()
    assert is_sealed(raw)
    keys = load_keys(raw, PASSPHRASE.encode())
    assert list(keys) == ["meter"]
    assert done.stdout == f"{keys['meter'].public_key.hex()}\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "sealed in" in done.stderr


def test_keygen_names_the_key_and_reads_a_passphrase_file(tmp_path: Path) -> None:
    out = tmp_path / "owner-keys.json"
    passphrase_file = tmp_path / "passphrase"
    passphrase_file.write_text("from a file\nignored second line\n")
    done = keygen(
        "--out", out, "--name", "owner", "--passphrase-file", passphrase_file, passphrase=None
    )

    assert done.exit_code == 0, done.output
    keys = load_keys(out.read_bytes(), b"from a file")
    assert done.stdout.strip() == keys["owner"].public_key.hex()


def test_keygen_refuses_an_existing_file_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "meter-keys.json"
    out.write_text("precious")

    sentence = refused(keygen("--out", out, passphrase=PASSPHRASE))

    assert "exists" in sentence and "--force" in sentence
    assert out.read_text() == "precious"
    forced = keygen("--out", out, "--force", passphrase=PASSPHRASE)
    assert forced.exit_code == 0, forced.output
    assert (
        forced.stdout.strip()
        == load_keys(out.read_bytes(), PASSPHRASE.encode())["meter"].public_key.hex()
    )


def test_two_keygens_make_two_keys(tmp_path: Path) -> None:
    first = keygen("--out", tmp_path / "a.json", passphrase=PASSPHRASE)
    second = keygen("--out", tmp_path / "b.json", passphrase=PASSPHRASE)
    assert first.exit_code == second.exit_code == 0
    assert first.stdout != second.stdout


@pytest.mark.parametrize("passphrase", [None, ""])
def test_keygen_refuses_a_missing_or_empty_passphrase(
    passphrase: str | None, tmp_path: Path
) -> None:
    out = tmp_path / "meter-keys.json"

    sentence = refused(keygen("--out", out, passphrase=passphrase))

    assert "passphrase" in sentence
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left either


def test_keygen_refuses_an_empty_passphrase_file(tmp_path: Path) -> None:
    empty = tmp_path / "passphrase"
    empty.write_text("")
    out = tmp_path / "meter-keys.json"

    sentence = refused(keygen("--out", out, "--passphrase-file", empty, passphrase=PASSPHRASE))

    assert "passphrase" in sentence
    assert not out.exists()


def test_keygen_names_a_file_it_cannot_write(tmp_path: Path) -> None:
    out = tmp_path / "no-such-dir" / "meter-keys.json"
    sentence = refused(keygen("--out", out, passphrase=PASSPHRASE))
    assert f"cannot write {out}" in sentence


def test_withdraw_reports_a_bad_asset_without_a_traceback(tmp_path: Path) -> None:
    keys = tmp_path / "owner-keys.json"
    assert keygen("--out", keys, "--name", "owner", passphrase=PASSPHRASE).exit_code == 0
    done = CliRunner().invoke(
        app,
        ["meter", "withdraw", "epa:lots", "--meter-id", METER_ID, "--keys", str(keys)],
        env={PASSPHRASE_ENV: PASSPHRASE},
    )
    assert done.exit_code == 2
    assert "'epa:lots' is not an asset" in " ".join(done.stderr.split())
    assert "Traceback" not in done.output


# -- OwnerClient


class Meter:
    """A mock meter: records each request and answers with `answer` (or raises it)."""

    def __init__(self, answer: httpx.Response | Exception) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def client(self, owner: Keypair) -> OwnerClient:
        return OwnerClient(
            METER_ID, owner, URL + "/", clock=lambda: NOW, transport=httpx.MockTransport(self)
        )


def test_each_call_is_a_signed_fresh_request_for_its_path() -> None:
    owner = Keypair.generate()
    meter = Meter(httpx.Response(201, json={"address": "ab" * 32, "index": 3}))
    address = bytes(range(32))
    with meter.client(owner) as client:
        assert client.deposit_address() == {"address": "ab" * 32, "index": 3}
        client.status()
        client.bills()
        client.withdraw([Output(Epa(1500, 120, 121), address), Output(Fa(7), address)])

    paths = ["/v1/deposit-addresses", "/v1/status", "/v1/bills", "/v1/withdrawals"]
    assert [(r.method, r.url.path, r.url.host) for r in meter.requests] == [
        ("POST", path, "meter.test") for path in paths
    ]
    bodies = [json.loads(r.content) for r in meter.requests]
    for request, body, path in zip(meter.requests, bodies, paths, strict=True):
        assert request.headers["content-type"] == "application/json"
        assert (body["v"], body["path"], body["meter"], body["at"]) == (1, path, METER_ID, int(NOW))
        assert len(body["nonce"]) == 32 and int(body["nonce"], 16) >= 0
        unsigned = {k: v for k, v in body.items() if k != "signature"}
        signature = bytes.fromhex(body["signature"])
        assert verify(owner.public_key, request_message(unsigned), signature)
        assert not verify(Keypair.generate().public_key, request_message(unsigned), signature)
    assert len({body["nonce"] for body in bodies}) == 4  # unique, so none is a replay
    assert bodies[3]["outputs"] == [
        output_to_wire(Output(Epa(1500, 120, 121), address)),
        output_to_wire(Output(Fa(7), address)),
    ]
    assert set(bodies[0]) == {"v", "path", "meter", "at", "nonce", "signature"}


def test_a_changed_field_no_longer_verifies() -> None:
    owner = Keypair.generate()
    meter = Meter(httpx.Response(200, json={}))
    with meter.client(owner) as client:
        client.call("/v1/status")
    body = json.loads(meter.requests[0].content)
    unsigned = {k: v for k, v in body.items() if k != "signature"}
    tampered = {**unsigned, "path": "/v1/withdrawals"}
    assert not verify(owner.public_key, request_message(tampered), bytes.fromhex(body["signature"]))


def test_an_unreachable_meter_is_status_0_unreachable() -> None:
    meter = Meter(httpx.ConnectError("connection refused"))
    with meter.client(Keypair.generate()) as client, pytest.raises(OwnerApiError) as error:
        client.status()
    assert (error.value.status, error.value.code) == (0, "unreachable")
    assert URL in error.value.message and "connection refused" in error.value.message


def test_a_timeout_is_unreachable_too() -> None:
    meter = Meter(httpx.ReadTimeout("timed out"))
    with meter.client(Keypair.generate()) as client, pytest.raises(OwnerApiError) as error:
        client.bills()
    assert (error.value.status, error.value.code) == (0, "unreachable")


@pytest.mark.parametrize("status", [200, 502])
def test_an_answer_that_is_not_json_is_a_protocol_error(status: int) -> None:
    meter = Meter(httpx.Response(status, text="<html>Bad Gateway</html>"))
    with meter.client(Keypair.generate()) as client, pytest.raises(OwnerApiError) as error:
        client.status()
    assert (error.value.status, error.value.code) == (status, "protocol")
    assert "<html>Bad Gateway</html>" in error.value.message


def test_the_meters_error_body_becomes_the_errors_code_and_message() -> None:
    body = {"error": {"code": "credit_exceeded", "message": "the credit line is used up"}}
    meter = Meter(httpx.Response(422, json=body))
    with meter.client(Keypair.generate()) as client, pytest.raises(OwnerApiError) as error:
        client.withdraw([Output(Fa(1), bytes(32))])
    assert (error.value.status, error.value.code, error.value.message) == (
        422,
        "credit_exceeded",
        "the credit line is used up",
    )
    assert str(error.value) == "credit_exceeded: the credit line is used up"


NOT_THE_COMMON_SHAPE: list[object] = [
    {"detail": "Not Found"},
    ["not", "an", "object"],
    {"error": {}},
    {"error": "Not Found"},
    {"error": None},
]


@pytest.mark.parametrize("body", NOT_THE_COMMON_SHAPE)
def test_an_error_without_the_common_shape_is_a_protocol_error(body: object) -> None:
    """As every PETra client reads it (`service.client.refusal`)."""
    answer = httpx.Response(404, json=body)
    meter = Meter(answer)
    with meter.client(Keypair.generate()) as client, pytest.raises(OwnerApiError) as error:
        client.status()
    assert (error.value.status, error.value.code, error.value.message) == (
        404,
        "protocol",
        "HTTP 404 without the error shape",
    )


# -- run, refusing to start


def meter_config(tmp_path: Path, **meter: str) -> Path:
    """A configuration in `tmp_path` whose ledger is nowhere (port 9 is discard's)."""
    fields = {
        "id": METER_ID,
        "keys": "meter-keys.json",
        "genesis": "genesis.json",
        "owner": Keypair.generate().public_key.hex(),
        "ledger": "http://127.0.0.1:9",
        "store": f"sqlite:///{tmp_path / 'meter.sqlite'}",
        **meter,
    }
    lines = [f'{key} = "{value}"' for key, value in fields.items()]
    config = tmp_path / "meter.toml"
    config.write_text("[meter]\n" + "\n".join(lines) + '\n\n[[source]]\nkind = "sdm630"\n')
    (tmp_path / "genesis.json").write_bytes(Scenario().genesis_raw)
    return config


def run(config: Path, passphrase: str | None = PASSPHRASE) -> Result:
    return CliRunner().invoke(
        app, ["meter", "run", "--config", str(config)], env={PASSPHRASE_ENV: passphrase}
    )


def test_run_refuses_a_configuration_naming_the_key(tmp_path: Path) -> None:
    config = meter_config(tmp_path, credit="5")
    assert "unknown key meter.credit" in refused(run(config))


def test_run_refuses_a_meter_key_in_clear(tmp_path: Path) -> None:
    config = meter_config(tmp_path)
    (tmp_path / "meter-keys.json").write_bytes(dump_keys({"meter": Keypair.generate()}, None))
    assert "holds its keys in clear" in refused(run(config, passphrase=None))


def test_run_refuses_a_key_file_without_the_meter_key(tmp_path: Path) -> None:
    config = meter_config(tmp_path)
    keys = dump_keys({"owner": Keypair.generate()}, PASSPHRASE.encode())
    (tmp_path / "meter-keys.json").write_bytes(keys)
    assert "no key named 'meter'" in refused(run(config))


def test_run_refuses_a_wrong_passphrase(tmp_path: Path) -> None:
    config = meter_config(tmp_path)
    keys = dump_keys({"meter": Keypair.generate()}, PASSPHRASE.encode())
    (tmp_path / "meter-keys.json").write_bytes(keys)
    assert "meter-keys.json" in refused(run(config, passphrase="not it"))
