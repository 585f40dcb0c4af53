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
