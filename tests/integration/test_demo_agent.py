"""The demo serves a GPU node through its agent (daemon/demo/agents.py) over its private broker."""

import io

from wattshift.daemon.cli.demo import run_demo
from wattshift.daemon.demo.scenario import Scenario
from wattshift.daemon.journal.store import Journal, journal_path


async def test_the_demo_drives_its_first_gpu_node_through_an_agent_and_stays_under(tmp_path):
    out = io.StringIO()
    scenario = Scenario(miners=8, duration_s=8, tick_s=1, notice_s=3, first_address="127.0.43.1")
    code = await run_demo(scenario, tmp_path, "127.0.43.100:19481", out, mqtt="on")
    text = out.getvalue()
    assert code == 0 and "verdict: never over any limit" in text, text
    assert "GPU node(s) gpu-01 served through their agent over MQTT" in text
    with Journal(journal_path(tmp_path)) as journal:
        node = [e for e in journal.query() if e.device == "gpu-01"]
    # Read through the agent (its cards' model, not an unknown node) and capped through it, confirmed.
    assert any(e.kind == "decision" and e.summary.startswith("8x NVIDIA H100") for e in node), node
    assert any(e.kind == "result" and e.summary.endswith(": ok") for e in node), node
