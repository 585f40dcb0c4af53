"""The loop's schedule on a fake clock: early ticks never move the regular one; bursts coalesce."""

from __future__ import annotations

import bisect

from wattshift.daemon.control.ticks import TickSchedule


def ticks_of(schedule: TickSchedule, requests: list[float], *, tick_s: float, until: float) -> list[tuple[float, bool]]:
    """Step the schedule as ``Controller.run`` does: each tick takes ``tick_s``; a request that
    arrives while a tick runs is served by the next. Returns (start, regular) of every tick."""
    requests = sorted(requests)
    out: list[tuple[float, bool]] = []
    now = schedule.next_regular
    while now < until:
        out.append((now, schedule.start(now)))
        started, now = now, now + tick_s
        during = bisect.bisect_right(requests, now) > bisect.bisect_right(requests, started)
        regular_at = now + schedule.wait(now, requested=False)
        if not during:
            later = requests[bisect.bisect_right(requests, now):]
            if not later or later[0] >= regular_at:
                now = regular_at
                continue
            now = later[0]
        now += schedule.wait(now, requested=True)
    return out


def test_without_requests_the_ticks_keep_their_interval():
    ticks = ticks_of(TickSchedule.starting(0.0, 2.0), [], tick_s=0.3, until=10.0)
    assert ticks == [(0.0, True), (2.0, True), (4.0, True), (6.0, True), (8.0, True)]


def test_a_burst_of_requests_coalesces_and_never_delays_the_regular_tick():
    # The issue: fifteen commands, one every 100 ms, on a 2 s tick.
    burst = [0.5 + 0.1 * n for n in range(15)]
    ticks = ticks_of(TickSchedule.starting(0.0, 2.0), burst, tick_s=0.05, until=12.0)
    regular = [t for t, is_regular in ticks if is_regular]
    assert regular == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    early = [t for t, is_regular in ticks if not is_regular]
    assert early, "a request must wake the loop before its next tick"
    assert early[0] == 0.5  # the first request is served at once
    assert len(early) <= 1.5 / 0.5 + 1  # the 1.4 s burst, at most one early tick per gap
    assert all(b - a >= 0.5 - 1e-9 for a, b in zip([t for t, _ in ticks], [t for t, _ in ticks][1:], strict=False))


def test_an_early_tick_just_before_the_regular_one_does_not_stand_in_for_it():
    ticks = ticks_of(TickSchedule.starting(0.0, 2.0), [1.8], tick_s=0.3, until=4.5)
    assert ticks == [(0.0, True), (1.8, False), (2.1, True), (4.0, True)]


def test_a_tick_that_overruns_restarts_the_schedule_from_where_it_ended():
    schedule = TickSchedule.starting(0.0, 2.0)
    assert schedule.start(0.0)
    assert schedule.wait(5.0, requested=False) == 0.0  # overran: the next tick is due at once
    assert schedule.start(5.0)
    assert schedule.next_regular == 7.0
    assert schedule.wait(5.25, requested=True) == 0.25  # an early tick still waits for the gap


def test_the_gap_never_exceeds_the_interval():
    schedule = TickSchedule.starting(0.0, 0.2)
    assert schedule.gap == 0.2
