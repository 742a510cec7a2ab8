"""Which available jobs this operator takes at all: a lowest reward, the engines, and blocked creators.

A job a filter turns down is skipped before it is claimed (the backend never assigns it here) and the
reason is logged once. The blocklist is the one rule that changes while the worker runs (the panel's
*Never take jobs from this creator*): ``blocking`` gives the filters with one more creator.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import ConfigError
from .tokens import Token

# Engine names a creator or an operator may use, mapped to the engine family; the render child picks the
# identifier its Blender version knows (BLENDER_EEVEE_NEXT on 4.2-4.5, BLENDER_EEVEE on 5.0+).
ENGINES = {
    "EEVEE": "EEVEE",
    "BLENDER_EEVEE": "EEVEE",
    "BLENDER_EEVEE_NEXT": "EEVEE",
    "CYCLES": "CYCLES",
    "WORKBENCH": "WORKBENCH",
    "BLENDER_WORKBENCH": "WORKBENCH",
}


def normalise_address(text: str) -> str | None:
    """A StarkNet address in one spelling (``0x`` + 64 lower-case hex digits), or None if it is not one."""
    value = text.strip().lower()
    if not value.startswith("0x") or len(value) < 3:
        return None
    try:
        return "0x" + format(int(value, 16), "064x")
    except ValueError:
        return None


@dataclass(frozen=True)
class JobFilters:
    """The operator's filters; ``refusal`` says why a job is turned down, or None to take it."""

    min_reward: int = 0  # smallest units of the token
    engines: frozenset[str] | None = None  # engine families; None: every engine
    blocked_creators: frozenset[str] = frozenset()  # normalised addresses
    token: Token = field(default_factory=Token)

    def refusal(self, *, reward: int, engine: str, creator: str | None) -> str | None:
        if creator is not None and normalise_address(creator) in self.blocked_creators:
            return f"its creator {creator} is blocked (BLOCKED_CREATORS)"
        if reward < self.min_reward:
            return (
                f"its reward {self.token.format(reward)} is below MIN_REWARD "
                f"{self.token.format(self.min_reward)}"
            )
        if self.engines is not None and engine not in self.engines:
            return f"it renders with {engine} and ACCEPT_ENGINES is {', '.join(sorted(self.engines))}"
        return None

    def with_blocklist(self, path: Path) -> JobFilters:
        """These filters plus the creators listed in ``path`` (one address a line; bad lines ignored)."""
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return self
        listed = {address for line in lines if (address := normalise_address(line))}
        return replace(self, blocked_creators=self.blocked_creators | listed)

    def blocking(self, creator: str) -> JobFilters:
        """These filters with ``creator`` blocked too (ValueError if it is not an address)."""
        address = normalise_address(creator)
        if address is None:
            raise ValueError(f"{creator!r} is not a StarkNet address")
        return replace(self, blocked_creators=self.blocked_creators | {address})


def parse_engines(text: str | None) -> frozenset[str] | None:
    """``ACCEPT_ENGINES``: engine names, comma-separated (unset or ``all``: every engine)."""
    if text is None or not text.strip() or text.strip().lower() == "all":
        return None
    engines = set()
    for part in (part.strip() for part in text.split(",")):
        if not part:
            continue
        family = ENGINES.get(part.upper())
        if family is None:
            raise ConfigError("ACCEPT_ENGINES", f"{part!r} is not an engine (use EEVEE, CYCLES, WORKBENCH)")
        engines.add(family)
    if not engines:
        raise ConfigError("ACCEPT_ENGINES", "names no engine (unset it to take every engine)")
    return frozenset(engines)


def parse_creators(text: str | None) -> frozenset[str]:
    """``BLOCKED_CREATORS``: StarkNet addresses, comma-separated."""
    creators = set()
    for part in (part.strip() for part in (text or "").split(",")):
        if not part:
            continue
        address = normalise_address(part)
        if address is None:
            raise ConfigError("BLOCKED_CREATORS", f"{part!r} is not a 0x-prefixed StarkNet address")
        creators.add(address)
    return frozenset(creators)
