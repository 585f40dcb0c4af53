"""Switching physics in the back-test's site model (issue 15): boot, wear, minimum up and down.

An S21 from the spec table boots for 300 s at 350 W, wears $0.25 a start, and keeps 900 s up and
900 s down; the site file may change any of it per miner group.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from backtest_factories import FREE_SWITCHING, site, trace

from wattshift.daemon.backtest.replay import run_backtest
from wattshift.daemon.backtest.site import load_backtest_site
from wattshift.daemon.backtest.site_model import SiteModel
from wattshift.daemon.config.yamlfile import FileInvalid
from wattshift.daemon.control.sequencer import Action, Step, plan_transition
from wattshift.model.snapshot import Prices
from wattshift.model.specs import SPECS
from wattshift.policies.base import Allocation, Target
from wattshift.policies.catalog import make_policy

FREE = {"site": 1e9}
S21 = SPECS["Antminer S21"]


def wake(device_id: str, watts: float = 3500) -> Step:
    return Step(device_id, "site", Action.WAKE, watts, 12, watts, "test")


def sleep(device_id: str) -> Step:
    return Step(device_id, "site", Action.SLEEP, 0, 3500, 12, "test")


def run(model: SiteModel, seconds: float, hashprice: float = 45.0):
    return model.advance(seconds, hashprice=hashprice, power_price=30, limits=FREE)


def one_s21(**switching: float) -> SiteModel:
    group = {"model": "Antminer S21", "count": 1, **({"switching": switching} if switching else {})}
    return SiteModel(site(miners=[group]))


def read(model: SiteModel, clock: float):
    return model.snapshot(at=trace([{"power": 30}]).rows[0].at, clock=clock, budget_watts=1e9,
                          prices=Prices(45.0, 30.0)).miner("m0-0")


def test_a_woken_miner_draws_its_boot_watts_and_hashes_nothing_until_it_has_booted() -> None:
    model = one_s21()
    model.apply([wake("m0-0")], 0.0)
    booting = run(model, 300)
    assert booting.mining_usd == 0.0
    assert booting.miner_wh == pytest.approx(S21.boot_watts * 300 / 3600)
    assert (booting.miner_starts, booting.wear_usd) == (1, pytest.approx(S21.wear_usd_per_cycle))
    up = run(model, 300)
    ramp = (3500 - S21.boot_watts) / 600  # then it ramps from its boot draw to its set point
    assert up.miner_wh == pytest.approx((ramp * (S21.boot_watts + 3500) / 2 + (300 - ramp) * 3500) / 3600)
    assert up.mining_usd > 0 and up.miner_starts == 0 and up.wear_usd == 0


def test_a_boot_longer_than_the_interval_carries_over_and_a_free_one_hashes_at_once() -> None:
    slow = one_s21(boot_seconds=450)
    slow.apply([wake("m0-0")], 0.0)
    assert run(slow, 300).mining_usd == 0.0
    assert read(slow, 300).waking  # still booting: the loop must count it on, at its limit
    rest = run(slow, 300)
    assert rest.miner_wh > S21.boot_watts * 150 / 3600 and rest.mining_usd > 0
    free = one_s21(**FREE_SWITCHING)
    free.apply([wake("m0-0")], 0.0)
    assert run(free, 300).mining_usd > 0


def test_a_booting_miner_counts_at_the_limit_it_will_climb_to() -> None:
    model = one_s21()
    model.apply([wake("m0-0", 4000)], 0.0)
    run(model, 300)  # boot just over: still reading its boot draw, below what reads as running
    state = read(model, 300)
    assert state.measured_watts == S21.boot_watts
    assert state.is_on and state.worst_case_watts == 4000


def test_a_start_within_the_minimum_down_time_is_refused_and_counted() -> None:
    model = one_s21()
    model.apply([wake("m0-0")], 0.0)
    run(model, 1000)
    model.apply([sleep("m0-0")], 1000.0)
    model.apply([wake("m0-0")], 1000.0 + S21.min_down_seconds - 1)
    refused = run(model, 300)
    assert (refused.refused_starts, refused.miner_starts, refused.wear_usd) == (1, 0, 0.0)
    assert not read(model, 1600).is_on  # it stays asleep
    model.apply([wake("m0-0")], 1000.0 + S21.min_down_seconds)
    assert run(model, 300).miner_starts == 1


def test_a_stop_within_the_minimum_up_time_is_carried_out_and_counted() -> None:
    model = one_s21()
    model.apply([wake("m0-0")], 0.0)
    run(model, 600)
    model.apply([sleep("m0-0")], 600.0)  # a cut: it must be obeyed
    stopped = run(model, 300)
    assert stopped.min_up_breaks == 1 and stopped.miner_wh == pytest.approx(S21.sleep_watts * 300 / 3600)
    model.apply([wake("m0-0")], 2000.0)
    run(model, 2000)
    model.apply([sleep("m0-0")], 4000.0)  # after its minimum up time: no break
    assert run(model, 300).min_up_breaks == 0


def test_wear_is_in_the_margin_and_the_report() -> None:
    rows = [{"power": 20}] * 4
    result = run_backtest(site(miners=[{"model": "Antminer S21", "count": 3}]), make_policy("merit-order", {}),
                          trace(rows, minutes=5))
    t = result.totals
    assert t.miner_starts == 3 and t.wear_usd == pytest.approx(0.75)
    assert t.margin_usd == pytest.approx(t.revenue_usd - t.power_usd - t.switching_usd - 0.75)
    summary = result.summary()
    assert (summary["miner_starts"], summary["wear_cost_usd"], summary["refused_starts"],
            summary["min_up_breaks"]) == (3, 0.75, 0, 0)


def test_the_sequencer_holds_a_wake_within_the_minimum_down_time() -> None:
    model = one_s21()
    model.apply([wake("m0-0")], 0.0)
    run(model, 1000)
    model.apply([sleep("m0-0")], 1000.0)
    run(model, 300)
    snap = model.snapshot(at=trace([{"power": 30}]).rows[0].at, clock=1300.0, budget_watts=1e9,
                          prices=Prices(45.0, 30.0))
    plan = plan_transition(snap, Allocation((Target("m0-0", 3500, "a policy that ignores min down"),)))
    assert plan.now == () and [s.device_id for s in plan.held] == ["m0-0"]
    later = model.snapshot(at=snap.at, clock=1000.0 + S21.min_down_seconds, budget_watts=1e9,
                           prices=Prices(45.0, 30.0))
    assert [s.action for s in plan_transition(later, Allocation((Target("m0-0", 3500, "t"),))).now] == [Action.WAKE]


def test_a_group_override_changes_only_the_fields_it_names(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("name: barn\nbudget_kw: 50\nminers:\n"
                    "  - {model: Antminer S21, count: 2, switching: {boot_seconds: 120, wear_usd_per_cycle: 1.5}}\n"
                    "  - {model: Antminer S19 XP, count: 1}\n")
    loaded = load_backtest_site(path)
    first, second = (g.kind.spec for g in loaded.miners)
    assert (first.boot_seconds, first.wear_usd_per_cycle, first.boot_watts, first.min_up_seconds) == (
        120, 1.5, S21.boot_watts, S21.min_up_seconds)
    assert second.boot_seconds == SPECS["Antminer S19 XP"].boot_seconds
    model = SiteModel(loaded)
    model.apply([wake("m0-0")], 0.0)
    assert run(model, 300).wear_usd == 1.5


@pytest.mark.parametrize(
    ("switching", "message"),
    [
        ("{boot_seconds: -5}", "miners[0].switching.boot_seconds: Input should be greater than or equal to 0"),
        ("{boot_secs: 60}", "miners[0].switching.boot_secs: Extra inputs are not permitted"),
        ("{wear_usd_per_cycle: lots}", "miners[0].switching.wear_usd_per_cycle: Input should be a valid number"),
        ("{boot_watts: 9000}", "switching.boot_watts: 9000 is above the 4000 W a Antminer S21 may draw"),
    ],
)
def test_a_bad_override_is_refused_naming_field_value_and_reason(tmp_path: Path, switching: str, message: str) -> None:
    path = tmp_path / "site.yaml"
    group = f"{{model: Antminer S21, count: 2, switching: {switching}}}"
    path.write_text(f"name: barn\nbudget_kw: 50\nminers:\n  - {group}\n")
    with pytest.raises(FileInvalid) as caught:
        load_backtest_site(path)
    assert message in str(caught.value)
