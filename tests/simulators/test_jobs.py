"""The simulated job runner on a fake clock: state now, power after the action's time."""

from __future__ import annotations

import pytest

from wattshift.drivers.jobs import ActionTimes, JobError, JobRunner, JobSpec
from wattshift.model.jobs import JobState
from wattshift.simulators.jobs import ScriptedJob, SimulatedJob, SimulatedJobRunner

TIMES = ActionTimes(suspend_release=2, resume_draw=3, requeue_release=10, start_draw=20, stop_release=5)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def at(self, seconds: float) -> None:
        """Move to ``seconds`` after the start."""
        self.now = 1000.0 + seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def runner(clock: FakeClock) -> SimulatedJobRunner:
    return SimulatedJobRunner({"gpu-a": 4, "gpu-b": 2}, clock=clock, times=TIMES, timeout_seconds=0.05)


async def state(runner: SimulatedJobRunner, job_id: str) -> JobState:
    return (await runner.status([job_id]))[job_id].state


def test_is_a_job_runner(runner: SimulatedJobRunner) -> None:
    assert isinstance(runner, JobRunner)


async def test_a_job_starts_at_once_and_draws_after_start_draw(runner: SimulatedJobRunner, clock: FakeClock) -> None:
    job_id = await runner.submit(JobSpec(name="train", gpus=2))
    status = (await runner.status())[job_id]
    assert (status.state, status.node, status.gpus) == (JobState.RUNNING, "gpu-a", 2)
    assert runner.load_of("gpu-a") == {0: 0.0, 1: 0.0, 2: 0.0, 3: 0.0}
    assert runner.pids_of("gpu-a")[0] == (runner.job(job_id).pid,)  # memory held while loading
    clock.at(19.9)
    assert runner.load_of("gpu-a")[0] == 0.0
    clock.at(20)
    assert runner.load_of("gpu-a") == {0: 1.0, 1: 1.0, 2: 0.0, 3: 0.0}


async def test_suspend_and_resume_move_power_after_their_times(runner: SimulatedJobRunner, clock: FakeClock) -> None:
    job = runner.submit_now(JobSpec(name="j", gpus=1), load=0.8)
    clock.at(30)
    await runner.suspend(job.job_id)
    assert await state(runner, job.job_id) is JobState.SUSPENDED
    assert runner.load_of("gpu-a")[0] == 0.8  # still drawing: the release takes suspend_release
    clock.at(32)
    assert runner.load_of("gpu-a")[0] == 0.0
    assert runner.pids_of("gpu-a")[0] == (job.pid,)  # a suspended job keeps its card
    await runner.resume(job.job_id)
    clock.at(34.9)
    assert runner.load_of("gpu-a")[0] == 0.0
    clock.at(35)
    assert runner.load_of("gpu-a")[0] == 0.8


async def test_requeue_holds_loses_the_work_and_start_restarts(runner: SimulatedJobRunner, clock: FakeClock) -> None:
    job = runner.submit_now(JobSpec(name="j", gpus=4), run_seconds=100)
    clock.at(80)  # 60 s of work done
    await runner.requeue(job.job_id)
    assert await state(runner, job.job_id) is JobState.PENDING
    assert runner.load_of("gpu-a")[0] == 1.0  # until requeue_release
    clock.at(90)
    assert runner.load_of("gpu-a")[0] == 0.0 and runner.pids_of("gpu-a")[0] == ()
    clock.at(500)
    assert await state(runner, job.job_id) is JobState.PENDING  # held: never restarts by itself
    await runner.start(job.job_id)
    assert job.state is JobState.RUNNING and job.restarts == 1
    clock.at(500 + 20 + 99)
    assert await state(runner, job.job_id) is JobState.RUNNING  # from the top: 100 s again
    clock.at(500 + 20 + 100)
    assert await state(runner, job.job_id) is JobState.COMPLETED
    assert runner.load_of("gpu-a")[0] == 0.0 and job.ended_at == clock.now


async def test_scripted_arrivals_queue_for_gpus_and_end(clock: FakeClock) -> None:
    seen: list[tuple[float, str, JobState, bool]] = []

    def on_change(job: SimulatedJob) -> None:
        seen.append((runner.now, job.job_id, job.state, job.drawing))

    runner = SimulatedJobRunner(
        {"n1": 2},
        clock=clock,
        times=ActionTimes(start_draw=0),
        on_change=on_change,
        script=[
            ScriptedJob(at=10, spec=JobSpec(name="first", gpus=2), run_seconds=50, load=0.5),
            ScriptedJob(at=20, spec=JobSpec(name="second", gpus=1), run_seconds=30),
        ],
    )
    clock.at(5)
    assert await runner.status() == {}
    assert runner.next_event_at() == 1010.0
    clock.at(25)
    statuses = await runner.status()
    assert [s.state for s in statuses.values()] == [JobState.RUNNING, JobState.PENDING]
    assert statuses["2"].reason == "waiting for GPUs"
    assert runner.load_of("n1") == {0: 0.5, 1: 0.5}
    clock.at(200)  # first ends at 60, second runs 60..90: all replayed in order
    assert [j.state for j in runner.jobs] == [JobState.COMPLETED, JobState.COMPLETED]
    assert [j.ended_at for j in runner.jobs] == [1060.0, 1090.0]
    assert runner.load_of("n1") == {0: 0.0, 1: 0.0}
    assert (1060.0, "2", JobState.RUNNING, True) in seen


async def test_held_arrival_waits_for_start(runner: SimulatedJobRunner, clock: FakeClock) -> None:
    job_id = await runner.submit(JobSpec(name="wait", gpus=1, hold=True))
    clock.at(100)
    assert await state(runner, job_id) is JobState.PENDING
    await runner.start(job_id)
    assert await state(runner, job_id) is JobState.RUNNING


async def test_pinned_job_and_stop(runner: SimulatedJobRunner, clock: FakeClock) -> None:
    job_id = await runner.submit(JobSpec(name="p", gpus=2, node="gpu-b"))
    clock.at(20)
    assert runner.load_of("gpu-b") == {0: 1.0, 1: 1.0}
    await runner.stop(job_id)
    assert await state(runner, job_id) is JobState.CANCELLED
    clock.at(25)
    assert runner.load_of("gpu-b") == {0: 0.0, 1: 0.0}
    with pytest.raises(JobError, match="already cancelled"):
        await runner.stop(job_id)


async def test_wrong_state_unknown_job_and_bad_specs_are_refused(runner: SimulatedJobRunner) -> None:
    job_id = await runner.submit(JobSpec(name="j", gpus=1, hold=True))
    with pytest.raises(JobError, match="job is pending, not running"):
        await runner.suspend(job_id)
    with pytest.raises(JobError, match="no such job"):
        await runner.resume("404")
    with pytest.raises(JobError, match="unknown node 'gpu-z'"):
        await runner.submit(JobSpec(name="j", gpus=1, node="gpu-z"))
    with pytest.raises(JobError, match="needs 8 GPUs; the most a node has is 4"):
        await runner.submit(JobSpec(name="j", gpus=8))
    with pytest.raises(ValueError, match="load: 1.5"):
        runner.script([ScriptedJob(at=1, spec=JobSpec(name="j", gpus=1), load=1.5)])
    assert list(await runner.status()) == [job_id]  # nothing else was queued


async def test_refused_and_hung_actions(runner: SimulatedJobRunner) -> None:
    job_id = await runner.submit(JobSpec(name="j", gpus=1))
    runner.refuse("suspend", "Access/permission denied")
    with pytest.raises(JobError, match="Access/permission denied"):
        await runner.suspend(job_id)
    await runner.suspend(job_id)  # only the next call was refused
    runner.hang("status", times=None)
    for _ in range(2):
        with pytest.raises(JobError, match="no answer within 0.05 s"):
            await runner.status()
    runner.clear_faults()
    assert (await runner.status())[job_id].state is JobState.SUSPENDED
    with pytest.raises(ValueError, match="action: 'pause'"):
        runner.refuse("pause")
