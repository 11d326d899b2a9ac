"""Slot computation of schedules: cron on a zone's wall clock (DST), intervals, bounds."""

from __future__ import annotations

import itertools
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from scheduler_app.services.schedules.slots import (
    CRON_PATTERN,
    SlotError,
    Timing,
    expand_cron,
    jitter_of,
    zone,
)

ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)


def cron(expression: str, tz: str = "UTC", **bounds) -> Timing:
    return Timing(expression, None, tz, ANCHOR, **bounds)


def slots(timing: Timing, start: datetime, days: float) -> list[datetime]:
    return list(timing.between(start, start + timedelta(days=days), 1000))


@pytest.mark.parametrize(
    ("tz", "spring", "fall"),
    [
        # Berlin: 02:00 -> 03:00 on 29 March (02:30 does not exist), 03:00 -> 02:00 on 25 Oct
        # (02:30 happens twice).
        ("Europe/Berlin", datetime(2026, 3, 29, tzinfo=UTC), datetime(2026, 10, 25, tzinfo=UTC)),
        # New York: 02:00 -> 03:00 on 8 March; 02:00 -> 01:00 on 1 November.
        ("America/New_York", datetime(2026, 3, 8, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)),
    ],
)
def test_daily_0230_fires_once_on_spring_forward_and_fall_back_days(tz, spring, fall):
    timing = cron("30 2 * * *", tz)
    for day in (spring, fall):
        fired = slots(timing, day - timedelta(days=1), 3)
        local_days = [s.astimezone(zone(tz)).date() for s in fired]
        assert len(fired) == 3 and len(set(local_days)) == 3, fired
        assert fired == sorted(fired)


def test_skipped_wall_time_fires_right_after_the_jump_and_repeated_one_at_its_first_time():
    timing = cron("30 2 * * *", "Europe/Berlin")
    [spring] = slots(timing, datetime(2026, 3, 28, 12, tzinfo=UTC), 0.9)
    assert spring == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 03:30 CEST
    [fall] = slots(timing, datetime(2026, 10, 24, 12, tzinfo=UTC), 0.9)
    assert fall == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST, the first one


def test_every_minute_of_a_skipped_hour_still_fires_once():
    timing = cron("*/20 2 * * *", "Europe/Berlin")
    fired = slots(timing, datetime(2026, 3, 28, 23, tzinfo=UTC), 0.3)
    assert [s.strftime("%H:%M") for s in fired] == ["01:00", "01:20", "01:40"]


def test_hourly_cron_never_repeats_or_goes_back_and_fires_in_the_repeated_hour():
    timing = cron("@hourly", "Europe/Berlin")
    spring = slots(timing, datetime(2026, 3, 28, tzinfo=UTC), 2)
    fall = slots(timing, datetime(2026, 10, 24, tzinfo=UTC), 2)
    for fired in (spring, fall):  # every real hour once: the skipped 02:00 is 03:00, the
        assert len(fired) == 48  # repeated 02:00 fires twice (once per pass)
        assert {b - a for a, b in itertools.pairwise(fired)} == {timedelta(hours=1)}


def test_every_20_minutes_goes_on_through_the_repeated_hour():
    fired = slots(cron("*/20 * * * *", "Europe/Berlin"), datetime(2026, 10, 25, tzinfo=UTC), 0.125)
    assert [(b - a) for a, b in itertools.pairwise(fired)] == [timedelta(minutes=20)] * 8


def test_cron_in_a_zone_is_its_wall_clock():
    [slot] = slots(cron("0 9 * * *", "Asia/Tokyo"), datetime(2026, 5, 31, 12, tzinfo=UTC), 0.99)
    assert slot == datetime(2026, 6, 1, 0, 0, tzinfo=UTC)


def test_interval_slots_are_anchor_plus_multiples():
    timing = Timing(None, 90, "UTC", ANCHOR)
    assert timing.next_after(ANCHOR) == ANCHOR + timedelta(seconds=90)
    assert timing.next_after(ANCHOR + timedelta(seconds=91)) == ANCHOR + timedelta(seconds=180)
    assert timing.next_after(ANCHOR - timedelta(days=1)) == ANCHOR
    assert timing.last_until(ANCHOR + timedelta(seconds=200)) == ANCHOR + timedelta(seconds=180)


def test_start_and_end_bound_the_slots():
    start, end = ANCHOR + timedelta(hours=5), ANCHOR + timedelta(hours=7)
    timing = cron("0 * * * *", start_at=start, end_at=end)
    assert slots(timing, ANCHOR, 1) == [start, start + timedelta(hours=1), end]
    assert timing.next_after(end) is None
    assert timing.last_until(ANCHOR + timedelta(hours=3)) is None


def test_cron_that_matches_no_date_has_no_slot():
    assert cron("0 0 30 2 *").next_after(ANCHOR) is None


@pytest.mark.parametrize(
    "expression",
    [
        "0 0 * * *",
        "*/5 * * * *",
        "0,30 9-17 * * mon-fri",
        "0 0 1 JAN *",
        "@daily",
        "59-0/5 * * * *",
    ],
)
def test_valid_cron_expressions_match_the_documented_pattern(expression):
    assert re.fullmatch(CRON_PATTERN, expression)
    expand_cron(expression)


@pytest.mark.parametrize(
    "expression",
    ["* * * *", "* * * * * *", "61 * * * *", "0 24 * * *", "0 0 0 * *", "*/0 * * * *",
     "0  0 * * *", "@reboot", "@DAILY", "H * * * *", "0 0 L * *", "0 0 * * 1#2", ""],
)  # fmt: skip
def test_invalid_cron_expressions_are_refused_and_outside_the_pattern(expression):
    assert not re.fullmatch(CRON_PATTERN, expression)
    with pytest.raises(SlotError):
        expand_cron(expression)


def test_unknown_time_zone_is_refused():
    with pytest.raises(SlotError):
        zone("Mars/Olympus_Mons")
    assert zone("Europe/Paris").key == "Europe/Paris"


def test_jitter_is_bounded_and_the_same_for_every_process():
    schedule_id = uuid.uuid4()
    delays = [jitter_of(schedule_id, ANCHOR + timedelta(minutes=m), 30) for m in range(50)]
    assert all(timedelta(0) <= d <= timedelta(seconds=30) for d in delays)
    assert len(set(delays)) > 40
    assert delays[0] == jitter_of(schedule_id, ANCHOR, 30)
    assert jitter_of(schedule_id, ANCHOR, None) == timedelta(0)
