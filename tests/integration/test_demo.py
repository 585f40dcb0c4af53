"""The README's demo, small and short: it must finish with a summary and stay under budget."""

import io

from wattshift.daemon.demo import Scenario
from wattshift.daemon.demo_cmd import run_demo


async def test_the_demo_runs_a_cut_and_ends_with_a_truthful_summary(tmp_path):
    out = io.StringIO()
    scenario = Scenario(miners=8, duration_s=8, tick_s=1, notice_s=3, first_address="127.0.16.1")
    code = await run_demo(scenario, tmp_path, "127.0.0.1:19469", out)
    text = out.getvalue()
    assert code == 0, text
    assert "summary after" in text and "verdict: never over any limit" in text
    assert "commands 0," not in text  # the cold site was woken, the cut was shed
    assert "failures 0" in text
