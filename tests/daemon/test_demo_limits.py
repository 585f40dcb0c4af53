"""What the demo judges the true draw against: the scenario's cut from its start (it came with
notice), a cut sent while the demo runs from its start or once the site had time to respond."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from wattshift.daemon.demo.scenario import LimitsToMeet
from wattshift.model.budget import BudgetEvent, BudgetSchedule

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def test_a_cut_sent_without_notice_counts_once_the_site_had_time_to_respond():
    budget = BudgetSchedule(100_000, lead_seconds=10)
    budget.add(BudgetEvent("scenario-cut", 60_000, T0 + timedelta(seconds=5), T0 + timedelta(seconds=30)))
    now = [T0]
    judge = LimitsToMeet(budget, {"site": 100_000, "hall": 80_000}, response_seconds=12, clock=lambda: now[0])

    assert judge() == {"site": 100_000, "hall": 80_000}
    now[0] = T0 + timedelta(seconds=5)
    assert judge()["site"] == 60_000  # the scenario's cut: known from the start, due at its start

    now[0] = T0 + timedelta(seconds=40)  # an operator's cut, effective the moment it is sent
    budget.add(BudgetEvent("mqtt-cut-1", 30_000, now[0], now[0] + timedelta(seconds=60)))
    assert judge()["site"] == 100_000
    now[0] = T0 + timedelta(seconds=51)
    assert judge()["site"] == 100_000
    now[0] = T0 + timedelta(seconds=52)
    assert judge() == {"site": 30_000, "hall": 80_000}  # a budget is the site's limit

    # One sent with notice counts from its start, like the scenario's.
    budget.add(BudgetEvent("mqtt-cut-2", 20_000, now[0] + timedelta(seconds=20), now[0] + timedelta(seconds=40)))
    assert judge()["site"] == 30_000  # (the demo asks many times a second: it sees events as they come)
    now[0] = T0 + timedelta(seconds=72)
    assert judge()["site"] == 20_000
