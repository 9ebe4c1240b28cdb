"""`petra wallet` at a terminal, checked as a person would: typed into tmux panes, read off the
screen. Two prosumers create their wallets at the hidden passphrase prompt and trade over a
real ledger node and a real `petra bidstore serve` process (test_wallet_market.py's)."""

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
POWER, PRICE = 1000, 7_200_000  # W, micro-units per kWh: 2,000 µ over a one-second interval
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
    """The body rows of the Rich tables on `screen`, each as its cells' text."""
    return [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in screen.splitlines()
        if line.startswith("│")
    ]


def words(screen: str) -> str:
    """The screen's text with Rich's line breaks (at the terminal's width) undone."""
    return " ".join(screen.split())


def unspent(screen: str) -> list[tuple[str, str]]:
    """(kind, unspent) of each `petra wallet balance` row holding something unspent."""
    return sorted((row[0], row[3]) for row in rows(screen) if not row[3].startswith("0 "))


def fund(person: Person, tmp_path: Path, chain: Chain, assets: list[Asset]) -> None:
    """The meter issues `assets` to a fresh address of the person's wallet (test-side)."""
    wallet = str(tmp_path / person.wallet)
    made = petra("wallet", "address", "new", "--wallet", wallet, "--json", passphrase=PASSPHRASE)
    assert made.code == 0, made
    address = bytes.fromhex(json.loads(made.out)["address"])
    chain.issue([Output(asset, address) for asset in assets])


def balance_until(person: Person, expected: list[tuple[str, str]]) -> str:
    """`petra wallet balance` again until its unspent rows are `expected` (a person would)."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        screen = person.petra("balance")
        if unspent(screen) == sorted(expected) or time.monotonic() > deadline:
            assert unspent(screen) == sorted(expected), screen
            return screen
        time.sleep(2)


def test_two_people_create_wallets_and_trade_at_the_terminal(
    chain: Chain, store_url: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in (PASSPHRASE_ENV, "TMUX", "TMUX_PANE")}
    env |= {"PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}", "LANG": "C.UTF-8"}
    with tmux_server(env, tmp_path) as tmux:
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
        balance_until(seller, [("EPA", "1,500 W")])
        balance_until(buyer, [("ECA", "1,000 W"), ("FA", "10,000 µ")])

        asked = seller.petra(f"ask --interval {t} --power {POWER} --price {PRICE}")
        assert "gathered the order's assets in " in asked, asked
        posted = re.search(
            rf"ask 1,000 W for interval {t} at 7,200,000 µ/kWh posted: (\S+)", words(asked)
        )
        assert posted is not None, asked
        assert "see what it needs from you: petra wallet proposals" in words(asked), asked

        book = buyer.petra("book")
        (offer,) = [row for row in rows(book) if row[1] == "ask"]
        assert offer[:5] + offer[6:] == [str(t), "ask", "1,000", "7,200,000", "relay", ""], book
        # the buyer copies the order's id off the table: its first 16 digits do
        order = offer[5]
        assert posted.group(1).startswith(order) and len(order) == 16, book
        taken = buyer.petra(f"take {order}")
        trade = re.search(
            rf"trade (\S+): 1,000 W for interval {t} at 7,200,000 µ/kWh, 2,000 µ; proposed",
            words(taken),
        )
        assert trade is not None, taken
        follow = "the other party settles it; follow it with: petra wallet proposals"
        assert follow in words(taken), taken

        ((shown, *waiting),) = rows(seller.petra("proposals"))
        assert waiting == ["seller", str(t), "1,000", "7,200,000", "2,000", "accept"], waiting
        assert trade.group(1).startswith(shown) and len(shown) == 16, shown
        accepted = seller.petra(f"accept {shown}")  # as the person copies it off the table
        assert f"trade {trade.group(1)[:16]}: submitted" in accepted, accepted

        balance_until(seller, [("EPA", "500 W"), ("ECA", "1,000 W"), ("FA", "2,000 µ")])
        balance_until(buyer, [("EPA", "1,000 W"), ("FA", "8,000 µ")])

        refused = buyer.petra("balance", passphrase=MISTYPED, code=2)
        said = refused.split("Passphrase:", 1)[1].splitlines()[1:-1]  # up to the prompt
        assert said == [f"error: buyer.json: {WRONG_PASSPHRASE}"], refused

        for screen in seller.screens + buyer.screens:
            assert "Traceback" not in screen, screen
            assert PASSPHRASE not in screen and MISTYPED not in screen, screen
