import pytest
from hypothesis import given
from hypothesis import strategies as st

from wattshift.model.limits import LimitTree

TREE = LimitTree(
    {"site": 100.0, "tx": 60.0, "a": 30.0, "b": 40.0},
    {"site": None, "tx": "site", "a": "tx", "b": "tx"},
)


def test_a_load_counts_on_its_circuit_and_every_ancestor():
    loads = TREE.loads([("a", 10.0), ("b", 5.0), ("site", 7.0)])
    assert loads == {"site": 22.0, "tx": 15.0, "a": 10.0, "b": 5.0}


def test_headroom_is_the_tightest_ancestor():
    loads = TREE.loads([("b", 35.0)])
    assert TREE.headroom("b", loads) == 5.0  # b: 40 - 35
    assert TREE.headroom("a", loads) == 25.0  # tx: 60 - 35 is tighter than a's 30
    assert TREE.violations(loads) == []
    over = TREE.loads([("a", 31.0)])
    assert [v.circuit for v in TREE.violations(over)] == ["a"]


def test_a_cycle_is_refused():
    tree = LimitTree({"site": 1.0, "x": 1.0, "y": 1.0}, {"site": None, "x": "y", "y": "x"})
    with pytest.raises(ValueError, match="own ancestor"):
        tree.path("x")


@given(st.lists(st.tuples(st.sampled_from(["site", "tx", "a", "b"]), st.floats(0, 50)), max_size=20))
def test_site_load_is_the_sum_of_all_draws(draws):
    loads = TREE.loads(draws)
    assert loads["site"] == pytest.approx(sum(w for _, w in draws))
    assert loads["tx"] == pytest.approx(sum(w for c, w in draws if c in ("tx", "a", "b")))


def draw_by_draw(draws):
    """Every circuit's total, added up draw by draw in the order given."""
    totals = dict.fromkeys(TREE.limits, 0.0)
    for circuit, watts in draws:
        for node in TREE.path(circuit):
            totals[node] += watts
    return totals


circuits = st.sampled_from(["site", "tx", "a", "b"])
# Watts far apart in size, so that a sum grouped differently (by circuit first) comes out different.
far_apart = st.one_of(st.floats(0, 50), st.sampled_from([1e16, -1e16, 0.1, 3.3]))


@given(st.lists(st.tuples(circuits, far_apart), max_size=40)
       | st.lists(st.tuples(circuits, st.lists(far_apart, min_size=1, max_size=12)), max_size=8).map(
           lambda runs: [(c, w) for c, ws in runs for w in ws]))
def test_loads_add_up_draw_by_draw_in_order_in_runs_or_in_no_order(draws):
    # The second strategy gives runs of draws on one circuit, the first mostly draws in no order:
    # loads() takes runs whole and must add exactly what the draw-by-draw loop adds.
    assert TREE.loads(iter(draws)) == draw_by_draw(draws)


def test_loads_in_runs_add_in_the_order_given_not_circuit_by_circuit():
    # Draw by draw the site sees 1e16 + 1.0 (the 1.0 lost), then 0.0, then 1.0; summed by circuit
    # first it would see 0.0 (a) + 2.0 (b). Runs of five take loads() off the draw-by-draw path.
    quiet = [0.0] * 4
    draws = [(c, w) for c, first in [("a", 1e16), ("b", 1.0), ("a", -1e16), ("b", 1.0)] for w in [first, *quiet]]
    assert TREE.loads(draws)["site"] == draw_by_draw(draws)["site"] == 1.0
    with pytest.raises(KeyError):
        TREE.loads([("a", 1.0), *[("nowhere", 2.0)] * 5])
