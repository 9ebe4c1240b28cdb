"""`petra` as a user runs it: each command a subprocess, judged by its exit code and output."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from assets import (
    Authorization,
    Epa,
    Fa,
    Genesis,
    Keypair,
    Outpoint,
    Regulate,
    Transaction,
    canonical_json,
    chain_id,
    encode_transaction,
    parse_genesis,
    sign,
    txid,
)
from assets.codec import tx_to_wire
from assets.keyfile import dump_keys, load_keys
from ledger.store import Store
from simulation.scenario import DEFAULT_EPOCH, Scenario, pay

PETRA = (sys.executable, "-c", "from petra.cli import main; main()")
PASSPHRASE_ENV = "PETRA_PASSPHRASE"
PASSPHRASE = "correct horse battery staple"
TIMEOUT_S = 120
BENCH_TIMEOUT_S = 900
MAX_EPA = 1_000  # watts
MAX_ECA = 1_000  # watts
FUNDS = 5_000_000  # micro-units


@dataclass(frozen=True)
class Run:
    """A finished `petra` process: exit code, stdout and stderr as text."""

    code: int
    out: str
    err: str

    @property
    def err_text(self) -> str:
        """stderr with Rich's line wrapping undone, for matching phrases."""
        return " ".join(self.err.split())


def petra(*args: str | Path, passphrase: str | None = None, stdin: bytes = b"") -> Run:
    """Run `petra ARGS` with `$PETRA_PASSPHRASE` set to `passphrase` (unset when None)."""
    env = {k: v for k, v in os.environ.items() if k != PASSPHRASE_ENV}
    if passphrase is not None:
        env[PASSPHRASE_ENV] = passphrase
    done = subprocess.run(
        [*PETRA, *map(str, args)],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=TIMEOUT_S,
        check=False,
    )
    return Run(done.returncode, done.stdout.decode(), done.stderr.decode())


def refused(run: Run) -> str:
    """The error sentence of a command that must refuse cleanly: exit 2, no traceback."""
    assert run.code == 2, run
    assert "Traceback" not in run.err, run.err
    assert run.out == "", run.out
    text = run.err_text
    assert text.startswith("error: "), text
    assert text.count("error:") == 1, text
    return text


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def head_of(url: str) -> tuple[int, str]:
    """The tree size and root hex of the store's last signed head."""
    store = Store(url)
    try:
        head = store.head()
        assert head is not None
        return head.header.tree_size, head.header.root.hex()
    finally:
        store.close()


# ---------------------------------------------------------------- genesis


@dataclass(frozen=True)
class SealedGenesis:
    """A genesis and a key file written by `petra ledger genesis` under a passphrase."""

    run: Run
    genesis_path: Path
    keys_path: Path
    genesis: Genesis
    keys: dict[str, Keypair]


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> SealedGenesis:
    """Made once: sealing and opening a key file costs an Argon2id derivation each."""
    directory = tmp_path_factory.mktemp("sealed")
    genesis_path, keys_path = directory / "genesis.json", directory / "keys.json"
    run = petra(
        "ledger",
        "genesis",
        "--out",
        genesis_path,
        "--keys",
        keys_path,
        "--name",
        Scenario.name,
        "--epoch",
        str(DEFAULT_EPOCH),
        "--dso-keys",
        "2",
        passphrase=PASSPHRASE,
    )
    assert run.code == 0, run
    genesis = parse_genesis(genesis_path.read_bytes())
    keys = load_keys(keys_path.read_bytes(), PASSPHRASE.encode())
    return SealedGenesis(run, genesis_path, keys_path, genesis, keys)


def test_genesis_prints_the_id_of_a_valid_genesis(sealed: SealedGenesis) -> None:
    assert chain_id(sealed.genesis).hex() in sealed.run.out
    assert sealed.genesis.name == Scenario.name
    assert sealed.genesis.epoch == DEFAULT_EPOCH
    assert "warning" not in sealed.run.err


def test_genesis_seals_the_keys_it_names(sealed: SealedGenesis) -> None:
    assert stat.S_IMODE(sealed.keys_path.stat().st_mode) == 0o600
    text = sealed.keys_path.read_text()
    assert all(key.seed.hex() not in text for key in sealed.keys.values())
    assert sorted(sealed.keys) == ["dso-0", "dso-1", "sequencer-0"]
    assert [sealed.keys[f"dso-{n}"].public_key for n in range(2)] == list(sealed.genesis.dso_keys)
    assert [sealed.keys["sequencer-0"].public_key] == list(sealed.genesis.sequencer_keys)


def test_genesis_without_a_passphrase_warns_and_writes_the_keys_in_clear(tmp_path: Path) -> None:
    genesis_path, keys_path = tmp_path / "genesis.json", tmp_path / "keys.json"
    run = petra("ledger", "genesis", "--out", genesis_path, "--keys", keys_path)
    assert run.code == 0, run
    assert "warning" in run.err_text and "in clear" in run.err_text
    genesis = parse_genesis(genesis_path.read_bytes())
    keys = load_keys(keys_path.read_bytes(), None)
    text = keys_path.read_text()
    assert all(key.seed.hex() in text for key in keys.values())
    assert stat.S_IMODE(keys_path.stat().st_mode) == 0o600
    assert [keys["dso-0"].public_key] == list(genesis.dso_keys)
    assert [keys["sequencer-0"].public_key] == list(genesis.sequencer_keys)


@pytest.mark.parametrize("existing", ["genesis", "keys"])
def test_genesis_refuses_to_overwrite_without_force(tmp_path: Path, existing: str) -> None:
    paths = {"genesis": tmp_path / "genesis.json", "keys": tmp_path / "keys.json"}
    paths[existing].write_bytes(b"precious\n")
    args = ("ledger", "genesis", "--out", paths["genesis"], "--keys", paths["keys"])

    assert "--force" in refused(petra(*args))
    assert paths[existing].read_bytes() == b"precious\n"
    assert [p for p in paths.values() if p.exists()] == [paths[existing]]

    forced = petra(*args, "--force")
    assert forced.code == 0, forced
    genesis = parse_genesis(paths["genesis"].read_bytes())
    assert chain_id(genesis).hex() in forced.out
    assert load_keys(paths["keys"].read_bytes(), None)


# ---------------------------------------------------------------- replay


@dataclass
class ReplayFile:
    """JSON lines for `petra ledger replay` and the stdout they must give, line by line."""

    lines: list[bytes] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)

    def add(self, tx: Transaction, word: str) -> Transaction:
        self.add_raw(encode_transaction(tx), txid(tx).hex(), word)
        return tx

    def add_raw(self, raw: bytes, name: str, word: str) -> None:
        self.lines.append(raw)
        self.expected.append(f"{name} {word}")

    def garbage(self, raw: bytes) -> None:
        self.lines.append(raw)
        self.expected.append("- malformed")

    def block_time(self, seconds: int, *, spaced: bool = False) -> None:
        self.lines.append(
            b'{"block_time": %d}' % seconds if spaced else b'{"block_time":%d}' % seconds
        )

    def blank(self, line: bytes = b"") -> None:
        self.lines.append(line)

    @property
    def data(self) -> bytes:
        return b"\n".join(self.lines) + b"\n"

    @property
    def accepted(self) -> int:
        return sum(line.endswith(" ok") for line in self.expected)


def _wire_bytes(tx: Transaction, **changes: Any) -> tuple[bytes, str]:
    """`tx`'s wire object with `changes`, canonically encoded, and its id computed here."""
    wire = {**tx_to_wire(tx), **changes}
    unsigned = {k: v for k, v in wire.items() if k not in ("signature", "signatures")}
    return canonical_json(wire), hashlib.sha256(canonical_json(unsigned)).hexdigest()


def community_replay(scenario: Scenario) -> ReplayFile:
    """One meter, one trade, and one of each rejection the wire and the rules give.

    Four blocks are accepted, five transactions in all; the clock ends in interval 2.
    """
    meter, alice, bob, carol = (Keypair.generate() for _ in range(4))
    replay = ReplayFile()
    replay.add(
        scenario.regulate(
            0, authorize=[Authorization("meter-1", meter.public_key, MAX_EPA, MAX_ECA)]
        ),
        "ok",
    )
    replay.block_time(scenario.time_in(1))
    funding = replay.add(
        scenario.issue("meter-1", meter, 1, [pay(Fa(FUNDS), alice), pay(Epa(600, 2, 3), alice)]),
        "ok",
    )
    # 600 W + 400 W in interval 2 is not strictly below MAX_EPA
    replay.add(scenario.issue("meter-1", meter, 2, [pay(Epa(400, 2, 2), alice)]), "limit_exceeded")
    payment = replay.add(
        scenario.transfer([Outpoint(txid(funding), 0)], [pay(Fa(FUNDS), bob)], alice), "ok"
    )
    replay.blank()
    replay.blank(b"   \t")
    replay.block_time(scenario.time_in(2, 30), spaced=True)
    replay.garbage(b"this is not a transaction")
    # a lone surrogate once stopped the replay (issue 14), and so did deep nesting
    replay.garbage(b'{"type":"transfer","x":"\\ud800"}')
    replay.garbage(b"[" * 986 + b"]" * 986)
    # floats have no canonical JSON, hence no transaction id
    replay.garbage(encode_transaction(payment).replace(b'"amount":5000000', b'"amount":5000000.0'))
    # the payment again, spelt with spaces: not canonical, but it has the payment's id
    spaced = json.dumps(tx_to_wire(payment), sort_keys=True).encode()
    replay.add_raw(spaced, txid(payment).hex(), "malformed")
    oversized, oversized_id = _wire_bytes(payment, memo="x" * 300_000)
    replay.add_raw(oversized, oversized_id, "too_large")
    replay.add(Scenario().regulate(0), "wrong_chain")
    replay.add(funding, "duplicate")
    replay.add(
        scenario.transfer([Outpoint(txid(funding), 0)], [pay(Fa(FUNDS), carol)], alice),
        "double_spend",
    )
    replay.add(
        scenario.transfer(
            [Outpoint(txid(funding), 1)],
            [pay(Epa(600, 2, 2), bob), pay(Epa(600, 3, 3), carol)],
            alice,
        ),
        "ok",
    )
    replay.block_time(scenario.time_in(1))  # backwards: warned, and the clock stays
    replay.add(scenario.regulate(1, price_consumption=250_000), "regulation_in_past")
    replay.add(scenario.regulate(2, price_consumption=250_000), "ok")
    return replay


@pytest.fixture
def scenario() -> Scenario:
    return Scenario()


@pytest.fixture
def genesis_path(tmp_path: Path, scenario: Scenario) -> Path:
    path = tmp_path / "genesis.json"
    path.write_bytes(scenario.genesis_raw)
    return path


@pytest.fixture
def replay_file(scenario: Scenario) -> ReplayFile:
    return community_replay(scenario)


@pytest.fixture
def input_path(tmp_path: Path, replay_file: ReplayFile) -> Path:
    path = tmp_path / "transactions.jsonl"
    path.write_bytes(replay_file.data)
    return path


@pytest.mark.parametrize("options", [(), ("--no-parallel",)], ids=["parallel", "serial"])
def test_replay_prints_one_outcome_per_transaction_in_input_order(
    genesis_path: Path,
    input_path: Path,
    replay_file: ReplayFile,
    scenario: Scenario,
    options: tuple[str, ...],
) -> None:
    """Both modes print exactly the expected lines, so `--no-parallel` prints the same."""
    run = petra("ledger", "replay", "--genesis", genesis_path, *options, input_path)
    assert run.code == 0, run
    assert run.out.splitlines() == replay_file.expected
    rejected = len(replay_file.expected) - replay_file.accepted
    summary = f"{replay_file.accepted} accepted, {rejected} rejected, 4 blocks; tree size 5, root "
    assert summary in run.err_text
    backwards = f"block_time {scenario.time_in(1)} is before {scenario.time_in(2, 30)}"
    assert f"warning: line {len(replay_file.lines) - 2}: {backwards}" in run.err_text
    assert f"the clock stays at {scenario.time_in(2, 30)}" in run.err_text


def test_replay_reads_stdin(genesis_path: Path, replay_file: ReplayFile) -> None:
    run = petra("ledger", "replay", "--genesis", genesis_path, "-", stdin=replay_file.data)
    assert run.code == 0, run
    assert run.out.splitlines() == replay_file.expected


def test_replay_into_a_store_persists_and_a_second_replay_resumes_after_it(
    tmp_path: Path, genesis_path: Path, input_path: Path, replay_file: ReplayFile
) -> None:
    url = sqlite_url(tmp_path / "ledger.sqlite")
    first = petra("ledger", "replay", "--genesis", genesis_path, "--store", url, input_path)
    assert first.code == 0, first
    assert first.out.splitlines() == replay_file.expected
    size, root = head_of(url)
    assert size == replay_file.accepted
    assert f"root {root}" in first.err_text

    second = petra("ledger", "replay", "--genesis", genesis_path, "--store", url, input_path)
    assert second.code == 0, second
    assert second.out == ""  # the store held all of it: nothing is judged twice
    assert "resumed after line" in second.err_text
    assert head_of(url) == (size, root)


def test_a_replay_resumed_on_its_store_ends_where_a_clean_replay_ends(
    tmp_path: Path, scenario: Scenario, genesis_path: Path
) -> None:
    """Rejections that depend on the clock are not judged again at a later clock."""
    meter, owner = Keypair.generate(), Keypair.generate()
    early = scenario.issue("m1", meter, 1, [pay(Epa(10, 5, 5), owner)])  # before authorization
    later = scenario.issue("m1", meter, 2, [pay(Epa(10, 5, 5), owner)])
    lines = [
        b'{"block_time": %d}' % scenario.time_in(0),
        encode_transaction(
            scenario.regulate(0, authorize=[Authorization("m1", meter.public_key, 100, 100)])
        ),
        encode_transaction(early),
        b'{"block_time": %d}' % scenario.time_in(1),
        encode_transaction(later),
        b'{"block_time": %d}' % scenario.time_in(2),
        encode_transaction(scenario.issue("m1", meter, 3, [pay(Epa(10, 6, 6), owner)])),
    ]
    whole, part = tmp_path / "whole.jsonl", tmp_path / "part.jsonl"
    whole.write_bytes(b"\n".join(lines) + b"\n")
    part.write_bytes(b"\n".join(lines[:5]) + b"\n")  # as a kill after block 2 leaves it
    clean = sqlite_url(tmp_path / "clean.sqlite")
    resumed = sqlite_url(tmp_path / "resumed.sqlite")
    full = petra("ledger", "replay", "--genesis", genesis_path, "--store", clean, whole)
    assert [line.split()[1] for line in full.out.splitlines()] == [
        "ok",
        "meter_unknown",
        "ok",
        "ok",
    ]
    start = petra("ledger", "replay", "--genesis", genesis_path, "--store", resumed, part)
    assert start.code == 0, start
    rest = petra("ledger", "replay", "--genesis", genesis_path, "--store", resumed, whole)
    assert rest.code == 0, rest
    assert rest.out.splitlines() == full.out.splitlines()[3:]  # only what was not yet judged
    assert "resumed after line 5" in rest.err_text
    assert head_of(resumed) == head_of(clean)


def test_replay_refuses_a_store_of_another_genesis(
    tmp_path: Path, genesis_path: Path, input_path: Path
) -> None:
    url = sqlite_url(tmp_path / "ledger.sqlite")
    assert (
        petra("ledger", "replay", "--genesis", genesis_path, "--store", url, input_path).code == 0
    )
    size_root = head_of(url)
    other = tmp_path / "other-genesis.json"
    other.write_bytes(Scenario().genesis_raw)

    run = petra("ledger", "replay", "--genesis", other, "--store", url, input_path)
    assert "another genesis" in refused(run)
    assert head_of(url) == size_root


def test_replay_refuses_a_missing_input_file(tmp_path: Path, genesis_path: Path) -> None:
    run = petra("ledger", "replay", "--genesis", genesis_path, tmp_path / "missing.jsonl")
    assert "no such file" in refused(run)


@pytest.mark.parametrize(
    "content",
    [
        b"not json\n",
        b'{"v": 1}\n',
        b"[]\n",
        b'{"v": 1, "name": "x", "interval_s": 900.5, "epoch": 0, "currency": "EUR", '
        b'"dso_keys": [], "sequencer_keys": []}\n',
    ],
    ids=["not-json", "missing-fields", "not-an-object", "float-interval"],
)
def test_replay_refuses_an_invalid_genesis(
    tmp_path: Path, input_path: Path, content: bytes
) -> None:
    genesis_path = tmp_path / "genesis.json"
    genesis_path.write_bytes(content)
    run = petra("ledger", "replay", "--genesis", genesis_path, input_path)
    assert "is not a valid genesis" in refused(run)


def test_replay_refuses_a_missing_genesis(tmp_path: Path, input_path: Path) -> None:
    run = petra("ledger", "replay", "--genesis", tmp_path / "missing.json", input_path)
    assert run.code == 2, run
    assert "Traceback" not in run.err
    assert "does not exist" in run.err_text


def _sealed_replay(sealed: SealedGenesis) -> ReplayFile:
    """Two regulations of the CLI-made genesis, the second signed by its second DSO key."""
    chain, genesis = chain_id(sealed.genesis), sealed.genesis

    def regulate(time: int, nonce: int, key: Keypair) -> Transaction:
        return sign(Regulate(chain, time, (), (), 200_000, None, nonce), key)

    replay = ReplayFile()
    replay.add(regulate(0, 1, sealed.keys["dso-0"]), "ok")
    replay.block_time(genesis.interval_start(1))
    replay.add(regulate(1, 2, sealed.keys["dso-1"]), "ok")
    return replay


@pytest.mark.parametrize("source", ["environment", "file"])
def test_replay_with_keys_signs_heads_the_genesis_verifies(
    tmp_path: Path, sealed: SealedGenesis, source: str
) -> None:
    replay = _sealed_replay(sealed)
    input_path = tmp_path / "transactions.jsonl"
    input_path.write_bytes(replay.data)
    url = sqlite_url(tmp_path / "ledger.sqlite")
    args: list[str | Path] = [
        "ledger",
        "replay",
        "--genesis",
        sealed.genesis_path,
        "--keys",
        sealed.keys_path,
        "--store",
        url,
        input_path,
    ]
    if source == "file":
        passphrase_file = tmp_path / "passphrase"
        passphrase_file.write_text(PASSPHRASE + "\n")
        run = petra(*args, "--passphrase-file", passphrase_file)
    else:
        run = petra(*args, passphrase=PASSPHRASE)
    assert run.code == 0, run
    assert run.out.splitlines() == replay.expected
    store = Store(url)
    try:
        heads = list(store.heads())
    finally:
        store.close()
    assert [h.header.height for h in heads] == [1, 2]
    assert all(h.verifies(sealed.genesis.sequencer_keys) for h in heads)


def test_replay_without_keys_signs_heads_that_do_not_verify(
    tmp_path: Path, sealed: SealedGenesis
) -> None:
    """A conformance replay signs with a throw-away key: the same roots, no valid heads."""
    replay = _sealed_replay(sealed)
    input_path = tmp_path / "transactions.jsonl"
    input_path.write_bytes(replay.data)
    url = sqlite_url(tmp_path / "ledger.sqlite")
    run = petra("ledger", "replay", "--genesis", sealed.genesis_path, "--store", url, input_path)
    assert run.code == 0, run
    store = Store(url)
    try:
        head = store.head()
    finally:
        store.close()
    assert head is not None
    assert not head.verifies(sealed.genesis.sequencer_keys)


@pytest.mark.parametrize(
    ("keys", "passphrase", "phrase"),
    [
        ("dso-only", None, "none of the genesis's sequencer keys"),
        ("other-genesis", None, "none of the genesis's sequencer keys"),
        ("sealed", "not the passphrase", "wrong passphrase"),
        (
            "sealed",
            None,
            "give its passphrase in a file (--passphrase-file) or in $PETRA_PASSPHRASE",
        ),
    ],
)
def test_replay_refuses_keys_that_cannot_sign_for_the_genesis(
    tmp_path: Path,
    sealed: SealedGenesis,
    keys: str,
    passphrase: str | None,
    phrase: str,
) -> None:
    input_path = tmp_path / "transactions.jsonl"
    input_path.write_bytes(_sealed_replay(sealed).data)
    keys_path = tmp_path / "keys.json"
    if keys == "dso-only":
        keys_path.write_bytes(dump_keys({"dso-0": sealed.keys["dso-0"]}, None))
    elif keys == "other-genesis":
        made = petra("ledger", "genesis", "--out", tmp_path / "other.json", "--keys", keys_path)
        assert made.code == 0, made
    else:
        keys_path = sealed.keys_path
    url = sqlite_url(tmp_path / "ledger.sqlite")
    run = petra(
        "ledger",
        "replay",
        "--genesis",
        sealed.genesis_path,
        "--keys",
        keys_path,
        "--store",
        url,
        input_path,
        passphrase=passphrase,
    )
    assert phrase in refused(run)
    assert not (tmp_path / "ledger.sqlite").exists()


# ---------------------------------------------------------------- errors on odd paths


def test_an_error_naming_a_path_with_brackets_is_still_one_sentence(
    tmp_path: Path, genesis_path: Path
) -> None:
    missing = tmp_path / "[/x]" / "transactions.jsonl"
    text = refused(petra("ledger", "replay", "--genesis", genesis_path, missing))
    assert str(missing) in text


def test_an_error_with_a_long_path_stays_on_one_line(tmp_path: Path, genesis_path: Path) -> None:
    missing = tmp_path / ("long-directory-name-" * 5) / "transactions.jsonl"
    run = petra("ledger", "replay", "--genesis", genesis_path, missing)
    refused(run)
    assert len(run.err.splitlines()) == 1, run.err
    assert str(missing) in run.err


@pytest.mark.parametrize(
    "url",
    ["not a url", "sqlite:///{tmp}/no/such/dir/ledger.sqlite"],
    ids=["unparsable", "no-such-directory"],
)
def test_replay_refuses_a_store_it_cannot_open(
    tmp_path: Path, genesis_path: Path, input_path: Path, url: str
) -> None:
    store = url.format(tmp=tmp_path)
    refused(petra("ledger", "replay", "--genesis", genesis_path, "--store", store, input_path))


def test_genesis_keys_stay_private_over_a_left_over_temporary_file(tmp_path: Path) -> None:
    keys_path = tmp_path / "keys.json"
    left_over = tmp_path / ".keys.json.tmp"  # as a crash between open and rename leaves it
    left_over.touch(mode=0o644)
    left_over.chmod(0o644)
    run = petra("ledger", "genesis", "--out", tmp_path / "genesis.json", "--keys", keys_path)
    assert run.code == 0, run
    assert stat.S_IMODE(keys_path.stat().st_mode) == 0o600


# ---------------------------------------------------------------- bench and help


@pytest.mark.slow
def test_bench_ledger_prints_one_json_object() -> None:
    done = subprocess.run(
        [*PETRA, "bench", "ledger", "--json", "--large", "60000"],
        capture_output=True,
        timeout=BENCH_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 1, lines
    result = json.loads(lines[0])
    assert isinstance(result, dict)
    measures = ("commit_tps", "verify_per_s", "ratio", "tps_at_1e4", "tps_at_1e6")
    for measure in measures:
        value = result[measure]
        assert isinstance(value, int | float) and not isinstance(value, bool), measure
        assert value > 0, measure
    # ratio is rounded from the unrounded rates; the printed rates are rounded to 0.1
    assert result["ratio"] == pytest.approx(result["commit_tps"] / result["verify_per_s"], abs=1e-3)
    # the rates at both sizes come from three pairs of windows, a young ledger's and the large
    # one's, measured one after the other; the size ratio is that of the rates over all of them
    assert result["paired"] is True
    assert len(result["size_ratios"]) == 3
    assert all(r > 0 for r in result["size_ratios"])
    assert result["size_ratio"] == pytest.approx(
        result["tps_at_1e6"] / result["tps_at_1e4"], abs=1e-3
    )


@pytest.mark.parametrize(
    ("args", "commands"),
    [
        ((), ("ledger", "bench")),
        (("ledger",), ("genesis", "replay", "demo")),
        (("bench",), ("ledger",)),
    ],
)
def test_help_lists_the_sub_commands(args: tuple[str, ...], commands: tuple[str, ...]) -> None:
    run = petra(*args, "--help")
    assert run.code == 0, run
    assert "Usage" in run.out
    listed = {line.strip(" │|").split(" ")[0] for line in run.out.splitlines()}
    assert set(commands) <= listed, run.out


def test_replay_can_authorize_meters_for_interval_zero_from_before_the_epoch(
    tmp_path: Path, scenario: Scenario, genesis_path: Path
) -> None:
    meter, owner = Keypair.generate(), Keypair.generate()
    regulation = scenario.regulate(
        -1, authorize=[Authorization("m1", meter.public_key, MAX_EPA, MAX_ECA)]
    )
    issue = scenario.issue("m1", meter, 1, [pay(Epa(10, 0, 0), owner)])
    lines = [
        b'{"block_time": %d}' % scenario.time_in(-1),
        encode_transaction(regulation),
        b'{"block_time": 1.5}',  # not a time: warned about and skipped
        b'{"block_time": %d}' % 2**64,
        b'{"block_time": %d}' % scenario.time_in(0),
        encode_transaction(issue),
    ]
    path = tmp_path / "chain.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    run = petra("ledger", "replay", "--genesis", genesis_path, path)
    assert run.code == 0, run
    assert run.out.splitlines() == [f"{txid(regulation).hex()} ok", f"{txid(issue).hex()} ok"]
    assert run.err_text.count("block_time must be whole unix seconds") == 2


def test_genesis_refuses_a_missing_folder_before_writing_anything(tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    run = petra("ledger", "genesis", "--out", tmp_path / "no" / "genesis.json", "--keys", keys)
    assert "does not exist" in refused(run)
    assert not keys.exists()
