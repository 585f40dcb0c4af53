"""A GPU job arrives, power moves from the miners to its node; the job ends, power moves back.

The whole stack runs: real pyasic against simulated miners over loopback, the real NVML binding
over the simulated library, the simulated scheduler holding the job until the loop starts it.
The simulators' true draw is sampled every 20 ms against the budget, and the journal is read
back for the order of commands.
"""

import asyncio
import time

from simsite import assert_never_over, running_site

from wattshift.daemon.journal.store import Journal, journal_path
from wattshift.drivers.jobs import ActionTimes, JobSpec
from wattshift.model.jobs import JobState
from wattshift.simulators.gpu_site import GpuNodeSpec, SimulatedGpuSite
from wattshift.simulators.jobs import SimulatedJobRunner
from wattshift.simulators.site import MinerBatch

# 6 S21s (3.5 kW each at their default profile) and one 8x H100 node: 7.1 kW at full caps,
# 1.36 kW idle. 24 kW holds the miners and an idle node, not the miners and a busy node.
BATCHES = [MinerBatch("luxos", 6, "site", "Antminer S21")]
BUDGET_KW = 24.0
JOBS = {
    "jobs": {"classes": [{"match": "train-*", "tier": "suspendable", "rate_usd_per_gpu_hour": 2.35}]},
}


async def test_power_moves_to_an_arriving_job_and_back_when_it_ends(tmp_path):
    runner = SimulatedJobRunner({"gpu-01": 8}, times=ActionTimes(suspend_release=0.5, resume_draw=0.5, start_draw=0.5))
    with SimulatedGpuSite([GpuNodeSpec("gpu-01")]) as gpus:
        gpus.follow(runner)
        async with running_site(
            BATCHES, tmp_path, first_address="127.0.18.1", budget_kw=BUDGET_KW,
            gpus=gpus, runner=runner, site_extra=JOBS,
        ) as (sim, daemon, _budget, truth):
            controller = daemon.controller
            await controller.run_once()
            await controller.run_once()
            miners_alone = sim.true_watts()
            assert miners_alone > 20_000  # the miners run flat out while there is no AI work

            job = runner.submit_now(JobSpec("train-llm", gpus=8, node="gpu-01", hold=True), run_seconds=6.0).job_id
            report = await controller.run_once()
            node = report.snapshot.load("gpu-01")
            assert node.job is not None and node.job.state is JobState.PENDING  # held: waits for power
            started = report.allocation["gpu-01"]
            assert started.watts > 0, started.reason
            for _ in range(3):
                await controller.run_once()
            assert runner.job(job).state is JobState.RUNNING
            await asyncio.sleep(1.5)  # the cards ramp to the job's load
            gpus.advance()
            with_job = gpus.true_watts()
            assert with_job > 5_000, with_job  # the node draws what it was granted
            assert sim.true_watts() < miners_alone - 4_000  # and the miners gave it up

            deadline = time.monotonic() + 20
            while runner.job(job).state is not JobState.COMPLETED and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                await controller.run_once()
            assert runner.job(job).state is JobState.COMPLETED
            deadline = time.monotonic() + 20
            while sim.true_watts() < miners_alone - 1_000 and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                await controller.run_once()
            assert sim.true_watts() > miners_alone - 1_000  # the miners took the power back

        assert_never_over(truth)

    with Journal(journal_path(tmp_path)) as journal:
        entries = journal.query()
    commands = [e for e in entries if e.kind == "command"]
    first_node = next(i for i, e in enumerate(commands) if e.device == "gpu-01")
    # Shed before grant: the miners' cuts were journaled before the node was started.
    assert commands[first_node].summary.startswith("grant: gpu-01: wake at")
    assert any(e.summary.startswith("shed: ") for e in commands[:first_node])
