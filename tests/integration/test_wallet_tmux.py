"""`petra wallet` at a terminal, checked as a person would: typed into tmux panes 80 columns
wide, read off the screen. Two prosumers create their wallets at the hidden passphrase prompt
and trade over a real ledger node and a real `petra bidstore serve` process
(test_wallet_market.py's). No line wraps mid-word, and no table cuts two ids to one."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.tmux import Pane, tmux_server
from test_cli import PASSPHRASE_ENV, petra

from assets import Eca, Epa, Fa
from assets.model import Asset, Output
from bidstore.orders import payment
from petra.vocabulary import ELLIPSIS, interval_label
from wallet.keystore import WalletFile
from wallet.wallet import Wallet

from .test_bidstore import AHEAD, INTERVAL_S, Chain
from .test_wallet_market import chain_fixture as chain_fixture  # the ledger node
from .test_wallet_market import store_url_fixture as store_url_fixture  # the bid store process

PASSPHRASE = "lantern-orchard-1847"  # typed at every prompt; never on any screen
MISTYPED = "lantern-orchard-1874"
WAIT_S = 180  # one command on a loaded 2-core box: Python's imports, Argon2id, the ledger
SETTLE_S = 120  # from the seller's accept to both balances showing the trade
ECHO_S = 1.0  # long enough for a terminal to echo typed keys, were they echoed
POWER, PRICE = 1000, 7_200_000  # W, micro-units per kWh: 0.002 EUR over a one-second interval
WIDTH = 80  # every pane's columns, as a plain terminal's
PROMPT_TYPED = re.compile(r"^\[\d+\] \$( |$)")  # a command line as typed (the test's, not petra's)
AFTER_TABLE = ("as of ", "pending:", "whole addresses")
WRONG_PASSPHRASE = "wrong passphrase, or the wallet file is damaged: try again, or restore a backup"


@dataclass
class Person:
    """A prosumer at a terminal with a wallet file, and every screen the terminal showed."""

    pane: Pane
    wallet: str  # as typed: relative to the pane's working directory
    screens: list[str] = field(default_factory=list)

    def petra(self, command: str, *, passphrase: str = PASSPHRASE, code: int = 0) -> str:
        """`petra wallet COMMAND --wallet W` typed, the passphrase typed at its prompt; the
        screen once the prompt is back, after the command exited with `code`."""
        self.pane.run(f"petra wallet {command} --wallet {self.wallet}", timeout_s=WAIT_S)
        self.pane.wait_for("Passphrase:", timeout_s=WAIT_S)
        self.pane.line(passphrase)
        return self.done(code)

    def done(self, code: int = 0) -> str:
        exited, screen = self.pane.finished(timeout_s=WAIT_S)
        self.screens.append(screen)
        assert exited == code, screen
        return screen

    def type_hidden(self, secret: str) -> None:
        """Type `secret` at a hidden prompt, check the screen does not show it, press Enter."""
        self.pane.type(secret)
        time.sleep(ECHO_S)
        screen = self.pane.screen()
        self.screens.append(screen)
        assert secret not in screen, screen
        self.pane.press("Enter")


def rows(screen: str) -> list[list[str]]:
    """The body rows of the table on `screen` (a header, a rule of `─`, rows), each as its
    cells' text: the columns start where their headers do."""
    lines = screen.splitlines()
    rules = [n for n, line in enumerate(lines) if line and set(line) <= {"─", " "}]
    if not rules:
        return []
    header = lines[rules[0] - 1]
    starts = [m.start() for m in re.finditer(r"(?:^|(?<=  ))\S", header)]
    found = []
    for line in lines[rules[0] + 1 :]:
        if not line or PROMPT_TYPED.match(line) or line.startswith(AFTER_TABLE):
            break
        ends = [*starts[1:], None]
        found.append([line[a:b].strip() for a, b in zip(starts, ends, strict=True)])
    return found


def check_screen(screen: str) -> None:
    """What petra printed fits the pane: no line wrapped by the terminal (the pane's lines
    come joined, so a wrapped one is longer than the pane), so none cut mid-word."""
    for line in screen.splitlines():
        if not PROMPT_TYPED.match(line):
            assert len(line) <= WIDTH, f"a line wraps at {WIDTH} columns:\n{screen}"


def alike(shown: list[str], whole: list[str]) -> None:
    """The ids a table showed, `shown`, against the ids they stand for, `whole` (in the same
    order): each elided id stands for one id, and two ids never look alike."""
    assert len(shown) == len(whole), (shown, whole)
    pairs = set(zip(shown, whole, strict=True))
    for short, full in pairs:
        head, _, tail = short.partition(ELLIPSIS)
        assert full.startswith(head) and full.endswith(tail), (short, full)
    assert len({s for s, _ in pairs}) == len({f for _, f in pairs}) == len(pairs), pairs


def words(screen: str) -> str:
    """The screen's text with Rich's line breaks (at the terminal's width) undone."""
    return " ".join(screen.split())


def unspent(screen: str) -> list[tuple[str, str]]:
    """(kind, unspent) of each `petra wallet balance` row holding something unspent."""
    return sorted((r[0], r[3]) for r in rows(screen) if r[3] not in ("0 W", "0.000000 EUR"))


def fund(person: Person, tmp_path: Path, chain: Chain, assets: list[Asset]) -> None:
    """The meter issues `assets` to a fresh address of the person's wallet (test-side)."""
    wallet = str(tmp_path / person.wallet)
    made = petra("wallet", "address", "new", "--wallet", wallet, "--json", passphrase=PASSPHRASE)
    assert made.code == 0, made
    address = bytes.fromhex(json.loads(made.out)["address"])
    chain.issue([Output(asset, address) for asset in assets])


def balance_until(person: Person, tmp_path: Path, expected: list[tuple[str, str]]) -> str:
    """`petra wallet balance` again until its unspent rows are `expected` (a person would);
    its addresses, elided, each stand for the one the JSON names whole."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        screen = person.petra("balance")
        if unspent(screen) == sorted(expected) or time.monotonic() > deadline:
            assert unspent(screen) == sorted(expected), screen
            break
        time.sleep(2)
    wallet = str(tmp_path / person.wallet)
    made = petra(
        "wallet", "balance", "--no-refresh", "--wallet", wallet, "--json", passphrase=PASSPHRASE
    )
    held = [r for r in json.loads(made.out)["rows"] if r["unspent"] or r["reserved"]]
    assert len(rows(screen)) == len(held), screen
    alike([row[2] for row in rows(screen)], [r["address"] for r in held])
    return screen


def test_two_people_create_wallets_and_trade_at_the_terminal(
    chain: Chain, store_url: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in (PASSPHRASE_ENV, "TMUX", "TMUX_PANE")}
    env |= {"PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}", "LANG": "C.UTF-8"}
    with tmux_server(env, tmp_path, width=WIDTH) as tmux:
        seller = Person(tmux.pane("seller"), "seller.json")
        buyer = Person(tmux.pane("buyer"), "buyer.json")
        services = f"--genesis {chain.genesis} --ledger {chain.url} --bidstore {store_url}"

        # the seller mistypes the confirmation once
        seller.pane.run(
            f"petra wallet init --wallet seller.json {services} --kdf interactive", timeout_s=WAIT_S
        )
        seller.pane.wait_for("Passphrase:", timeout_s=WAIT_S)
        seller.type_hidden(PASSPHRASE)
        seller.pane.wait_for("Repeat for confirmation:", timeout_s=WAIT_S)
        seller.type_hidden(MISTYPED)
        seller.pane.wait_for("Error: The two entered values do not match.", timeout_s=WAIT_S)
        seller.pane.wait_for("Passphrase:", count=2, timeout_s=WAIT_S)
        seller.type_hidden(PASSPHRASE)
        seller.pane.wait_for("Repeat for confirmation:", count=2, timeout_s=WAIT_S)
        seller.type_hidden(PASSPHRASE)
        created = seller.done()
        owner = Wallet(WalletFile.open(tmp_path / "seller.json", PASSPHRASE.encode()))
        assert "wallet created: seller.json" in created, created
        assert (
            "owner address (put it in your meter's configuration as `owner`): "
            f"{owner.owner_key().public_key.hex()}"
        ) in words(created), created
        assert "keep a backup: petra wallet backup --to FILE" in created, created

        buyer.pane.run(
            f"petra wallet init --wallet buyer.json {services} --kdf interactive", timeout_s=WAIT_S
        )
        buyer.pane.wait_for("Passphrase:", timeout_s=WAIT_S)
        buyer.type_hidden(PASSPHRASE)
        buyer.pane.wait_for("Repeat for confirmation:", timeout_s=WAIT_S)
        buyer.type_hidden(PASSPHRASE)
        assert "wallet created: buyer.json" in buyer.done()

        t = chain.now() + AHEAD
        due = payment(POWER, INTERVAL_S, PRICE)
        assert due == 2000
        fund(seller, tmp_path, chain, [Epa(1500, t, t)])
        fund(buyer, tmp_path, chain, [Eca(1000, t, t), Fa(10_000)])
        balance_until(seller, tmp_path, [("EPA", "1,500 W")])
        balance_until(buyer, tmp_path, [("ECA", "1,000 W"), ("FA", "0.010000 EUR")])
        when = interval_label(t, chain.scenario.genesis.epoch, INTERVAL_S)

        asked = seller.petra(f"ask --interval {t} --power {POWER} --price 7.2")
        assert "gathered the order's assets in " in words(asked), asked
        posted = re.search(
            rf"ask 1,000 W for interval {re.escape(when)} at 7\.200000 EUR/kWh posted: (\S+)",
            words(asked),
        )
        assert posted is not None, asked
        assert "see what it needs from you: petra wallet proposals" in words(asked), asked

        book = buyer.petra("book")
        listed = petra(
            *("wallet", "book", "--wallet", str(tmp_path / buyer.wallet), "--json"),
            passphrase=PASSPHRASE,
        )
        alike([row[0] for row in rows(book)], [o["id"] for o in json.loads(listed.out)["orders"]])
        (offer,) = [row for row in rows(book) if row[2] == "ask"]
        assert offer[1:] == [when, "ask", "1,000 W", "7.200000 EUR/kWh", ""], book
        # the buyer copies the order's id off the table: the digits before the ellipsis do
        order = offer[0].split(ELLIPSIS)[0]
        assert posted.group(1).startswith(order) and len(order) >= 4, book
        taken = buyer.petra(f"take {order}")
        trade = re.search(
            rf"trade (\S+): 1,000 W for interval {re.escape(when)} at 7\.200000 EUR/kWh, "
            r"0\.002000 EUR; proposed",
            words(taken),
        )
        assert trade is not None, taken
        follow = "the other party settles it; follow it with: petra wallet proposals"
        assert follow in words(taken), taken

        ((shown, *waiting),) = rows(seller.petra("proposals"))
        assert waiting == [when, "sell 1,000 W", "0.002000 EUR", "accept"], waiting
        alike([shown], [trade.group(1)])
        accepted = seller.petra(f"accept {shown.split(ELLIPSIS)[0]}")  # as copied off the table
        assert f"trade {trade.group(1)}: submitted" in words(accepted), accepted

        balance_until(
            seller, tmp_path, [("EPA", "500 W"), ("ECA", "1,000 W"), ("FA", "0.002000 EUR")]
        )
        balance_until(buyer, tmp_path, [("EPA", "1,000 W"), ("FA", "0.008000 EUR")])

        # each side's trade, and what it does to its bills
        sold = words(seller.petra("trades"))
        assert f"sold 1,000 W in {when} at 7.200000 EUR/kWh for 0.002000 EUR: settled" in sold
        assert "the payment is held, not deposited" in sold, sold
        # the taker learns the transfer's id from the store, as a person would first ask
        ((*_, ended),) = rows(buyer.petra("proposals"))
        assert ended == "settled", ended
        bought = words(buyer.petra("trades"))
        assert f"bought 1,000 W in {when}" in bought and "the EPA is held" in bought, bought

        refused = buyer.petra("balance", passphrase=MISTYPED, code=2)
        said = refused.split("Passphrase:", 1)[1].splitlines()[1:-1]  # up to the prompt
        assert " ".join(said) == f"error: buyer.json: {WRONG_PASSPHRASE}", refused

        for screen in seller.screens + buyer.screens:
            check_screen(screen)
            assert "Traceback" not in screen, screen
            assert "µ" not in screen and "micro-units" not in screen, screen
            assert PASSPHRASE not in screen and MISTYPED not in screen, screen
