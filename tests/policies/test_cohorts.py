"""The cohort path (wattshift.policies.cohorts) decides exactly as the per-load heap does.

Seeded random sites, each drawn to stress one thing the cohort path does differently: runs of
identical miners split by a limit, ties between groups, rungs worth more than the one before,
lost miners counted at their maximum, stale prices, dwell times, overrides, GPU nodes.
"""

from __future__ import annotations

import dataclasses
import math
import random
from datetime import UTC, datetime

import pytest

from tests.factories import miner, snapshot
from tests.gpu_factories import gpu_node, job
from wattshift.daemon.control.sequencer import plan_transition
from wattshift.model.jobs import FlexTier, JobState
from wattshift.model.miner import Failure, MinerCapability, PowerControl
from wattshift.model.snapshot import DeviceClass, EfficiencyCurve, SiteSnapshot
from wattshift.model.specs import DEFAULT_SWITCHING, NO_MINER_SWITCHING, MinerSwitching
from wattshift.policies.base import Allocation
from wattshift.policies.merit_order import MeritOrderOptions, MeritOrderPolicy
from wattshift.policies.overrides import Forced, Override, OverridePolicy, Overrides

CURVES = (EfficiencyCurve(3500, 200), EfficiencyCurve(3010, 140), EfficiencyCurve(3400, 186, 1.6),
          EfficiencyCurve(3000, 100, 1.0))  # exponent 1: every rung above the first worth the same
CAPABILITIES = (
    MinerCapability(PowerControl.WATTS, 1800, 4000),
    MinerCapability(PowerControl.WATTS, 1200, 3400),
    MinerCapability(PowerControl.PROFILES, 2000, 3600, (2000.0, 2600.0, 3100.0, 3600.0)),
    MinerCapability(PowerControl.ON_OFF, 3250, 3250),
)
# Free switching, the model table's figures, and a long minimum down time with no wear: the first
# rung of a sleeping miner and every miner's dwell time depend on them.
SWITCHINGS = (NO_MINER_SWITCHING, DEFAULT_SWITCHING, MinerSwitching(600.0, 500.0, 0.0, 0.0, 3600.0))


def random_site(rng: random.Random, *, miners: int, gpus: int) -> SiteSnapshot:
    containers = rng.randint(1, 6)
    feeders = rng.randint(1, containers)
    circuits: dict[str, tuple[float, str]] = {}
    for f in range(feeders):
        circuits[f"f{f}"] = (rng.choice([1e9, rng.randrange(5, 60) * 3500.0]), "site")
    for c in range(containers):
        circuits[f"c{c}"] = (rng.choice([1e9, rng.randrange(3, 30) * 3000.0, rng.uniform(5e3, 1e5)]),
                             f"f{c % feeders}")
    leaves = ["site", *circuits]
    kinds = rng.sample(range(len(CURVES) * len(CAPABILITIES)), rng.randint(1, 5))
    fleet = []
    ids = rng.sample(range(1, 255 * 40), miners)
    for n in ids:
        kind = rng.choice(kinds)
        curve, capability = CURVES[kind % len(CURVES)], CAPABILITIES[kind // len(CURVES)]
        switching = SWITCHINGS[kind % len(SWITCHINGS)] if rng.random() < 0.8 else rng.choice(SWITCHINGS)
        roll = rng.random()
        on = roll < 0.7
        top = min(capability.max_watts, 3500.0)
        watts = rng.choice([top, capability.min_watts, 3000.0]) if on else rng.choice([15.0, 15.0, 40.0, 90.5])
        since = rng.choice([None, None, 9_900.0, 9_000.0])
        fleet.append(miner(
            f"10.{n // 255 // 40}.{n // 255 % 40}.{n % 255}", circuit=rng.choice(leaves), watts=watts,
            limit=rng.choice([top, capability.min_watts, 2500.0]) if on else None, mining=on,
            curve=curve, capability=capability, state_since=since, switching=switching,
            answered=rng.random() > 0.05, failure=Failure.TIMEOUT if rng.random() < 0.03 else None,
        ))
    nodes = []
    for n in range(gpus):
        state = rng.choice([JobState.RUNNING, JobState.RUNNING, JobState.SUSPENDED, JobState.PENDING])
        work = rng.choice([None, job(f"j{n % 3}", state=state, usd_per_gpu_hour=rng.choice([2.35, 1.1, 0.01, None]),
                                     tier=rng.choice(list(FlexTier)), stale=rng.random() < 0.1,
                                     restart_seconds=rng.choice([0.0, 600.0]), penalty=rng.choice([0.0, 5.0]),
                                     min_run_seconds=rng.choice([0.0, 3600.0]))])
        nodes.append(gpu_node(f"gpu-{n:03d}", circuit=rng.choice(leaves), job=work,
                              cap=rng.choice([700.0, 450.0]), lost=1 if rng.random() < 0.05 else 0,
                              state_since=rng.choice([None, 9_800.0])))
    total = sum(m.capability.max_watts for m in fleet) + 7100.0 * gpus
    stale = rng.random() < 0.1
    return snapshot(fleet, budget=rng.uniform(0.2, 1.1) * total, circuits=circuits, stale=stale,
                    power=rng.choice([40.0, 70.0, 105.0, 160.0]), gpu_nodes=nodes)


def same(snap: SiteSnapshot, fast: Allocation, reference: Allocation) -> None:
    assert fast.summary == reference.summary
    assert fast.targets == reference.targets
    assert plan_transition(snap, fast) == plan_transition(snap, reference)


@pytest.mark.parametrize("seed", range(300))
def test_cohort_path_decides_as_the_per_load_heap(seed: int) -> None:
    rng = random.Random(seed)
    snap = random_site(rng, miners=rng.choice([3, 20, 120, 400]), gpus=rng.choice([0, 0, 3, 12]))
    options = MeritOrderOptions(step_watts=rng.choice([100.0, 250.0]),
                                hysteresis_usd_per_mwh=rng.choice([0.0, 2.0]),
                                min_dwell_seconds=rng.choice([0.0, 300.0]))
    policy = MeritOrderPolicy(options)
    same(snap, policy.decide(snap), policy.decide_per_load(snap))


@pytest.mark.parametrize("seed", range(40))
def test_cohort_path_decides_as_the_per_load_heap_under_overrides(seed: int) -> None:
    rng = random.Random(1000 + seed)
    snap = random_site(rng, miners=150, gpus=4)
    overrides = Overrides()
    for load in rng.sample(snap.loads, 10):
        overrides.set_device(load.device_id, Override(rng.choice(list(Forced))))
    if rng.random() < 0.3:
        overrides.set_class(DeviceClass.GPU, Override(Forced.ON, until=datetime(2030, 1, 1, tzinfo=UTC)))
    policy = MeritOrderPolicy()

    class PerLoad:
        name = "per-load"

        def decide(self, s: SiteSnapshot) -> Allocation:
            return policy.decide_per_load(s)

    same(snap, OverridePolicy(policy, overrides).decide(snap), OverridePolicy(PerLoad(), overrides).decide(snap))


def test_a_run_split_by_a_limit_is_taken_in_device_id_order() -> None:
    """Ten identical miners, room for the first rung of seven: the seven lowest ids get it."""
    fleet = [miner(f"10.0.0.{n}", watts=15.0, limit=None, mining=False) for n in (9, 3, 7, 1, 5, 2, 8, 4, 6, 10)]
    snap = snapshot(fleet, budget=7 * 1800 + 3 * 15, power=40.0)
    allocation = MeritOrderPolicy().decide(snap)
    on = sorted((t.device_id for t in allocation if t.watts), key=lambda d: int(d.rsplit(".", 1)[1]))
    assert on == [f"10.0.0.{n}" for n in (1, 2, 3, 4, 5, 6, 10)]  # "10.0.0.10" sorts before "10.0.0.2"
    assert allocation.targets == MeritOrderPolicy().decide_per_load(snap).targets


def test_groups_are_few_on_a_site_of_few_models() -> None:
    rng = random.Random(7)
    fleet = [miner(f"10.0.{n // 250}.{n % 250}", circuit="site", watts=3500.0, curve=CURVES[n % 2])
             for n in range(1000)]
    rng.shuffle(fleet)
    snap = snapshot(fleet, budget=2.5e6, power=40.0)
    from wattshift.policies.merit_order import _CohortWaterFill  # the grouping is the point here

    fill = _CohortWaterFill(snap, MeritOrderOptions())
    assert len(fill.groups) == 2
    assert fill.run().targets == MeritOrderPolicy().decide_per_load(snap).targets


@pytest.mark.parametrize("short", [False, True])
def test_a_run_that_fits_to_the_last_float_is_taken_whole_and_one_short_is_not(short: bool) -> None:
    """The run is summed add by add, as the heap would: at exactly the budget every miner gets
    its first rung; a hair under it, the last one does not."""
    fleet = [miner(f"10.0.{n // 200}.{n % 200}", watts=0.1, limit=None, mining=False) for n in range(1000)]
    delta = 1800 - 0.1
    before_last = 0.0
    for _ in fleet:
        before_last += 0.1
    for _ in fleet[1:]:
        before_last += delta
    budget = before_last + delta
    while budget - before_last < delta:  # the smallest budget at which the last one fits
        budget = math.nextafter(budget, math.inf)
    while math.nextafter(budget, 0.0) - before_last >= delta:
        budget = math.nextafter(budget, 0.0)
    budget = math.nextafter(budget, 0.0) if short else budget
    snap = snapshot(fleet, budget=budget, power=40.0)
    allocation = MeritOrderPolicy().decide(snap)
    assert sum(1 for t in allocation if t.watts) == (999 if short else 1000)
    assert allocation.targets == MeritOrderPolicy().decide_per_load(snap).targets


def test_miners_group_by_the_values_of_their_parts_not_by_the_objects() -> None:
    """Each miner with its own capability, curve and switching objects (as the live loop and the
    site model build them): equal values make one group, one differing number a group of its own,
    and the decision is the per-load path's."""
    base = MinerSwitching(120.0, 400.0, 0.5, 600.0, 900.0)
    fleet = []
    for n in range(60):
        # A copy per miner; every tenth with a longer minimum down time, every seventh a wider range.
        switching = dataclasses.replace(base, min_down_seconds=1800.0 if n % 10 == 0 else 900.0)
        capability = MinerCapability(PowerControl.WATTS, 1800, 4000 if n % 7 else 3800)
        on = n % 3 != 0
        fleet.append(miner(f"10.0.0.{n}", watts=3500.0 if on else 15.0, limit=3500.0 if on else None, mining=on,
                           curve=EfficiencyCurve(3500, 200), capability=capability, switching=switching,
                           state_since=9_000.0))
    snap = snapshot(fleet, budget=150_000.0, power=40.0)
    from wattshift.policies.merit_order import _CohortWaterFill  # the grouping is the point here

    fill = _CohortWaterFill(snap, MeritOrderOptions())
    kinds = {(m.switching, m.capability, m.is_on) for m in fleet}
    assert len(kinds) == 7 and len(fill.groups) == len(kinds)
    policy = MeritOrderPolicy()
    same(snap, policy.decide(snap), policy.decide_per_load(snap))
