"""The sequencer's promise: sheds first, grants only into headroom that is already real."""

from factories import miner, snapshot
from hypothesis import given, settings
from hypothesis import strategies as st

from wattshift.daemon.control.sequencer import Action, plan_transition
from wattshift.model.limits import LimitTree
from wattshift.policies.base import Allocation, Target


def allocate(**watts: float) -> Allocation:
    return Allocation(tuple(Target(d, w, "test") for d, w in watts.items()))


def test_a_grant_waits_for_the_shed_that_makes_room_for_it():
    site = snapshot([miner("a", watts=3500, limit=3500), miner("b", watts=12, mining=False)], budget=5_600)
    plan = plan_transition(site, allocate(a=1800, b=3500))
    assert [(s.device_id, s.action) for s in plan.sheds] == [("a", Action.SET_LIMIT)]
    assert plan.grants == ()
    assert [(s.device_id, s.action, s.watts) for s in plan.deferred] == [("b", Action.WAKE, 3500)]


def test_a_grant_that_fits_beside_the_unconfirmed_shed_goes_at_once():
    site = snapshot([miner("a", watts=3500, limit=3500), miner("b", watts=12, mining=False)], budget=9_000)
    plan = plan_transition(site, allocate(a=1800, b=3500))
    assert [s.device_id for s in plan.now] == ["a", "b"]  # shed first, then grant
    assert plan.deferred == ()


def test_a_miner_still_ramping_down_counts_at_what_it_draws():
    # Limit already lowered to 2000 but still drawing 3400: only 1600 W of room, not 3000.
    site = snapshot([miner("a", watts=3400, limit=2000), miner("b", watts=3000, limit=3000)], budget=8_000)
    plan = plan_transition(site, allocate(a=2000, b=4000))
    assert [s.device_id for s in plan.deferred] == []  # 3400 + 4000 = 7400 fits
    tight = snapshot([miner("a", watts=3400, limit=2000), miner("b", watts=3000, limit=3000)], budget=7_000)
    assert [s.device_id for s in plan_transition(tight, allocate(a=2000, b=4000)).deferred] == ["b"]


def test_small_changes_send_no_command_and_unreachable_miners_get_none():
    site = snapshot([miner("a", limit=3000), miner("gone", answered=False)], budget=20_000)
    assert plan_transition(site, allocate(a=3030, gone=0)).empty


def test_sleep_is_a_shed_and_wake_sets_the_limit_first():
    site = snapshot([miner("a"), miner("b", watts=12, mining=False)], budget=20_000)
    plan = plan_transition(site, allocate(a=0, b=2500))
    assert [(s.action, s.watts) for s in plan.sheds] == [(Action.SLEEP, 0.0)]
    assert [(s.action, s.watts) for s in plan.grants] == [(Action.WAKE, 2500)]


def test_a_miner_told_to_wake_counts_at_its_limit_until_it_runs():
    # Real hashboards take minutes to come up after a wake; meanwhile it reads as asleep.
    import dataclasses

    waking = dataclasses.replace(miner("w", watts=12, limit=3000, mining=False), waking=True)
    assert waking.worst_case_watts == 3000
    site = snapshot([waking, miner("b", watts=12, mining=False)], budget=5_000)
    plan = plan_transition(site, allocate(w=3000, b=2500))
    assert plan.now == ()  # no second wake for w; no room for b beside w's 3 kW
    assert [s.device_id for s in plan.deferred] == ["b"]


@settings(max_examples=100, deadline=None)
@given(
    budget=st.floats(5_000, 30_000),
    states=st.lists(
        st.tuples(st.floats(10, 4000), st.floats(1800, 4000), st.booleans(), st.floats(0, 4000),
                  st.sampled_from(["site", "pdu"])),
        min_size=1, max_size=10,
    ),
)
def test_worst_case_during_the_transition_never_exceeds_a_limit_that_held_before(budget, states):
    miners = [
        miner(f"m{i}", watts=min(w, lim) if on else 12, limit=lim, mining=on, circuit=c)
        for i, (w, lim, on, _, c) in enumerate(states)
    ]
    site = snapshot(miners, budget=budget, circuits={"pdu": (budget / 2, "site")})
    tree = LimitTree(site.effective_limits(), site.circuit_parents)
    before = tree.loads((m.circuit, m.worst_case_watts) for m in miners)
    targets = allocate(**{f"m{i}": (t if t >= 1800 else 0) for i, (*_, t, _c) in enumerate(states)})
    plan = plan_transition(site, targets)
    # While sheds are unconfirmed they count at their old draw; grants at their new worst case.
    during = dict(before)
    for step in plan.grants:
        tree.add(step.circuit, step.worst_after - step.worst_before, during)
    for circuit, limit in tree.limits.items():
        if before[circuit] <= limit:
            assert during[circuit] <= limit + 1e-6
        else:  # already over: nothing may add to it
            assert during[circuit] <= before[circuit] + 1e-6


def test_a_wake_inside_the_minimum_down_time_is_held_and_a_shed_inside_the_minimum_up_time_is_not():
    from wattshift.model.specs import SPECS

    sw = SPECS["Antminer S21"].switching  # 900 s up, 900 s down
    asleep = miner("b", watts=12, mining=False, state_since=10_000.0 - 600, switching=sw)
    running = miner("a", watts=3500, limit=3500, state_since=10_000.0 - 60, switching=sw)
    plan = plan_transition(snapshot([running, asleep], budget=20_000), allocate(a=0, b=3500))
    assert [(s.device_id, s.action) for s in plan.sheds] == [("a", Action.SLEEP)]  # a limit may demand it
    assert plan.grants == () and plan.deferred == ()
    assert [(s.device_id, s.action) for s in plan.held] == [("b", Action.WAKE)]
    rested = miner("b", watts=12, mining=False, state_since=10_000.0 - 900, switching=sw)
    assert [s.device_id for s in plan_transition(snapshot([rested], budget=20_000), allocate(b=3500)).grants] == ["b"]
