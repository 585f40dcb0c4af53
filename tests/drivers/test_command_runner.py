"""The command runner with real shell commands: a small scheduler script that keeps its jobs
as files in a state dir, the way an operator's kubectl or docker wrapper would."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import ValidationError

from wattshift.drivers.catalog import job_runners
from wattshift.drivers.command_runner import (
    CommandActions,
    CommandRunner,
    CommandRunnerOptions,
    parse_status,
)
from wattshift.drivers.jobs import JobError, JobRunner, JobSpec, JobStatus
from wattshift.model.jobs import JobState

# One file per job: "<state> <node> <name>". Every fact comes from the environment.
FAKE_SCHEDULER = r"""#!/bin/sh
set -eu
dir="$FAKE_DIR"
move() {  # move <from> <to>: only a job in state <from> may go to <to>
    f="$dir/job.$WATTSHIFT_JOB_ID"
    [ -f "$f" ] || { echo "no such job $WATTSHIFT_JOB_ID" >&2; exit 2; }
    read -r state rest < "$f"
    case " $1 " in *" $state "*) ;; *) echo "job $WATTSHIFT_JOB_ID is $state, not $1" >&2; exit 3;; esac
    echo "$2 $rest" > "$f"
}
case "$1" in
submit)
    n=$(( $(cat "$dir/next" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$dir/next"
    state=running; [ "$WATTSHIFT_JOB_HOLD" = 1 ] && state=pending
    printf '%s %s %s\n' "$state" "${WATTSHIFT_JOB_NODE:--}" "$WATTSHIFT_JOB_NAME" > "$dir/job.$n"
    printf '%s' "$WATTSHIFT_JOB_COMMAND" > "$dir/command.$n"
    printf '%s' "$WATTSHIFT_JOB_GPUS" > "$dir/gpus.$n"
    echo "job queued"; echo "$n";;
start) move pending running;;
suspend) move running suspended;;
resume) move suspended running;;
requeue) move "running suspended" pending;;
stop) move "pending running suspended" cancelled;;
status)
    for f in "$dir"/job.*; do [ -f "$f" ] && echo "${f##*.} $(cat "$f")"; done; true;;
esac
"""


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    script = tmp_path / "sched.sh"
    script.write_text(FAKE_SCHEDULER)
    script.chmod(0o755)
    (tmp_path / "state").mkdir()
    return tmp_path


def commands_for(fake: Path, **override: str) -> dict[str, str]:
    actions = ("submit", "start", "suspend", "resume", "requeue", "stop", "status")
    base = {a: f"FAKE_DIR={fake / 'state'} {fake / 'sched.sh'} {a}" for a in actions}
    return {**base, **override}


@pytest.fixture
def runner(fake: Path) -> CommandRunner:
    return CommandRunner(commands_for(fake), timeout_seconds=5.0)


async def state_of(runner: CommandRunner, job_id: str) -> JobState:
    return (await runner.status([job_id]))[job_id].state


def test_is_a_job_runner_and_registered(runner: CommandRunner) -> None:
    assert isinstance(runner, JobRunner)
    assert job_runners().get("command") is CommandRunner


async def test_every_lever_moves_the_job(runner: CommandRunner) -> None:
    job_id = await runner.submit(JobSpec(name="train", gpus=4, node="gpu-01"))
    assert job_id == "1"  # the last line, not "job queued"
    assert (await runner.status())[job_id] == JobStatus("1", "train", JobState.RUNNING, "gpu-01", 4)
    await runner.suspend(job_id)
    assert await state_of(runner, job_id) is JobState.SUSPENDED
    await runner.resume(job_id)
    assert await state_of(runner, job_id) is JobState.RUNNING
    await runner.requeue(job_id)
    assert await state_of(runner, job_id) is JobState.PENDING
    await runner.start(job_id)
    assert await state_of(runner, job_id) is JobState.RUNNING
    await runner.stop(job_id)
    assert await state_of(runner, job_id) is JobState.CANCELLED


async def test_held_submission_and_status_filter(runner: CommandRunner) -> None:
    held = await runner.submit(JobSpec(name="wait", gpus=1, hold=True))
    other = await runner.submit(JobSpec(name="other", gpus=1))
    assert set(await runner.status()) == {held, other}
    only = await runner.status([held, "404"])
    assert list(only) == [held] and only[held].state is JobState.PENDING and only[held].node is None
    assert await runner.status([]) == {}


async def test_job_facts_are_never_interpolated_into_the_command(runner: CommandRunner, fake: Path) -> None:
    pwned = fake / "pwned"
    name = f"$(touch {pwned}) `touch {pwned}`; touch {pwned}"
    command = f'echo "hi" && touch {pwned}'
    job_id = await runner.submit(JobSpec(name=name, gpus=2, command=command))
    await runner.suspend(job_id)
    statuses = await runner.status()
    assert not pwned.exists()
    assert statuses[job_id].name == name  # reached the scheduler verbatim
    assert (fake / "state" / f"command.{job_id}").read_text() == command


async def test_the_specs_env_reaches_submit(fake: Path) -> None:
    out = fake / "env"
    runner = CommandRunner(commands_for(fake, submit=f'printf %s "$MODEL" > {out}; echo 9'))
    assert await runner.submit(JobSpec(name="x", gpus=0, env={"MODEL": "llama; $(id)"})) == "9"
    assert out.read_text() == "llama; $(id)"


async def test_a_non_zero_exit_carries_the_commands_words(runner: CommandRunner) -> None:
    job_id = await runner.submit(JobSpec(name="j", gpus=1, hold=True))
    with pytest.raises(JobError) as caught:
        await runner.suspend(job_id)
    assert (caught.value.job_id, caught.value.action) == (job_id, "suspend")
    assert caught.value.detail == f"exit status 3: job {job_id} is pending, not running"
    assert await state_of(runner, job_id) is JobState.PENDING  # nothing changed


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"  # a zombie waiting for init is dead too


async def test_a_hanging_command_is_killed_with_its_children(fake: Path) -> None:
    child = fake / "child.pid"
    hang = f"sleep 60 & echo $! > {child}; wait"
    runner = CommandRunner(commands_for(fake, suspend=hang), timeout_seconds=0.5)
    with pytest.raises(JobError, match=r"no answer within 0\.5 s \(process group killed\)"):
        await runner.suspend("1")
    pid = int(child.read_text())
    for _ in range(100):
        if _gone(pid):
            break
        await asyncio.sleep(0.02)
    assert _gone(pid), "the hung command's child survived"


@pytest.mark.parametrize(
    ("output", "words"),
    [
        ("1 sleeping gpu-01\n", "unknown state 'sleeping'"),
        ("# header\n\n1 running\nlonely\n", "line 4: 'lonely'"),
    ],
)
async def test_unparseable_status_is_an_error(fake: Path, output: str, words: str) -> None:
    (fake / "out").write_text(output)
    runner = CommandRunner(commands_for(fake, status=f"cat {fake / 'out'}"))
    with pytest.raises(JobError, match=words):
        await runner.status()


def test_status_format() -> None:
    text = "# id state node name\n7 RUNNING gpu-01 fine tune 70b\n8 pending -\n9 Suspended\n"
    parsed = parse_status(text, {"8": JobSpec(name="eight", gpus=2)})
    assert parsed == {
        "7": JobStatus("7", "fine tune 70b", JobState.RUNNING, "gpu-01"),
        "8": JobStatus("8", "eight", JobState.PENDING, None, 2),
        "9": JobStatus("9", "9", JobState.SUSPENDED, None),
    }


@pytest.mark.parametrize("printed", ["", "\n\n", "two words\n"])
async def test_submit_without_a_job_id_is_an_error(fake: Path, printed: str) -> None:
    runner = CommandRunner(commands_for(fake, submit=f"printf '{printed}'"))
    with pytest.raises(JobError, match="last line of output must be the job id"):
        await runner.submit(JobSpec(name="x", gpus=0))


def test_a_missing_action_is_named(fake: Path) -> None:
    commands = commands_for(fake)
    del commands["requeue"]
    with pytest.raises(ValidationError) as caught:
        CommandRunner(commands)
    assert "commands.requeue" in str(caught.value) and "Field required" in str(caught.value)


def test_an_empty_action_is_named(fake: Path) -> None:
    with pytest.raises(ValidationError) as caught:
        CommandRunner(commands_for(fake, suspend="   "))
    assert "commands.suspend" in str(caught.value) and "must be a non-empty shell command" in str(caught.value)


def test_options_refuse_unknown_keys_and_bad_timeouts(fake: Path) -> None:
    with pytest.raises(ValidationError, match="commands.pause"):
        CommandRunnerOptions.model_validate({"commands": {**commands_for(fake), "pause": "x"}})
    with pytest.raises(ValidationError, match="timeout_seconds"):
        CommandRunner(commands_for(fake), timeout_seconds=0)
    options = CommandRunnerOptions.model_validate({"commands": commands_for(fake), "timeout_seconds": 3})
    runner = CommandRunner.from_options(options)
    assert runner.timeout_seconds == 3 and isinstance(runner.commands, CommandActions)


def test_job_spec_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match=r"JobSpec.gpus: -1: must be a whole number >= 0"):
        JobSpec(name="x", gpus=-1)
    with pytest.raises(ValueError, match=r"JobSpec.name: '  ': must not be empty"):
        JobSpec(name="  ", gpus=1)
    with pytest.raises(ValueError, match=r"JobSpec.time_limit_minutes: 0: must be > 0"):
        JobSpec(name="x", gpus=1, time_limit_minutes=0)

