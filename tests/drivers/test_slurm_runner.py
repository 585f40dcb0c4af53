"""The Slurm runner against a real one-node Slurm (tests/slurmctl.py): every lever on a real job.

The job is a shell loop that writes a heartbeat file with Slurm's restart count, so the tests see
the processes themselves stop, continue and restart, not only what squeue says.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from slurmctl import LocalSlurm, local_slurm

from wattshift.drivers.catalog import job_runners
from wattshift.drivers.jobs import JobError, JobRunner, JobSpec, JobStatus
from wattshift.drivers.slurm_runner import (
    SlurmRunner,
    gpus_requested,
    parse_show_job,
    parse_squeue,
    slurm_state,
)
from wattshift.model.jobs import JobState

WAIT_SECONDS = 30.0


@pytest.fixture(scope="module")
def slurm() -> Iterator[LocalSlurm]:
    with local_slurm() as cluster:
        print(f"\nlocal Slurm ({cluster.version}) up in {cluster.started_in_seconds:.2f} s")
        yield cluster


@pytest.fixture
async def runner(slurm: LocalSlurm) -> AsyncIterator[SlurmRunner]:
    # Job output goes in the cluster's temp dir, not in the working directory.
    yield SlurmRunner(slurm_conf=slurm.conf, timeout_seconds=15.0, output=str(slurm.root / "slurm-%j.out"))
    # Each test leaves the node empty for the next one.
    listed = slurm.cli("squeue", "--noheader", "--format=%i").stdout.split()
    if listed:
        slurm.cli("scancel", *listed)


def heartbeat_spec(beat: Path, **kw: object) -> JobSpec:
    script = f'while true; do echo "$(date +%s.%N) ${{SLURM_RESTART_COUNT:-0}}" > {beat}; sleep 0.1; done'
    return JobSpec(name=kw.pop("name", "heartbeat"), gpus=kw.pop("gpus", 1), command=script, **kw)  # type: ignore[arg-type]


async def wait_state(runner: SlurmRunner, job_id: str, *states: JobState) -> JobStatus:
    seen: JobStatus | None = None
    async with asyncio.timeout(WAIT_SECONDS):
        while True:
            seen = (await runner.status([job_id])).get(job_id)
            if seen is not None and seen.state in states:
                return seen
            await asyncio.sleep(0.1)


def read_beat(beat: Path) -> str:
    """The heartbeat file's content (a tiny local file: read synchronously, off the async tests)."""
    return beat.read_text()


def read_beat_if_written(beat: Path) -> str:
    """The heartbeat's content, stripped; empty before the job first writes it."""
    return beat.read_text().strip() if beat.exists() else ""


async def next_beat(beat: Path, after: str | None = None) -> str:
    """The heartbeat's content once it differs from ``after`` (once it exists, when None)."""
    async with asyncio.timeout(WAIT_SECONDS):
        while True:
            text = read_beat_if_written(beat)
            if text and text != after:
                return text
            await asyncio.sleep(0.05)


async def assert_beat_stopped(beat: Path) -> None:
    await asyncio.sleep(0.3)  # a write already under way may land
    before = read_beat(beat)
    await asyncio.sleep(1.0)
    assert read_beat(beat) == before, "the job kept running while Slurm said it was suspended"


async def test_is_a_job_runner_and_registered(runner: SlurmRunner) -> None:
    assert isinstance(runner, JobRunner)
    assert job_runners().get("slurm") is SlurmRunner


async def test_submit_runs_the_script_with_its_gpus_on_the_node(
    runner: SlurmRunner, slurm: LocalSlurm, tmp_path: Path
) -> None:
    beat = tmp_path / "beat"
    job_id = await runner.submit(heartbeat_spec(beat, name="train llama", gpus=2, node=slurm.node))
    status = await wait_state(runner, job_id, JobState.RUNNING)
    assert (status.job_id, status.name, status.node, status.gpus) == (job_id, "train llama", slurm.node, 2)
    first = await next_beat(beat)
    await next_beat(beat, first)  # the loop really runs
    assert (await runner.status())[job_id].state is JobState.RUNNING  # listing all knows it too


async def test_suspend_stops_the_processes_and_resume_continues_them(runner: SlurmRunner, tmp_path: Path) -> None:
    beat = tmp_path / "beat"
    job_id = await runner.submit(heartbeat_spec(beat))
    await wait_state(runner, job_id, JobState.RUNNING)
    await next_beat(beat)

    await runner.suspend(job_id)
    assert (await runner.status([job_id]))[job_id].state is JobState.SUSPENDED
    await assert_beat_stopped(beat)

    stopped = beat.read_text().strip()
    await runner.resume(job_id)
    assert (await runner.status([job_id]))[job_id].state is JobState.RUNNING
    await next_beat(beat, stopped)


async def test_requeue_holds_the_job_until_start_restarts_it(runner: SlurmRunner, tmp_path: Path) -> None:
    beat = tmp_path / "beat"
    job_id = await runner.submit(heartbeat_spec(beat))
    await wait_state(runner, job_id, JobState.RUNNING)
    assert (await next_beat(beat)).endswith(" 0")

    await runner.requeue(job_id)
    held = await wait_state(runner, job_id, JobState.PENDING)
    assert held.node is None and "held" in held.reason.lower()
    await assert_beat_stopped(beat)
    # Held, Slurm does not start it again by itself while the GPUs sit free.
    await asyncio.sleep(1.5)
    assert (await runner.status([job_id]))[job_id].state is JobState.PENDING

    await runner.start(job_id)
    await wait_state(runner, job_id, JobState.RUNNING)
    restarted = await next_beat(beat, beat.read_text().strip())
    while not restarted.endswith(" 1"):  # the first beat after the restart carries the count
        restarted = await next_beat(beat, restarted)


async def test_requeue_of_a_suspended_job(runner: SlurmRunner, tmp_path: Path) -> None:
    job_id = await runner.submit(heartbeat_spec(tmp_path / "beat"))
    await wait_state(runner, job_id, JobState.RUNNING)
    await runner.suspend(job_id)
    await runner.requeue(job_id)
    assert (await wait_state(runner, job_id, JobState.PENDING)).node is None


async def test_a_held_submission_waits_for_start(runner: SlurmRunner, tmp_path: Path) -> None:
    beat = tmp_path / "beat"
    job_id = await runner.submit(heartbeat_spec(beat, hold=True))
    await asyncio.sleep(1.5)
    assert (await runner.status([job_id]))[job_id].state is JobState.PENDING
    assert not beat.exists()
    await runner.start(job_id)
    await wait_state(runner, job_id, JobState.RUNNING)
    await next_beat(beat)


async def test_stop_cancels_the_job(runner: SlurmRunner, tmp_path: Path) -> None:
    beat = tmp_path / "beat"
    job_id = await runner.submit(heartbeat_spec(beat))
    await wait_state(runner, job_id, JobState.RUNNING)
    await runner.stop(job_id)
    status = await wait_state(runner, job_id, JobState.CANCELLED)
    assert status.state.finished
    await assert_beat_stopped(beat)


async def test_a_job_that_ends_is_completed_and_cannot_be_suspended(runner: SlurmRunner) -> None:
    job_id = await runner.submit(JobSpec(name="short", gpus=0, command="exit 0"))
    await wait_state(runner, job_id, JobState.COMPLETED)
    with pytest.raises(JobError) as caught:
        await runner.suspend(job_id)
    # Slurm's own words, naming the job and the action.
    assert caught.value.job_id == job_id and caught.value.action == "suspend"
    assert "complet" in caught.value.detail.lower(), caught.value.detail


async def test_a_failing_script_is_failed(runner: SlurmRunner) -> None:
    job_id = await runner.submit(JobSpec(name="crash", gpus=0, command="exit 3"))
    assert (await wait_state(runner, job_id, JobState.FAILED, JobState.COMPLETED)).state is JobState.FAILED


async def test_resume_of_a_running_job_is_refused_in_slurms_words(runner: SlurmRunner, tmp_path: Path) -> None:
    job_id = await runner.submit(heartbeat_spec(tmp_path / "beat"))
    await wait_state(runner, job_id, JobState.RUNNING)
    with pytest.raises(JobError, match="not suspended"):
        await runner.resume(job_id)


async def test_an_unknown_job_is_absent(runner: SlurmRunner) -> None:
    assert await runner.status(["999999"]) == {}
    assert await runner.status([]) == {}


async def test_the_job_environment_reaches_the_script(runner: SlurmRunner, tmp_path: Path) -> None:
    out = tmp_path / "env"
    spec = JobSpec(name="env", gpus=0, command=f'echo "$MODEL" > {out}', env={"MODEL": "llama 70b; $(id)"})
    job_id = await runner.submit(spec)
    await wait_state(runner, job_id, JobState.COMPLETED)
    assert out.read_text() == "llama 70b; $(id)\n"


async def test_too_many_gpus_is_refused_with_slurms_words(runner: SlurmRunner) -> None:
    with pytest.raises(JobError) as caught:
        await runner.submit(JobSpec(name="greedy", gpus=64, command="true"))
    assert caught.value.action == "submit" and "sbatch" in caught.value.detail.lower()


@pytest.mark.parametrize("bad", ["", "12;rm -rf /", "abc", "1,2"])
async def test_a_malformed_job_id_is_refused_before_slurm_is_called(runner: SlurmRunner, bad: str) -> None:
    with pytest.raises(JobError, match="is not a Slurm job id"):
        await runner.suspend(bad)


async def test_a_hung_controller_times_out(slurm: LocalSlurm, tmp_path: Path) -> None:
    # A controller that accepts the connection and never answers: scontrol would wait its own
    # MessageTimeout (10 s); the runner gives up at its deadline.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        conf = tmp_path / "slurm.conf"
        text = slurm.conf.read_text()
        port_line = next(line for line in text.splitlines() if line.startswith("SlurmctldPort="))
        conf.write_text(text.replace(port_line, f"SlurmctldPort={silent.getsockname()[1]}"))
        hung = SlurmRunner(slurm_conf=conf, timeout_seconds=0.5)
        with pytest.raises(JobError, match="no answer within 0.5 s"):
            await hung.status()


async def test_missing_slurm_client_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(JobError, match="squeue not found"):
        await SlurmRunner().status()


# -- the parsing, on Slurm's own text ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("PENDING", JobState.PENDING),
        ("REQUEUE_HOLD", JobState.PENDING),
        ("REQUEUED", JobState.PENDING),
        ("CONFIGURING", JobState.RUNNING),
        ("RUNNING", JobState.RUNNING),
        ("COMPLETING", JobState.RUNNING),
        ("SUSPENDED", JobState.SUSPENDED),
        ("STOPPED", JobState.SUSPENDED),
        ("COMPLETED", JobState.COMPLETED),
        ("CANCELLED by 0", JobState.CANCELLED),
        ("PREEMPTED", JobState.CANCELLED),
        ("FAILED", JobState.FAILED),
        ("TIMEOUT", JobState.FAILED),
        ("NODE_FAIL", JobState.FAILED),
        ("OUT_OF_MEMORY", JobState.FAILED),
        ("SOMETHING_NEW", JobState.UNKNOWN),
    ],
)
def test_slurm_states(text: str, state: JobState) -> None:
    assert slurm_state(text) is state


@pytest.mark.parametrize(
    ("tres", "gpus"),
    [("gres:gpu:2", 2), ("gres/gpu:a100=4", 4), ("gres:gpu:h100:8", 8), ("N/A", 0), ("", 0),
     ("gres:gpu:1,gres:nic:1", 1)],
)
def test_gpus_requested(tres: str, gpus: int) -> None:
    assert gpus_requested(tres) == gpus


def test_squeue_lines_with_a_pipe_in_the_name_and_a_garbage_line() -> None:
    text = (
        "12|RUNNING|wsnode||gres:gpu:2|None|train | eval\nnot a job line\n13|PENDING|||N/A|JobHeldUser|x\n"
        "14|PENDING||wsnode|gres:gpu:8|JobHeldUser|pinned\n"
    )
    parsed = parse_squeue(text)
    assert parsed["12"] == JobStatus("12", "train | eval", JobState.RUNNING, "wsnode", 2, "")
    assert parsed["13"] == JobStatus("13", "x", JobState.PENDING, None, 0, "JobHeldUser")
    assert parsed["14"].node == "wsnode"  # a held job pinned to a node: where its power must come from
    assert len(parsed) == 3


def test_show_job_line_with_spaces_in_values() -> None:
    line = (
        "JobId=7 JobName=hb test UserId=root(0) JobState=SUSPENDED Reason=None Dependency=(null) "
        "NodeList=wsnode TresPerNode=gres:gpu:2 Command=/tmp/a b.sh"
    )
    assert parse_show_job(line) == JobStatus("7", "hb test", JobState.SUSPENDED, "wsnode", 2, "")
    assert parse_show_job("garbage") is None
