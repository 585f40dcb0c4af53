"""Metrics carry the snapshot's numbers under Prometheus names and base units."""

from factories import miner, snapshot
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from wattshift.daemon.control.sequencer import plan_transition
from wattshift.daemon.runtime.metrics import MetricsRecorder
from wattshift.policies.merit_order import MeritOrderPolicy


def samples(recorder: MetricsRecorder) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(recorder.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_a_decision_exports_budget_headroom_circuits_and_devices():
    site = snapshot(
        [miner("a", circuit="pdu", watts=3000, limit=3200), miner("b", answered=False)],
        budget=10_000,
        circuits={"pdu": (5_000, "site")},
    )
    allocation = MeritOrderPolicy().decide(site)
    recorder = MetricsRecorder()
    await recorder.decision(site, allocation, plan_transition(site, allocation), dry_run=False)
    got = samples(recorder)
    assert got[("wattshift_site_budget_watts", ())] == 10_000
    # Worst case: a at its 3200 W limit, b (no answer) at its 4000 W maximum.
    assert got[("wattshift_site_headroom_watts", ())] == 10_000 - 3_200 - 4_000
    assert got[("wattshift_circuit_worst_case_watts", (("circuit", "pdu"),))] == 3_200
    assert got[("wattshift_circuit_measured_watts", (("circuit", "site"),))] == 3_000
    assert got[("wattshift_device_up", (("class", "miner"), ("device", "b")))] == 0
    assert got[("wattshift_device_power_watts", (("class", "miner"), ("device", "a")))] == 3_000
    assert got[("wattshift_miner_hashrate_hashes_per_second", (("device", "a"),))] > 1e14
    assert got[("wattshift_read_errors_total", (("failure", "no_answer"),))] == 1
    assert got[("wattshift_hashprice_usd_per_petahash_day", ())] == 45.0
    assert got[("wattshift_decisions_total", ())] == 1


def test_each_recorder_has_its_own_registry():
    # Two daemons (or tests) side by side must not collide on the global registry.
    MetricsRecorder()
    MetricsRecorder()
