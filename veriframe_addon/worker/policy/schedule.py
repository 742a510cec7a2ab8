"""``SCHEDULE``: the windows of the week in which the worker takes new jobs, in local wall-clock time.

``mon-fri 18:00-08:00, sat-sun 00:00-24:00`` is two windows. Each is optional days (one day, a range
that may wrap, ``fri-mon``, or a list ``mon,wed`` joined with ``+``: ``mon+wed``), then a start and an end
time. A window whose end is not after its start runs past midnight: it starts on each named day and ends
on the next. Times are wall-clock, so ``18:00-08:00`` ends at 08:00 on the clock whatever daylight
saving does in between; a start that falls in a spring-forward gap opens at the first minute that exists,
and one that happens twice in the autumn opens at the first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from ..errors import ConfigError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME_RE = re.compile(r"^(\d{1,2}):(\d{2})$")
_LOOKAHEAD_DAYS = 8  # every window recurs within a week


@dataclass(frozen=True)
class Window:
    days: frozenset[int]  # weekday numbers (Monday 0) on which the window starts
    start: int  # minutes after midnight
    end: int  # minutes after midnight, 1440 for 24:00; at or before start: on the next day

    @property
    def minutes(self) -> int:
        return self.end - self.start if self.end > self.start else self.end + 1440 - self.start

    def spans(self, day: date) -> tuple[datetime, datetime] | None:
        """The wall-clock start and end of this window when it starts on ``day`` (None: not that day)."""
        if day.weekday() not in self.days:
            return None
        start = datetime.combine(day, time()) + timedelta(minutes=self.start)
        return start, start + timedelta(minutes=self.minutes)


@dataclass(frozen=True)
class Schedule:
    text: str
    windows: tuple[Window, ...]

    def is_open(self, now: datetime, zone: tzinfo | None = None) -> bool:
        """Whether ``now`` (an aware time) falls in a window of the local clock of ``zone``."""
        wall = _wall(now, zone)
        return any(start <= wall < end for start, end in self._spans_around(wall.date()))

    def next_change(self, now: datetime, zone: tzinfo | None = None) -> datetime:
        """The next moment (aware) the schedule opens, if closed now, or closes, if open now."""
        wall = _wall(now, zone)
        spans = sorted(self._spans_around(wall.date()))
        if self.is_open(now, zone):
            end = wall
            for start, stop in spans:  # windows that touch or overlap are one stretch of time
                if start <= end < stop:
                    end = stop
            return _aware(end, zone, now)
        opening = min(start for start, _stop in spans if start > wall)
        return _aware(opening, zone, now)

    def _spans_around(self, today: date) -> list[tuple[datetime, datetime]]:
        days = [today + timedelta(days=offset) for offset in range(-1, _LOOKAHEAD_DAYS)]
        return [span for window in self.windows for day in days if (span := window.spans(day))]


def _wall(now: datetime, zone: tzinfo | None) -> datetime:
    """``now`` on the local wall clock (``zone``, default this machine's), without a time zone."""
    # Through UTC: astimezone() to a datetime's own zone returns it unchanged, even in a DST gap.
    return now.astimezone(UTC).astimezone(zone).replace(tzinfo=None)


def _aware(wall: datetime, zone: tzinfo | None, now: datetime) -> datetime:
    """The first real moment at or after wall-clock ``wall``: a time in a spring-forward gap moves on
    to the first minute that exists; a time that happens twice is taken the first time (fold 0)."""
    candidate = wall
    for _minute in range(24 * 60):
        # A naive time is this machine's local time to astimezone().
        aware = candidate.astimezone() if zone is None else candidate.replace(tzinfo=zone, fold=0)
        if _wall(aware, zone) == candidate:  # the time exists on this clock
            return max(aware, now)
        candidate += timedelta(minutes=1)
    return wall.replace(tzinfo=UTC)  # unreachable on any real clock


def parse_schedule(text: str | None) -> Schedule | None:
    """``SCHEDULE``; unset or ``always``: no schedule. A mistake is one ConfigError naming the bad part."""
    if text is None or not text.strip() or text.strip().lower() == "always":
        return None
    windows = tuple(_parse_window(part.strip(), text) for part in text.split(",") if part.strip())
    if not windows:
        raise ConfigError("SCHEDULE", f"{text!r} names no window (example: mon-fri 18:00-08:00)")
    return Schedule(text.strip(), windows)


def _parse_window(part: str, text: str) -> Window:
    words = part.split()
    if len(words) == 1:
        days, span = frozenset(range(7)), words[0]
    elif len(words) == 2:
        days, span = _parse_days(words[0], part), words[1]
    else:
        raise ConfigError("SCHEDULE", f"{part!r} is not 'DAYS HH:MM-HH:MM' (example: mon-fri 18:00-08:00)")
    start_text, dash, end_text = span.partition("-")
    if not dash:
        raise ConfigError("SCHEDULE", f"{span!r} in {part!r} is not a time range HH:MM-HH:MM")
    start, end = _parse_time(start_text, part), _parse_time(end_text, part)
    if start == 1440:
        raise ConfigError("SCHEDULE", f"{part!r} starts at 24:00; start at 00:00 of the next day")
    if start == end:
        raise ConfigError("SCHEDULE", f"{part!r} starts and ends at the same time (all day is 00:00-24:00)")
    return Window(days, start, end)


def _parse_days(word: str, part: str) -> frozenset[int]:
    days: set[int] = set()
    for item in word.lower().split("+"):
        first, dash, last = item.partition("-")
        if first not in DAYS or (dash and last not in DAYS):
            raise ConfigError("SCHEDULE", f"{item!r} in {part!r} is not a day or day range (mon ... sun)")
        low, high = DAYS.index(first), DAYS.index(last) if dash else DAYS.index(first)
        days.update((low + step) % 7 for step in range((high - low) % 7 + 1))
    return frozenset(days)


def _parse_time(text: str, part: str) -> int:
    match = _TIME_RE.match(text.strip())
    if match is None:
        raise ConfigError("SCHEDULE", f"{text!r} in {part!r} is not a time HH:MM")
    hours, minutes = int(match[1]), int(match[2])
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ConfigError("SCHEDULE", f"{text!r} in {part!r} is not a time of day (00:00 to 24:00)")
    return hours * 60 + minutes


def describe_moment(moment: datetime, now: datetime) -> str:
    """``18:00`` today, ``Sat 00:00`` within a week, else the date: how the panel says "until when"."""
    local, today = moment.astimezone(), now.astimezone()
    if local.date() == today.date():
        return local.strftime("%H:%M")
    if local - today < timedelta(days=6):
        return f"{DAYS[local.weekday()].capitalize()} {local:%H:%M}"
    return local.strftime("%Y-%m-%d %H:%M")
