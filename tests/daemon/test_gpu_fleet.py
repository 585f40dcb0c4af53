"""A GPU node as the actuator drives it: real NVML binding over the simulated library for the
caps, the simulated scheduler for the jobs. Sleep suspends or requeues by tier; firm refuses."""

import pytest

from wattshift.daemon.config.gpu import GpuNodeConfig, JobClass, JobsConfig
from wattshift.daemon.control.gpu_fleet import GpuFleet
from wattshift.drivers.base import DeviceError
from wattshift.drivers.jobs import ActionTimes, JobSpec
from wattshift.drivers.nvml_gpu import NvmlGpus
from wattshift.model.jobs import FlexTier, JobState
from wattshift.model.miner import Failure
from wattshift.simulators.gpu_site import GpuNodeSpec, SimulatedGpuSite
from wattshift.simulators.jobs import SimulatedJobRunner

JOBS = JobsConfig(classes=[
    JobClass(match="susp-*", tier=FlexTier.SUSPENDABLE, rate_usd_per_gpu_hour=2.0),
    JobClass(match="pre-*", tier=FlexTier.PREEMPTIBLE, rate_usd_per_gpu_hour=2.0),
])  # anything else is firm


@pytest.fixture
async def node():
    runner = SimulatedJobRunner({"gpu-01": 8}, times=ActionTimes(0, 0, 0, 0, 0))
    with SimulatedGpuSite([GpuNodeSpec("gpu-01")]) as sim:
        sim.follow(runner)
        config = GpuNodeConfig(name="gpu-01", gpus="0-7")
        fleet = GpuFleet([config], {"gpu-01": NvmlGpus(config.selection(), name="gpu-01")}, runner, JOBS)
        await fleet.start()
        try:
            yield fleet, runner, sim
        finally:
            await fleet.close()


async def job_on(fleet, runner, name):
    job = runner.submit_now(JobSpec(name, gpus=8, node="gpu-01", hold=True)).job_id
    await fleet.read_all()
    return job


@pytest.mark.parametrize(("name", "asleep"), [("susp-a", JobState.SUSPENDED), ("pre-a", JobState.PENDING)])
async def test_wake_starts_a_held_job_and_sleep_moves_it_by_its_tier(node, name, asleep):
    fleet, runner, _ = node
    job = await job_on(fleet, runner, name)
    await fleet.driver("gpu-01").wake()
    assert runner.job(job).state is JobState.RUNNING
    await fleet.read_all()
    await fleet.driver("gpu-01").sleep()
    assert runner.job(job).state is asleep
    await fleet.read_all()
    await fleet.driver("gpu-01").wake()  # resumes a suspended job, starts a requeued one
    assert runner.job(job).state is JobState.RUNNING


async def test_a_firm_job_refuses_to_sleep(node):
    fleet, runner, _ = node
    job = await job_on(fleet, runner, "rent-acme")
    await fleet.driver("gpu-01").wake()
    await fleet.read_all()
    with pytest.raises(DeviceError) as err:
        await fleet.driver("gpu-01").sleep()
    assert err.value.failure is Failure.REFUSED and "firm" in err.value.detail
    assert runner.job(job).state is JobState.RUNNING


async def test_a_node_limit_becomes_a_cap_on_every_card(node):
    fleet, _, sim = node
    await fleet.read_all()
    held = await fleet.driver("gpu-01").set_power_limit(1500 + 8 * 400)
    assert held == pytest.approx(1500 + 8 * 400)
    assert {gpu.limit_watts for gpu in sim.nodes["gpu-01"].gpus} == {400}
    below = await fleet.driver("gpu-01").set_power_limit(1000)  # under the cards' minimum
    assert below == pytest.approx(1500 + 8 * 200)
