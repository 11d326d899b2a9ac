"""When a schedule fires: the slots of a cron expression in a time zone, or of an interval.

A cron expression is evaluated on the zone's wall clock: a time that does not exist (the hour
skipped when clocks go forward) fires once at the same distance past the jump (02:30 becomes
03:30), and a time that happens twice (clocks go back) fires at its first occurrence only,
unless the expression's hour field is ``*`` (every hour), which also fires in the repeated hour,
as cron does. So a 02:30 daily job fires exactly once on both transition days, ``*/20 * * * *``
keeps firing every 20 minutes through both, and slots are strictly increasing instants (UTC in
the ledger), each at most once.
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterError, croniter

# The aliases users know from Vixie cron, as the 5-field expressions they stand for.
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# The expressions taken are exactly those of CRON_PATTERN (the OpenAPI document states it as
# is): per field, comma-separated items, each "*" or a value or a range of values, optionally
# "/step"; months and weekdays also by English abbreviation (jan, Jan or JAN).


MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


def _names(*names: str) -> str:
    return "|".join(f"{n}|{n.capitalize()}|{n.upper()}" for n in names)


_VALUES = (
    r"[0-5]?[0-9]",  # minute
    r"[01]?[0-9]|2[0-3]",  # hour
    r"0?[1-9]|[12][0-9]|3[01]",  # day of month
    r"0?[1-9]|1[0-2]|" + _names(*MONTHS),
    r"[0-7]|" + _names(*["sun", "mon", "tue", "wed", "thu", "fri", "sat"]),  # 0 and 7 are Sunday
)


def _field(values: str) -> str:
    item = rf"(\*|({values})(-({values}))?)(/0*[1-9][0-9]{{0,3}})?"
    return rf"{item}(,{item})*"


CRON_MAX = 200
CRON_PATTERN = "^(" + "|".join(ALIASES) + "|" + " ".join(_field(v) for v in _VALUES) + ")$"
_CRON = re.compile(CRON_PATTERN)
# croniter gives up on a cron that matches nothing within this many years (e.g. "0 0 30 2 *").
_SEARCH_YEARS = 8
# More than any zone's clock jump (2 hours at most in tzdata).
_LOOKBACK = timedelta(hours=3)


class SlotError(ValueError):
    """A cron expression or time zone that cannot be evaluated."""


@lru_cache(maxsize=1)
def zone_names() -> frozenset[str]:
    """Every IANA zone this installation knows (tzdata), the values ``timezone`` takes."""
    return frozenset(available_timezones())


def zone(name: str) -> ZoneInfo:
    """The ZoneInfo of an IANA name; raises SlotError for an unknown one."""
    if name not in zone_names():
        raise SlotError(f"unknown time zone {name!r} (an IANA name such as Europe/Paris)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SlotError(f"unknown time zone {name!r}") from exc


def expand_cron(expression: str) -> str:
    """The 5-field form of a cron expression or alias; raises SlotError when it is not valid."""
    if len(expression) > CRON_MAX or not _CRON.fullmatch(expression):
        raise SlotError(
            "a cron expression has 5 fields separated by one space (minute 0-59, hour 0-23, "
            "day 1-31, month 1-12 or jan-dec, weekday 0-7 or sun-sat; *, a-b, /step, lists) "
            f"or is one of {', '.join(ALIASES)}"
        )
    text = ALIASES.get(expression, expression)
    try:
        croniter(text, datetime(2000, 1, 1))
    except (CroniterBadCronError, CroniterError, ValueError, KeyError) as exc:
        raise SlotError(f"not a valid cron expression: {exc}") from None
    return text


def _local(naive: datetime, tz: ZoneInfo) -> datetime:
    """The instant of a wall-clock time: a skipped time moves past the jump, a repeated one is
    its first occurrence (fold=0 in both cases, which is what PEP 495 specifies)."""
    return naive.replace(tzinfo=tz, fold=0).astimezone(UTC)


@dataclass(frozen=True)
class Timing:
    """What decides a schedule's slots."""

    cron: str | None
    interval: float | None
    timezone: str
    anchor: datetime  # interval slots are anchor + k * interval
    start_at: datetime | None = None
    end_at: datetime | None = None

    def next_after(self, after: datetime) -> datetime | None:
        """The first slot strictly after ``after`` within start_at..end_at, or None."""
        if self.start_at is not None and after < self.start_at:
            after = self.start_at - timedelta(microseconds=1)
        slot = self._cron_after(after) if self.cron else self._interval_after(after)
        if slot is None or (self.end_at is not None and slot > self.end_at):
            return None
        return slot

    def between(self, after: datetime, until: datetime, limit: int) -> Iterator[datetime]:
        """Slots in (after, until], oldest first, at most ``limit`` of them."""
        count = 0
        slot = self.next_after(after)
        while slot is not None and slot <= until and count < limit:
            yield slot
            count += 1
            slot = self.next_after(slot)

    def last_until(self, until: datetime) -> datetime | None:
        """The latest slot at or before ``until`` within start_at..end_at, or None."""
        if self.end_at is not None and until > self.end_at:
            until = self.end_at
        slot = self._cron_until(until) if self.cron else self._interval_until(until)
        if slot is None or (self.start_at is not None and slot < self.start_at):
            return None
        return slot

    def _interval_until(self, until: datetime) -> datetime | None:
        if until < self.anchor:
            return None
        step = timedelta(seconds=self.interval)
        return self.anchor + math.floor((until - self.anchor) / step) * step

    def _cron_until(self, until: datetime) -> datetime | None:
        tz = zone(self.timezone)
        wall = (until + _LOOKBACK).astimezone(tz).replace(tzinfo=None, fold=0)
        try:
            iterator = croniter(
                expand_cron(self.cron), wall, max_years_between_matches=_SEARCH_YEARS
            )
            for _ in range(100_000):
                slot = _local(iterator.get_prev(datetime), tz)
                if slot <= until:
                    return slot
        except CroniterBadDateError:
            return None
        return None

    def _interval_after(self, after: datetime) -> datetime:
        step = timedelta(seconds=self.interval)
        if after < self.anchor:
            return self.anchor
        steps = math.floor((after - self.anchor) / step) + 1
        return self.anchor + steps * step

    def _cron_after(self, after: datetime) -> datetime | None:
        tz = zone(self.timezone)
        expression = expand_cron(self.cron)
        every_hour = expression.split(" ")[1].startswith("*")
        # The wall-clock walk starts a little earlier and keeps the earliest instant after
        # ``after``: the skipped times of a jump forward map to instants after wall times that
        # come later (02:20 of the skipped hour is 01:20 UTC in Berlin, after 03:00 local, which
        # is 01:00 UTC), and the second pass of a repeated hour comes after later wall times.
        near = (after - _LOOKBACK).astimezone(tz).utcoffset() != (after + _LOOKBACK).astimezone(
            tz
        ).utcoffset()
        if not near:
            # No clock change within the look-back either way: wall times map to instants in
            # order, and the first one later than ``after`` is the slot.
            wall = after.astimezone(tz).replace(tzinfo=None, fold=0)
        else:
            wall = (after - _LOOKBACK).astimezone(tz).replace(tzinfo=None, fold=0)
        best: datetime | None = None
        try:
            iterator = croniter(expression, wall, max_years_between_matches=_SEARCH_YEARS)
            for _ in range(100_000):
                naive = iterator.get_next(datetime)
                first = _local(naive, tz)
                if best is not None and first > best + _LOOKBACK:
                    break
                candidates = [first]
                if every_hour:
                    # An expression for every hour also fires in the second pass of a repeated
                    # hour (as cron does); one for fixed hours fires in the first pass only.
                    second = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
                    exists = first.astimezone(tz).replace(tzinfo=None) == naive
                    if exists and second != first:
                        candidates.append(second)
                for slot in candidates:
                    if slot > after and (best is None or slot < best):
                        best = slot
                if best is not None and not near:
                    break
        except CroniterBadDateError:
            return None  # matches no date (e.g. 30 February)
        return best


def jitter_of(schedule_id: uuid.UUID, slot: datetime, jitter: float | None) -> timedelta:
    """The delay of a slot's firing: uniform in [0, jitter], the same in every scheduler process
    (derived from the schedule and the slot, so all of them agree when the slot is due)."""
    if not jitter:
        return timedelta(0)
    digest = hashlib.sha256(f"{schedule_id}:{slot.isoformat()}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return timedelta(seconds=fraction * jitter)
