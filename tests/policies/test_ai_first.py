"""ai-first: GPU jobs honoured at full caps first, the AI headroom kept, miners by merit order."""

import pytest
from factories import miner, snapshot
from gpu_factories import H100_FULL_NODE_WATTS, gpu_node, job, with_gpus

from wattshift.model.jobs import FlexTier
from wattshift.policies.ai_first import AiFirstPolicy
from wattshift.policies.merit_order import MeritOrderPolicy

MINERS = {"min_dwell_seconds": 0, "hysteresis_usd_per_mwh": 0}


def policy(**options):
    return AiFirstPolicy.from_options({"miners": MINERS, **options})


def miner_watts(allocation, ids="abc"):
    return sum(allocation[d].watts for d in ids)


def test_a_gpu_job_runs_at_full_caps_and_miners_fill_the_rest():
    site = with_gpus(snapshot([miner("a"), miner("b"), miner("c")], budget=20_000, power=30),
                     gpu_node("gpu-1", job=job()))
    allocation = policy().decide(site)
    assert allocation["gpu-1"].watts == H100_FULL_NODE_WATTS
    assert [allocation[d].watts for d in "abc"] == [4000, 4000, 4000]  # 12.9 kW left: all fit at max
    assert allocation.targets[0].device_id == "gpu-1", "AI is best in the merit order"


def test_the_ai_headroom_is_kept_free_of_miners():
    site = with_gpus(snapshot([miner("a"), miner("b"), miner("c")], budget=20_000, power=30),
                     gpu_node("gpu-1", job=job()))
    allocation = policy(ai_headroom_kw=5).decide(site)
    assert allocation["gpu-1"].watts == H100_FULL_NODE_WATTS
    # 20 - 7.1 - 5 = 7.9 kW for three miners (12 kW at their maximum): filled to within a step.
    assert 7_900 - 100 <= miner_watts(allocation) <= 7_900
    assert "5.0 kW kept for AI arrivals, 7.9 kW left for miners" in allocation.summary


def test_firm_load_is_counted_first_and_a_flexible_job_gets_the_caps_that_fit():
    site = with_gpus(snapshot([miner("a")], budget=12_000, power=30),
                     gpu_node("rented", job=job("rented", tier=FlexTier.FIRM)), gpu_node("flex", job=job()))
    allocation = policy().decide(site)
    assert allocation["rented"].watts == H100_FULL_NODE_WATTS
    # What is left after the firm node and the miner's 15 W asleep: caps of (4885 - 1500) / 8.
    assert allocation["flex"].watts == pytest.approx(12_000 - H100_FULL_NODE_WATTS - 15)
    assert "cap 423 W/GPU" in allocation["flex"].reason
    assert allocation["a"].watts == 0


def test_priorities_choose_which_tier_gets_the_power_when_only_one_fits():
    nodes = (gpu_node("susp", job=job("s", tier=FlexTier.SUSPENDABLE, usd_per_gpu_hour=1.0)),
             gpu_node("pre", job=job("p", tier=FlexTier.PREEMPTIBLE, usd_per_gpu_hour=3.0)))
    site = with_gpus(snapshot([], budget=10_000, power=30), *nodes)
    default = policy().decide(site)
    assert default["susp"].watts == H100_FULL_NODE_WATTS and default["pre"].watts == 0
    flipped = policy(priorities=["preemptible", "suspendable"]).decide(site)
    assert flipped["pre"].watts == H100_FULL_NODE_WATTS and flipped["susp"].watts == 0


def test_gpu_power_comes_off_its_own_circuit_for_the_miners_there():
    circuits = {"pdu-a": (8_000, "site")}
    site = with_gpus(
        snapshot([miner("a", circuit="pdu-a"), miner("b")], budget=30_000, power=30, circuits=circuits),
        gpu_node("gpu-1", circuit="pdu-a", job=job()),
    )
    allocation = policy().decide(site)
    assert allocation["gpu-1"].watts == H100_FULL_NODE_WATTS
    assert allocation["a"].watts == 0 and "pdu-a" in allocation["a"].reason  # 0.9 kW left there
    assert allocation["b"].watts == 4000


def test_without_gpu_work_the_miners_get_exactly_the_merit_order():
    site = with_gpus(snapshot([miner("a"), miner("b"), miner("c")], budget=9_000, power=55), gpu_node("idle"))
    allocation = policy().decide(site)
    alone = MeritOrderPolicy.from_options(MINERS).decide(snapshot([miner("a"), miner("b"), miner("c")],
                                                                  budget=9_000 - gpu_node("idle").idle_watts,
                                                                  power=55))
    assert [allocation[d].watts for d in "abc"] == [alone[d].watts for d in "abc"]
    assert allocation["idle"].watts == 0


def test_bad_options_name_the_field():
    with pytest.raises(ValueError, match="ai-first option priorities"):
        AiFirstPolicy.from_options({"priorities": ["firm"]})
    with pytest.raises(ValueError, match="ai-first option miners: merit-order option step_watts"):
        AiFirstPolicy.from_options({"miners": {"step_watts": 1}})
    with pytest.raises(ValueError, match="ai-first option ai_headroom_kw"):
        AiFirstPolicy.from_options({"ai_headroom_kw": -5})
