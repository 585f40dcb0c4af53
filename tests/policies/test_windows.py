"""Schedule windows: known answers across time zones, DST, month and weekday ranges, midnight."""

import dataclasses
from datetime import UTC, datetime

import pytest
from factories import miner, snapshot
from pydantic import ValidationError

from wattshift.policies.catalog import build_policy
from wattshift.policies.windows import Window, WindowedPolicy, active_windows

# ERCOT 4CP: weekday afternoons, June to September, Central time.
FOUR_CP = Window(name="4cp-peak", cron="0 15 * 6-9 mon-fri", duration_minutes=240,
                 timezone="America/Chicago", budget_kw=5)
NIGHT = Window(name="friday-night", cron="0 22 * * fri", duration_minutes=480, budget_factor=0.5)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(("at", "open_"), [
    (utc(2026, 7, 15, 20, 0), True),     # Wednesday 15:00 CDT: the first second is inside
    (utc(2026, 7, 15, 23, 59), True),    # 18:59 CDT
    (utc(2026, 7, 16, 0, 0), False),     # 19:00 CDT: the end is outside
    (utc(2026, 7, 15, 19, 59), False),   # 14:59 CDT
    (utc(2026, 7, 18, 21, 0), False),    # Saturday
    (utc(2026, 7, 20, 21, 0), True),     # Monday
    (utc(2026, 9, 30, 21, 0), True),     # the last day of the last month
    (utc(2026, 10, 1, 21, 0), False),    # October
    (utc(2026, 5, 29, 21, 0), False),    # May, a Friday
])
def test_four_cp_window_by_weekday_month_and_hour_in_central_time(at, open_):
    assert (active_windows([FOUR_CP], at) == [FOUR_CP]) is open_


def test_the_time_zone_and_daylight_saving_move_the_window():
    tou = Window(name="tou-peak", cron="0 15 * * *", duration_minutes=60, timezone="America/Chicago",
                 options={"x": 1})
    assert tou.opened_at(utc(2026, 1, 15, 21, 30)) == datetime(2026, 1, 15, 21, 0, tzinfo=UTC)  # CST
    assert tou.opened_at(utc(2026, 1, 15, 20, 30)) is None
    assert tou.opened_at(utc(2026, 7, 15, 20, 30)) is not None  # CDT: an hour earlier in UTC
    in_utc = Window.model_validate({**tou.model_dump(), "timezone": "UTC"})
    assert in_utc.opened_at(utc(2026, 1, 15, 15, 30)) is not None
    assert in_utc.opened_at(utc(2026, 1, 15, 21, 30)) is None


def test_a_window_spanning_midnight_belongs_to_the_day_it_starts():
    assert active_windows([NIGHT], utc(2026, 7, 4, 2, 0)) == [NIGHT]     # Saturday 02:00
    assert active_windows([NIGHT], utc(2026, 7, 4, 5, 59)) == [NIGHT]
    assert active_windows([NIGHT], utc(2026, 7, 4, 6, 0)) == []
    assert active_windows([NIGHT], utc(2026, 7, 3, 21, 59)) == []        # Friday before it opens
    assert active_windows([NIGHT], utc(2026, 7, 5, 2, 0)) == []          # Sunday


def test_a_month_list_across_the_new_year():
    winter = Window(name="winter", cron="0 18 * 12,1 *", duration_minutes=60, budget_kw=1)
    assert winter.opened_at(utc(2026, 12, 31, 18, 30)) is not None
    assert winter.opened_at(utc(2027, 1, 2, 18, 30)) is not None
    assert winter.opened_at(utc(2027, 2, 2, 18, 30)) is None


@pytest.mark.parametrize(("fields", "message"), [
    ({"cron": "0 15 * 6-9 1-5"}, "write days as names"),
    ({"cron": "0 15 * 6-9"}, "expected 5 fields"),
    ({"cron": "0 25 * * *"}, "higher than the maximum value"),
    ({"timezone": "America/Houston"}, "unknown time zone 'America/Houston'"),
    ({"budget_kw": None}, "must set budget_kw, budget_factor or options"),
    ({"budget_factor": 1.5}, "less than or equal to 1"),
])
def test_a_bad_window_is_refused_with_the_reason(fields, message):
    data = {"name": "w", "cron": "0 15 * * mon-fri", "duration_minutes": 60, "budget_kw": 5, **fields}
    with pytest.raises(ValidationError, match=message):
        Window.model_validate(data)


def test_a_time_without_zone_is_refused():
    with pytest.raises(ValueError, match="has no time zone"):
        active_windows([FOUR_CP], datetime(2026, 7, 15, 20, 0))


def site_at(at: datetime, power: float = 40.0):
    return dataclasses.replace(snapshot([miner("a"), miner("b"), miner("c")], budget=20_000, power=power), at=at)


def merit(options):
    return build_policy("merit-order", options)


def test_a_window_lowers_the_budget_of_any_policy():
    policy = WindowedPolicy(merit, {"min_dwell_seconds": 0}, [FOUR_CP, NIGHT])
    peak = policy.decide(site_at(utc(2026, 7, 15, 21, 0)))
    assert peak.planned_watts() <= 5_000 and "windows open: 4cp-peak (budget 5.0 kW)" in peak.summary
    night = policy.decide(site_at(utc(2026, 7, 4, 2, 0)))
    assert 10_000 - 100 <= night.planned_watts() <= 10_000  # half of 20 kW
    plain = policy.decide(site_at(utc(2026, 7, 15, 12, 0)))
    assert plain.planned_watts() == 12_000 and "windows" not in plain.summary


def test_the_lowest_budget_wins_and_options_apply_in_order():
    both = [Window(name="a", cron="0 0 * * *", duration_minutes=1440, budget_kw=8, options={"strike_usd_per_mwh": 30}),
            Window(name="b", cron="0 0 * * *", duration_minutes=1440, budget_kw=12,
                   options={"strike_usd_per_mwh": 50})]
    policy = WindowedPolicy(lambda o: build_policy("strike-price", o),
                            {"curtail_after_minutes": 0, "min_dwell_seconds": 0}, both)
    allocation = policy.decide(site_at(utc(2026, 7, 15, 12, 0), power=40))
    # strike 50 (b, applied last) keeps mining at $40 (a's 30 would curtail it); the 8 kW of a
    # holds one miner at 4 kW and one at what is left beside the third one's 15 W asleep.
    assert [allocation[d].watts for d in "abc"] == [4000, 8000 - 4000 - 15, 0]
    assert "windows open: a, b (budget 8.0 kW)" in allocation.summary


def test_a_window_changes_a_stateful_policys_options_and_keeps_its_state():
    cheap_strike = Window(name="4cp", cron="0 15 * 6-9 mon-fri", duration_minutes=240, timezone="America/Chicago",
                          options={"strike_usd_per_mwh": 20})
    policy = WindowedPolicy(lambda o: build_policy("strike-price", o),
                            {"strike_usd_per_mwh": 100, "curtail_after_minutes": 0, "restore_after_minutes": 0,
                             "hysteresis_usd_per_mwh": 0, "min_dwell_seconds": 0}, [cheap_strike])
    assert policy.stateful
    before = policy.decide(site_at(utc(2026, 7, 15, 19, 0)))
    assert before["a"].watts == 4000
    during = policy.decide(site_at(utc(2026, 7, 15, 21, 0)), before.state)
    assert during["a"].watts == 0 and during.state["curtailed"] is True
    after = policy.decide(site_at(utc(2026, 7, 16, 1, 0)), during.state)
    assert after["a"].watts == 4000


def test_a_bad_option_in_any_window_fails_when_the_policy_is_built():
    bad = Window(name="bad", cron="0 1 * * *", duration_minutes=60, options={"step_watts": 1})
    with pytest.raises(ValueError, match="step_watts"):
        WindowedPolicy(merit, {}, [bad])
