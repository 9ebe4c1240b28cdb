"""Mixing the wallet's coins (DESIGN.md section 8): split into standard denominations, then
CoinShuffle rounds through the coordinator, each round ending at a fresh address.

A pool only mixes equal assets, so a coin of an odd size would sit alone: `denominate` breaks
a size into the 1-2-5 series (1, 2, 5, 10, 20, 50, ... W or micro-units), which many neighbours'
coins share, and `split` pays those pieces to fresh addresses in one transfer (the pieces are
linked to each other only until they are mixed). Each round is `mixer.client.MixClient`: the
coin's key joins the pool of its denomination, and the mix ends when the ledger shows the joint
transfer paying a fresh key of this wallet, saved before the coordinator ever learns it. Several
rounds make a coordinator that colludes with some peers of one pool learn nothing more.

A pool needs several wallets mixing equal coins at the same time. `company` asks the mixer who
is waiting before anything is split, so that a wallet mixing alone is told so while its coins
are whole; a piece whose mix fails anyway stays an unspent coin of the wallet, of origin
`split`, which a later mix takes as it is (it is one denomination already) and an order spends.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from assets.codec import asset_to_wire
from assets.model import Asset, Eca, Epa, Fa, Outpoint, Output
from ledger.client import LedgerClient, LedgerClientError
from mixer.client import DEFAULT_TIMEOUT_S, MixClient, MixError, PoolsClient
from wallet.wallet import Coin, Wallet, WalletError, asset_text, coin_key, release, size_of

SERIES = (1, 2, 5)
MAX_PIECES = 64  # outputs one split may make (a transfer holds at most 512)
SPLIT_ORIGIN = "split"  # the origin of a piece split from a coin and not mixed yet

Progress = Callable[[Coin, Coin, int], None]
"""Called after each round of a coin as (the coin before, the coin after, rounds done)."""


def denominate(size: int) -> list[int]:
    """`size` as a sum of 1-2-5 series values, largest first, greedily (at most 3 pieces per
    decade: 1234 -> 1000, 200, 20, 10, 2, 2)."""
    if size < 1:
        raise ValueError(f"nothing to denominate in {size}")
    values = []
    decade = 1
    while decade * 10 <= size:
        decade *= 10
    while decade >= 1:
        for step in sorted(SERIES, reverse=True):
            while size >= step * decade:
                values.append(step * decade)
                size -= step * decade
        decade //= 10
    return values


def resized(asset: Asset, size: int) -> Asset:
    if isinstance(asset, Fa):
        return Fa(size)
    kind = Epa if isinstance(asset, Epa) else Eca
    return kind(size, asset.start, asset.end)


def split(wallet: Wallet, coin: Coin) -> list[Coin]:
    """`coin` paid out in its denominations to fresh addresses, in one transfer; the coin
    itself if it is one denomination already."""
    pieces = denominate(size_of(coin.asset))
    if len(pieces) == 1:
        return [coin]
    if len(pieces) > MAX_PIECES:
        raise WalletError(
            "too_many_pieces", f"{asset_text(coin.asset)} splits into {len(pieces)} pieces"
        )
    outputs = [
        Output(resized(coin.asset, size), wallet.new_key("mix").public_key) for size in pieces
    ]
    tx_id = wallet.transfer([coin], outputs, "split", SPLIT_ORIGIN)
    return [
        Coin(Outpoint(tx_id, index), output, "unspent", SPLIT_ORIGIN)
        for index, output in enumerate(outputs)
    ]


def pieces_of(coins: Sequence[Coin], *, denominations: bool = True) -> list[Asset]:
    """The assets `coins` would be mixed as (split into denominations unless not
    `denominations`), each once, in the order of the coins."""
    found: list[Asset] = []
    for coin in coins:
        sizes = denominate(size_of(coin.asset)) if denominations else [size_of(coin.asset)]
        for asset in (resized(coin.asset, size) for size in sizes):
            if asset not in found:
                found.append(asset)
    return found


@dataclass(frozen=True, slots=True)
class Company:
    """Who mixes `asset` now: `waiting` peers in its forming pool at the mixer; a pool starts
    at its deadline with `needed` peers, `start_s` seconds after its first join."""

    asset: Asset
    waiting: int
    needed: int
    start_s: float


def company(
    wallet: Wallet, coins: Sequence[Coin], *, denominations: bool = True
) -> list[Company] | None:
    """For each asset `coins` would be mixed as, who is waiting to mix it at the wallet's
    mixer; None if the mixer cannot say (a coordinator without `GET /v1/forming`). Raises
    WalletError `no_mixer`, or `mixer_unreachable`."""
    mixer = _mixer(wallet)
    try:
        with PoolsClient(mixer) as client:
            forming = client.forming()
    except MixError as exc:
        if exc.code == "not_found":
            return None
        raise WalletError(
            "mixer_unreachable",
            f"cannot ask the mixer at {mixer} who is mixing ({exc.message}): nothing was "
            "split; check `petra wallet config --mixer` and that the mixer is up",
        ) from None
    return [
        Company(asset, forming.peers(asset), forming.min_peers, forming.start_s)
        for asset in pieces_of(coins, denominations=denominations)
    ]


def alone_error(lonely: Sequence[Company]) -> WalletError:
    """The refusal to mix `lonely` denominations nobody else is waiting for."""
    names = " or ".join(asset_text(c.asset) for c in lonely)
    needed = max(c.needed for c in lonely)
    start_s = max(c.start_s for c in lonely)
    return WalletError(
        "alone",
        f"no other wallet is waiting to mix {names} at the mixer, and a round needs {needed}: "
        "nothing was split; mix when others do (their autopilots mix every interval), or "
        f"pass --wait to split and join anyway, waiting up to {start_s:g} s for others",
    )


def mix_coin(
    wallet: Wallet,
    coin: Coin,
    rounds: int,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: Progress | None = None,
) -> Coin:
    """Mix `coin` `rounds` times; the coin it ends as. Raises WalletError: `no_mixer`, the
    mixer client's codes (`failed`: too few neighbours joined the pool in time, `excluded`,
    `timed_out`, ...), `ledger_unreachable`. The coin is unspent again after a failed round."""
    mixer = _mixer(wallet)
    for done in range(rounds):
        before, coin = coin, _one_round(wallet, mixer, coin, timeout_s, (done + 1, rounds))
        if progress is not None:
            progress(before, coin, done + 1)
    return coin


def _mixer(wallet: Wallet) -> str:
    mixer = wallet.services.mixer
    if mixer is None:
        raise WalletError(
            "no_mixer", "this wallet knows no mixer: run `petra wallet config --mixer URL`"
        )
    return mixer


def _one_round(
    wallet: Wallet, mixer: str, coin: Coin, timeout_s: float, round_of: tuple[int, int]
) -> Coin:
    """One CoinShuffle round of `coin`, round `round_of[0]` of `round_of[1]`."""
    which = f"round {round_of[0]} of {round_of[1]}"
    key = wallet.key_of(coin.output.address)
    with wallet.edit() as contents:
        entry = contents.data["coins"].get(coin.key)
        if entry is None or entry["state"] != "unspent":
            raise WalletError("not_unspent", f"{coin.key} is not an unspent coin of this wallet")
        entry["state"] = "reserved"
    try:
        with (
            LedgerClient(wallet.services.ledger) as ledger,
            MixClient(
                mixer,
                ledger,
                wallet.chain,
                key,
                coin.outpoint,
                coin.asset,
                new_output=lambda: wallet.new_key("mix"),
                timeout_s=timeout_s,
            ) as client,
        ):
            result = client.run()
            stored = ledger.transaction(result.txid)
    except (MixError, LedgerClientError) as exc:
        with wallet.edit() as contents:
            release(contents, [coin.key])
            why = exc.message if isinstance(exc, MixError) else str(exc)
            wallet.note(
                contents,
                "mix_failed",
                f"{which} of mixing {asset_text(coin.asset)} failed: {why}",
            )
        kept = f"{asset_text(coin.asset)} stays unspent in this wallet"
        if isinstance(exc, MixError):
            raise WalletError(exc.code, f"the mix failed: {exc.message}; {kept}") from None
        raise WalletError("ledger_unreachable", f"cannot read the ledger: {exc}; {kept}") from None
    # MixClient returns only once the ledger shows the transfer paying this key
    address = result.output.public_key.hex()
    outputs = [] if stored is None else stored["transaction"]["outputs"]
    index = next(n for n, o in enumerate(outputs) if o["address"] == address)
    output = Output(coin.asset, result.output.public_key)
    mixed = Coin(Outpoint(result.txid, index), output, "unspent", "mix")
    with wallet.edit() as contents:
        coins = contents.data["coins"]
        coins[coin.key].update(state="spent", spent_by=result.txid.hex())
        coins[coin_key(mixed.outpoint)] = {
            "asset": asset_to_wire(coin.asset),
            "address": address,
            "origin": "mix",
            "state": "unspent",
            "spent_by": None,
        }
        wallet.note(
            contents,
            "mix",
            f"mixed {asset_text(coin.asset)} in a pool of {len(outputs)} ({which}"
            + (f", the pool's run {result.runs})" if result.runs > 1 else ")"),
            txid=result.txid.hex(),
        )
    return mixed


def mix(
    wallet: Wallet,
    coins: Sequence[Coin],
    rounds: int,
    *,
    denominations: bool = True,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: Progress | None = None,
    on_split: Callable[[Coin, list[Coin]], None] | None = None,
    alone: bool = True,
) -> tuple[list[Coin], list[WalletError]]:
    """Split `coins` into denominations (unless `denominations` is False) and mix every piece
    `rounds` times, all pieces at once (each joins its own pool); (the mixed coins, the
    failures). A failed piece stays where it was, an unspent coin of the wallet.

    Unless `alone`, the mixer is asked first, and WalletError `alone` raised before anything
    is split when nobody waits to mix one of the pieces (`company`'s errors too)."""
    if not alone:
        found = company(wallet, coins, denominations=denominations)
        lonely = [c for c in found or [] if c.waiting == 0]
        if lonely:
            raise alone_error(lonely)
    pieces: list[Coin] = []
    for coin in coins:
        parts = split(wallet, coin) if denominations else [coin]
        if on_split is not None:
            on_split(coin, parts)
        pieces += parts
    mixed: list[Coin] = []
    failed: list[WalletError] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(pieces))) as pool:
        futures = [
            pool.submit(mix_coin, wallet, p, rounds, timeout_s=timeout_s, progress=progress)
            for p in pieces
        ]
        for future in futures:
            try:
                mixed.append(future.result())
            except WalletError as exc:
                failed.append(exc)
    return mixed, failed
