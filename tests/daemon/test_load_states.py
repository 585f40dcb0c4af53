"""A load state's derived values (model/snapshot.py) are made once, when the state is made: they
must still say what their definitions say, for any state, after ``dataclasses.replace`` too, and
leave equality, hashing, repr and pickling as the fields alone make them."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
from factories import miner
from gpu_factories import gpu_node, job
from hypothesis import given
from hypothesis import strategies as st

from wattshift.model.jobs import JobState
from wattshift.model.miner import Failure
from wattshift.model.snapshot import IDLE_WATTS, GpuNodeState, MinerState

# The definitions, as the properties computed them on every call before they were made once.


def miner_worst_case(m: MinerState) -> float:
    if m.reading is None or m.failure is not None:
        return m.max_watts
    measured = m.reading.watts if m.reading.watts is not None else m.max_watts
    if not (m.waking or m.reads_on):
        return measured
    limit = m.reading.limit_watts if m.reading.limit_watts is not None else m.max_watts
    return max(measured, min(limit, m.max_watts))


def node_measured(n: GpuNodeState) -> float | None:
    if not n.readings or any(r.watts is None for r in n.readings):
        return None
    busy = [(r.utilisation_pct or 0.0) / 100 for r in n.readings]
    host = n.host_idle_watts + (n.host_max_watts - n.host_idle_watts) * sum(busy) / len(busy)
    return host + sum(r.watts or 0.0 for r in n.readings)


def node_cap(n: GpuNodeState) -> float | None:
    known = [c for c in (r.enforced_limit_watts or r.limit_watts for r in n.readings) if c is not None]
    return max(known) if known else None


def node_worst_case(n: GpuNodeState) -> float:
    if n.failure is not None or len(n.readings) < n.gpu_count:
        lost = n.gpu_count - len(n.readings)
        seen = sum(max(r.watts or 0.0, r.enforced_limit_watts or n.cap_max_watts) for r in n.readings)
        return n.host_max_watts + seen + lost * n.cap_max_watts
    measured = node_measured(n)
    if measured is None:
        return n.max_watts
    if not (n.waking or n.reads_on):
        return measured
    cap = min(node_cap(n) or n.cap_max_watts, n.cap_max_watts)
    return max(measured, n.watts_at_cap(cap))


watts = st.one_of(st.none(), st.floats(0, 5000))
failures = st.one_of(st.none(), st.sampled_from(Failure))


@st.composite
def miners(draw: st.DrawFn) -> MinerState:
    return miner("m", watts=draw(watts), limit=draw(watts), mining=draw(st.sampled_from([True, False, None])),
                 failure=draw(failures), answered=draw(st.booleans()), waking=draw(st.booleans()))


@st.composite
def nodes(draw: st.DrawFn) -> GpuNodeState:
    state = draw(st.sampled_from([None, JobState.RUNNING, JobState.SUSPENDED, JobState.PENDING]))
    node = gpu_node("g", job=None if state is None else job(state=state), failure=draw(failures),
                    lost=draw(st.integers(0, 8)), cap=draw(st.floats(200, 700)))
    readings = tuple(dataclasses.replace(r, watts=draw(watts), limit_watts=draw(watts),
                                         enforced_limit_watts=draw(watts), utilisation_pct=draw(watts))
                     for r in node.readings)
    return dataclasses.replace(node, readings=readings, waking=draw(st.booleans()))


@given(miners())
def test_a_miners_derived_values_say_what_their_definitions_say(m: MinerState):
    measured = m.reading.watts if m.reading is not None else None
    on = m.waking or m.reads_on
    assert m.is_on == on
    assert m.controllable == (m.reading is not None and m.failure is None)
    assert m.idle_watts == (measured if not on and measured is not None else IDLE_WATTS)
    assert m.worst_case_watts == miner_worst_case(m)
    assert m.limit_watts == (m.reading.limit_watts if m.reading is not None else None)
    assert m.measured_watts == measured


@given(nodes())
def test_a_gpu_nodes_derived_values_say_what_their_definitions_say(n: GpuNodeState):
    measured, cap, on = node_measured(n), node_cap(n), n.waking or n.reads_on
    assert n.is_on == on
    assert n.controllable == (n.failure is None and len(n.readings) == n.gpu_count)
    assert n.measured_watts == measured
    assert n.cap_watts == cap
    assert n.limit_watts == (None if cap is None else n.watts_at_cap(cap))
    assert n.idle_watts == (measured if not on and measured is not None else 500.0 + 8 * 80.0)
    assert n.worst_case_watts == node_worst_case(n)


def test_replace_makes_the_derived_values_anew():
    asleep = miner("m", watts=20.0, limit=3000.0, mining=False)
    assert (asleep.is_on, asleep.idle_watts, asleep.worst_case_watts) == (False, 20.0, 20.0)
    woken = dataclasses.replace(asleep, waking=True)
    assert (woken.is_on, woken.idle_watts, woken.worst_case_watts) == (True, IDLE_WATTS, 3000.0)
    unread = dataclasses.replace(woken, reading=None, failure=Failure.NO_ANSWER)
    assert (unread.controllable, unread.worst_case_watts) == (False, unread.max_watts)

    idle = gpu_node("g", job=job(state=JobState.SUSPENDED), card_watts=80.0)
    running = dataclasses.replace(idle, job=job(state=JobState.RUNNING))
    assert (idle.is_on, running.is_on) == (False, True)
    assert idle.worst_case_watts == idle.measured_watts < running.worst_case_watts == 1500.0 + 8 * 700.0
    recapped = dataclasses.replace(running, readings=tuple(
        dataclasses.replace(r, limit_watts=400.0, enforced_limit_watts=400.0) for r in running.readings))
    assert (recapped.cap_watts, recapped.limit_watts) == (400.0, 1500.0 + 8 * 400.0)


@pytest.mark.parametrize("make", [lambda: miner("m", watts=20.0, mining=False),
                                  lambda: gpu_node("g", job=job(), card_watts=650.0)])
def test_the_derived_values_leave_equality_hashing_repr_and_pickling_to_the_fields(make):
    a, b = make(), make()
    assert a == b and hash(a) == hash(b)
    assert "_is_on" not in repr(a) and "_worst_case_watts" not in repr(a)
    copy = pickle.loads(pickle.dumps(a))
    assert copy == a and (copy.is_on, copy.worst_case_watts, copy.idle_watts) == (a.is_on, a.worst_case_watts,
                                                                                  a.idle_watts)
    assert a != dataclasses.replace(a, waking=not a.waking)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a._is_on = True  # type: ignore[misc]
    with pytest.raises(TypeError):
        type(a)(**{f.name: getattr(a, f.name) for f in dataclasses.fields(a) if f.init}, _is_on=True)
