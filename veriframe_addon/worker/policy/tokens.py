"""Token amounts as a person reads them: the backend's integers (the token's smallest unit, like wei)
shown and typed in whole tokens, e.g. ``10**15`` with 18 decimals is ``0.001 STRK``."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from ..errors import ConfigError

DEFAULT_SYMBOL = "STRK"
DEFAULT_DECIMALS = 18


@dataclass(frozen=True)
class Token:
    """The reward token: its symbol and how many decimals one whole token has."""

    symbol: str = DEFAULT_SYMBOL
    decimals: int = DEFAULT_DECIMALS

    def format(self, amount: int, *, places: int = 6) -> str:
        """``amount`` (smallest units) in whole tokens, at most ``places`` decimals, trailing zeros cut.

        A non-zero amount too small for ``places`` shows as ``< 0.000001 STRK`` rather than as zero.
        """
        whole = Decimal(amount).scaleb(-self.decimals)
        shown = round(whole, places)
        if shown == 0 and amount != 0:
            sign = "-" if amount < 0 else ""
            return f"{sign}< {Decimal(1).scaleb(-places):f} {self.symbol}"
        text = f"{shown:f}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return f"{text} {self.symbol}"

    def parse(self, text: str, variable: str) -> int:
        """``"0.001"`` (whole tokens) in smallest units; more decimals than the token has is an error."""
        cleaned = text.strip().removesuffix(self.symbol).strip()
        try:
            value = Decimal(cleaned)
        except InvalidOperation:
            example = f"{text!r} is not an amount of {self.symbol} (example: 0.001)"
            raise ConfigError(variable, example) from None
        if not value.is_finite() or value < 0:
            raise ConfigError(variable, f"must be 0 or more {self.symbol}, got {text!r}")
        units = value.scaleb(self.decimals)
        if units != units.to_integral_value():
            raise ConfigError(variable, f"{text!r} has more than {self.decimals} decimals")
        return int(units)


def parse_decimals(text: str | None) -> int:
    """``TOKEN_DECIMALS``: 0 to 36 (default 18, as STRK and ETH have)."""
    if text is None or not text.strip():
        return DEFAULT_DECIMALS
    try:
        value = int(text.strip())
    except ValueError:
        raise ConfigError("TOKEN_DECIMALS", f"{text!r} is not a whole number") from None
    if not 0 <= value <= 36:
        raise ConfigError("TOKEN_DECIMALS", f"must be between 0 and 36, got {value}")
    return value
