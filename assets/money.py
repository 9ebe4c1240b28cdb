"""Money as people read and write it (docs/cli.md, Money): the ledger counts micro-units of
the chain's currency; people see and type whole units with up to six decimals. Pure."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

MICRO = 1_000_000  # micro-units per unit of the chain's currency
BARE_LIMIT = 1000  # a bare whole number at least this large was micro-units before
_MONEY = re.compile(r"(?P<number>[+-]?\d+(?:\.\d*)?|[+-]?\.\d+)\s*(?P<unit>[a-zA-Zµ]*)")
_MICRO_UNITS = {"µ", "u", "micro"}


def format_money(micro: int, currency: str = "EUR") -> str:
    """Micro-units as whole units of `currency` with six decimals, exactly: `-1.234567 EUR`."""
    sign = "-" if micro < 0 else ""
    whole, part = divmod(abs(micro), MICRO)
    return f"{sign}{whole:,}.{part:06d} {currency}"


def format_price(micro_per_kwh: int, currency: str = "EUR") -> str:
    """A price in micro-units per kWh, shown as money per kWh: `0.150000 EUR/kWh`."""
    return f"{format_money(micro_per_kwh, currency)}/kWh"


def parse_money(text: str, currency: str = "EUR") -> int:
    """`0.15`, `0.15EUR`, `0.15 EUR` or `150000µ` as micro-units. ValueError with a sentence:
    a bare whole number of `BARE_LIMIT` or more is refused, since such options took
    micro-units before and reading one as whole units would multiply it by a million."""
    match = _MONEY.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not an amount of money: write 0.15, 0.15{currency} or 150000µ"
        )
    number, unit = match["number"], match["unit"]
    if unit in _MICRO_UNITS:
        if not re.fullmatch(r"[+-]?\d+", number):
            raise ValueError(f"{text!r}: micro-units are whole numbers")
        return int(number)
    if unit and unit.upper() != currency.upper():
        raise ValueError(f"{text!r}: the chain's currency is {currency}, not {unit}")
    if not unit and "." not in number and abs(int(number)) >= BARE_LIMIT:
        raise ValueError(
            f"{text!r} is ambiguous: money is in {currency} now; write {text}µ for micro-units "
            f"or {text}{currency} if you mean {int(number):,} {currency}"
        )
    try:
        amount = Decimal(number) * MICRO
    except InvalidOperation:
        raise ValueError(f"{text!r} is not an amount of money") from None
    if amount != amount.to_integral_value():
        raise ValueError(f"{text!r} has more than six decimals: the smallest amount is 0.000001")
    return int(amount)
