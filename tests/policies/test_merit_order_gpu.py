"""One merit order over miners and GPU nodes: known answers from DESIGN.md section 4 numbers.

An 8x H100 node (host 1.5 kW busy, 8 x 700 W cards: 7.1 kW) running a job worth $2.35/GPU-hour earns
$18.80/h at full caps on 7.1 kW: about $2,650/MWh, against $65-300/MWh for mining. So GPU work
comes first, miners absorb the rest, and a short budget sheds miners before it touches a cap.
"""

from factories import miner, snapshot
from gpu_factories import H100_FULL_NODE_WATTS as NODE_FULL
from gpu_factories import gpu_node, job

from wattshift.daemon.control.sequencer import Action, plan_transition
from wattshift.model.jobs import FlexTier, JobState
from wattshift.policies.merit_order import MeritOrderOptions, MeritOrderPolicy

POLICY = MeritOrderPolicy(MeritOrderOptions(min_dwell_seconds=0, hysteresis_usd_per_mwh=0))


def test_a_waiting_job_takes_power_from_the_miners():
    site = snapshot(
        [miner("a"), miner("b"), miner("c")],
        gpu_nodes=[gpu_node("gpu-1", job=job(state=JobState.PENDING))],
        budget=12_000, power=40,
    )
    allocation = POLICY.decide(site)
    assert allocation["gpu-1"].watts == NODE_FULL
    assert allocation.targets[0].device_id == "gpu-1"  # best value first: granted first
    miners = sum(allocation[d].watts for d in "abc")
    assert miners <= 12_000 - NODE_FULL
    assert "cap 700 W/GPU" in allocation["gpu-1"].reason


def test_shed_order_is_miners_then_caps_then_jobs():
    # 6 kW cannot hold the node at full caps (7.1 kW) but can at lower caps (min 3.1 kW).
    site = snapshot(
        [miner("a")], gpu_nodes=[gpu_node("gpu-1", job=job())], budget=6_000, power=40,
    )
    allocation = POLICY.decide(site)
    assert allocation["a"].watts == 0  # the miner goes first
    assert 1500 + 8 * 200 <= allocation["gpu-1"].watts <= 6_000 - 15  # then the caps come down
    assert allocation["gpu-1"].watts < NODE_FULL


def test_a_suspendable_job_goes_before_a_preemptible_one():
    # Same value, but requeueing loses restart time and pays a penalty: it is worth more to keep.
    site = snapshot(
        [],
        gpu_nodes=[
            gpu_node("susp", job=job("1", tier=FlexTier.SUSPENDABLE)),
            gpu_node("pre", job=job("2", tier=FlexTier.PREEMPTIBLE, penalty=20, restart_seconds=600)),
        ],
        budget=5_000, power=40,  # room for one node at minimum caps (3.1 kW), not two
    )
    allocation = POLICY.decide(site)
    assert allocation["pre"].watts > 0
    assert allocation["susp"].watts == 0


def test_firm_load_is_never_curtailed_even_over_budget():
    firm = gpu_node("rented", job=job(tier=FlexTier.FIRM))
    site = snapshot([miner("a")], gpu_nodes=[firm], budget=5_000, power=40)
    allocation = POLICY.decide(site)
    assert allocation["rented"].watts == firm.worst_case_watts
    assert "never curtailed" in allocation["rented"].reason
    plan = plan_transition(site, allocation)
    assert all(s.device_id != "rented" for s in plan.now + plan.deferred)


def test_power_dearer_than_the_job_is_worth_suspends_it():
    # $2.35 x 8 / 3.1 kW at minimum caps = about $5,400/MWh best value; a $9,000 spike beats it.
    site = snapshot([], gpu_nodes=[gpu_node("gpu-1", job=job())], budget=20_000, power=9_000)
    allocation = POLICY.decide(site)
    assert allocation["gpu-1"].watts == 0
    plan = plan_transition(site, allocation)
    assert [(s.device_id, s.action) for s in plan.sheds] == [("gpu-1", Action.SLEEP)]


def test_a_stale_rate_never_starts_a_job():
    site = snapshot([], gpu_nodes=[gpu_node("gpu-1", job=job(state=JobState.PENDING, stale=True))],
                    budget=20_000, power=40)
    allocation = POLICY.decide(site)
    assert allocation["gpu-1"].watts == 0
    assert "stale" in allocation["gpu-1"].reason


def test_a_lost_card_counts_the_node_at_its_maximum():
    node = gpu_node("gpu-1", job=job(), lost=1)
    site = snapshot([miner("a")], gpu_nodes=[node], budget=10_000, power=40)
    allocation = POLICY.decide(site)
    assert node.worst_case_watts == NODE_FULL
    assert allocation["gpu-1"].watts == NODE_FULL and "counted at" in allocation["gpu-1"].reason
    assert allocation["a"].watts <= 10_000 - NODE_FULL


def test_minimum_run_time_keeps_a_fresh_job_running():
    fresh = gpu_node("gpu-1", job=job(min_run_seconds=3600), state_since=9_000)
    site = snapshot([], gpu_nodes=[fresh], budget=20_000, power=9_000, clock=10_000)
    assert POLICY.decide(site)["gpu-1"].watts > 0
