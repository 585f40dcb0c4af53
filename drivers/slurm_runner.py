"""Slurm as a job runner, through its own command-line tools.

The CLI (``sbatch``, ``scontrol``, ``squeue``, ``scancel``) is Slurm's stable interface across
versions and needs no library: each call is a subprocess off the event loop with a deadline
(:mod:`.subprocess_run`). A non-zero exit becomes :class:`JobError` carrying Slurm's own words.

How each lever maps onto Slurm:

- ``submit``: ``sbatch --parsable --requeue`` with the script on stdin (``--hold`` when the spec
  says so: it waits for power, then ``start`` lets it go).
- ``start``: ``scontrol release``, then ``scontrol update StartTime=now``, because Slurm delays a
  requeued job's start by about two minutes (its BeginTime) and the loop has just granted the power.
- ``suspend``/``resume``: ``scontrol suspend|resume`` (SIGSTOP/SIGCONT to every process of the job).
- ``requeue``: ``scontrol requeuehold``: the job goes back to the queue *held*, so Slurm does not
  restart it on its own (``hold_requeued=False`` uses plain ``scontrol requeue``).
- ``stop``: ``scancel``.
- ``status``: ``squeue --states=all`` with a fixed format; ``scontrol show job -o`` for a job
  squeue did not list.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from wattshift.model.jobs import JobState

from .jobs import DEFAULT_ACTION_TIMES, ActionTimes, JobError, JobSpec, JobStatus
from .subprocess_run import CommandTimeout, Completed, run_program

# Slurm's long state names (squeue %T, scontrol JobState) onto ours.
SLURM_STATES: Mapping[str, JobState] = {
    "PENDING": JobState.PENDING,
    "REQUEUED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.PENDING,
    "REQUEUE_FED": JobState.PENDING,
    "RESV_DEL_HOLD": JobState.PENDING,
    "SPECIAL_EXIT": JobState.PENDING,  # requeued, held, after a special exit code
    "CONFIGURING": JobState.RUNNING,  # nodes booting: allocated, about to draw
    "RUNNING": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    # Processes still exiting: the GPUs may still draw, so count it as running (worst case).
    "COMPLETING": JobState.RUNNING,
    "SUSPENDED": JobState.SUSPENDED,
    "STOPPED": JobState.SUSPENDED,  # SIGSTOP'd, resources kept: draws like a suspended job
    "COMPLETED": JobState.COMPLETED,
    "CANCELLED": JobState.CANCELLED,
    "REVOKED": JobState.CANCELLED,
    "PREEMPTED": JobState.CANCELLED,
    "DEADLINE": JobState.FAILED,
    "FAILED": JobState.FAILED,
    "TIMEOUT": JobState.FAILED,
    "NODE_FAIL": JobState.FAILED,
    "BOOT_FAIL": JobState.FAILED,
    "OUT_OF_MEMORY": JobState.FAILED,
}

# The squeue columns we read, name last so a '|' in a job name cannot shift the others. %n, the
# requested nodes, tells where a waiting (held) job wants to run: where its power must be found.
SQUEUE_FORMAT = "%i|%T|%N|%n|%b|%r|%j"
_JOB_ID = re.compile(r"^[0-9]+(_[0-9]+)?$")
_GPUS = re.compile(r"gpu(?::[^:,]+)?[:=](\d+)")
_KEY = re.compile(r" (?=[A-Za-z][A-Za-z0-9/_:]*=)")


def slurm_state(text: str) -> JobState:
    """Slurm's state word (``CANCELLED by 0``, ``RUNNING+...`` included) as a :class:`JobState`."""
    word = text.strip().split(" ", 1)[0].split("+", 1)[0].upper()
    return SLURM_STATES.get(word, JobState.UNKNOWN)


def gpus_requested(tres: str) -> int:
    """GPUs from Slurm's TRES text (``gres:gpu:2``, ``gres/gpu:a100=4``, ``N/A``)."""
    return sum(int(m.group(1)) for m in _GPUS.finditer(tres))


def parse_squeue(text: str) -> dict[str, JobStatus]:
    """Lines of :data:`SQUEUE_FORMAT` into statuses; a line that does not fit is skipped."""
    out: dict[str, JobStatus] = {}
    for line in text.splitlines():
        parts = line.split("|", 6)
        if len(parts) != 7 or not parts[0].strip():
            continue
        job_id, state_text, nodes, requested, tres, reason, name = (p.strip() for p in parts)
        state = slurm_state(state_text)
        if not nodes and state is JobState.PENDING and "," not in requested:
            nodes = requested
        out[job_id] = JobStatus(
            job_id=job_id,
            name=name,
            state=state,
            node=nodes or None,
            gpus=gpus_requested(tres),
            reason="" if reason == "None" else reason,
        )
    return out


def parse_show_job(line: str) -> JobStatus | None:
    """One line of ``scontrol show job -o`` (``Key=value`` pairs; values may hold spaces)."""
    fields: dict[str, str] = {}
    for pair in _KEY.split(line.strip()):
        key, sep, value = pair.partition("=")
        if sep:
            fields[key] = value.strip()
    if "JobId" not in fields or "JobState" not in fields:
        return None
    nodes = fields.get("NodeList", "")
    reason = fields.get("Reason", "")
    return JobStatus(
        job_id=fields["JobId"],
        name=fields.get("JobName", ""),
        state=slurm_state(fields["JobState"]),
        node=None if nodes in ("", "(null)") else nodes,
        gpus=gpus_requested(fields.get("TresPerNode", "") + "," + fields.get("TRES", "").replace("gres/", "gres:")),
        reason="" if reason == "None" else reason,
    )


def batch_script(command: str) -> str:
    """The sbatch script for a spec's command: a shell script unless it names its interpreter."""
    body = command if command.strip() else "true"
    return body if body.startswith("#!") else "#!/bin/sh\n" + body + "\n"


class SlurmRunner:
    """A Slurm cluster, driven through its CLI. One instance per cluster."""

    def __init__(
        self,
        *,
        slurm_conf: Path | None = None,
        partition: str | None = None,
        timeout_seconds: float = 10.0,
        times: ActionTimes = DEFAULT_ACTION_TIMES,
        gres_gpus: bool = True,
        hold_requeued: bool = True,
        output: str | None = None,
        workdir: Path | None = None,
        sbatch_args: Sequence[str] = (),
        name: str = "slurm",
    ) -> None:
        if timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds: {timeout_seconds!r}: must be > 0")
        self.name = name
        self.times = times
        self.slurm_conf = slurm_conf
        self.partition = partition
        self.timeout_seconds = timeout_seconds
        self.gres_gpus = gres_gpus  # False: the cluster has no GRES configured; ask for no GPUs
        self.hold_requeued = hold_requeued
        self.output = output  # sbatch --output pattern; Slurm's default is slurm-%j.out in workdir
        self.workdir = workdir
        self.sbatch_args = tuple(sbatch_args)  # site specifics: --account, --qos, ...

    # -- the levers ------------------------------------------------------------------------

    async def submit(self, spec: JobSpec) -> str:
        argv = ["sbatch", "--parsable", "--requeue", f"--job-name={spec.name}"]
        if spec.hold:
            argv.append("--hold")
        if spec.gpus > 0 and self.gres_gpus:
            argv.append(f"--gres=gpu:{spec.gpus}")
        if spec.node:
            argv.append(f"--nodelist={spec.node}")
        partition = spec.partition or self.partition
        if partition:
            argv.append(f"--partition={partition}")
        if spec.time_limit_minutes is not None:
            argv.append(f"--time={spec.time_limit_minutes}")
        if self.output:
            argv.append(f"--output={self.output}")
        if self.workdir is not None:
            argv.append(f"--chdir={self.workdir}")
        argv.extend(self.sbatch_args)
        # sbatch hands its own environment to the job (--export=ALL): the spec's env goes there,
        # not into the command line, so no value can change the arguments.
        done = await self._run(None, "submit", argv, stdin=batch_script(spec.command), extra_env=spec.env)
        lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
        job_id = lines[-1].split(";", 1)[0] if lines else ""
        if not _JOB_ID.match(job_id):
            raise JobError(None, "submit", f"sbatch printed no job id: {done.stdout.strip()!r}")
        return job_id

    async def start(self, job_id: str) -> None:
        await self._scontrol("start", job_id, "release", job_id)
        try:
            await self._scontrol("start", job_id, "update", f"JobId={job_id}", "StartTime=now")
        except JobError as err:
            # Released and already picked up by the scheduler: that is what we asked for.
            if "pending" not in err.detail.lower():
                raise

    async def suspend(self, job_id: str) -> None:
        await self._scontrol("suspend", job_id, "suspend", job_id)

    async def resume(self, job_id: str) -> None:
        await self._scontrol("resume", job_id, "resume", job_id)

    async def requeue(self, job_id: str) -> None:
        await self._scontrol("requeue", job_id, "requeuehold" if self.hold_requeued else "requeue", job_id)

    async def stop(self, job_id: str) -> None:
        _check_id(job_id, "stop")
        await self._run(job_id, "stop", ["scancel", job_id])

    async def status(self, job_ids: Sequence[str] | None = None) -> Mapping[str, JobStatus]:
        argv = ["squeue", "--noheader", "--states=all", f"--format={SQUEUE_FORMAT}"]
        if job_ids is not None:
            if not job_ids:
                return {}
            for job_id in job_ids:
                _check_id(job_id, "status")
            argv.append(f"--jobs={','.join(job_ids)}")
        done = await self._run(None, "status", argv, ok_if=_unknown_job)
        found = parse_squeue(done.stdout) if done.returncode == 0 else {}
        if job_ids is None:
            return found
        for job_id in job_ids:
            if job_id not in found:
                shown = await self._show_job(job_id)
                if shown is not None:
                    found[job_id] = shown
        return {job_id: found[job_id] for job_id in job_ids if job_id in found}

    # -- plumbing --------------------------------------------------------------------------

    async def _show_job(self, job_id: str) -> JobStatus | None:
        done = await self._run(job_id, "status", ["scontrol", "--oneliner", "show", "job", job_id], ok_if=_unknown_job)
        if done.returncode != 0:
            return None  # Slurm has forgotten it (MinJobAge passed): absent, as the protocol allows
        for line in done.stdout.splitlines():
            status = parse_show_job(line)
            if status is not None and status.job_id == job_id:
                return status
        return None

    async def _scontrol(self, action: str, job_id: str, *args: str) -> None:
        _check_id(job_id, action)
        await self._run(job_id, action, ["scontrol", *args])

    def _env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        if extra:
            env.update(extra)
        if self.slurm_conf is not None:
            env["SLURM_CONF"] = str(self.slurm_conf)
        return env

    async def _run(
        self,
        job_id: str | None,
        action: str,
        argv: list[str],
        *,
        stdin: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        ok_if: Callable[[Completed], bool] | None = None,
    ) -> Completed:
        try:
            done = await run_program(argv, timeout_seconds=self.timeout_seconds, stdin=stdin, env=self._env(extra_env))
        except FileNotFoundError:
            raise JobError(job_id, action, f"{argv[0]} not found: is the Slurm client installed?") from None
        except CommandTimeout as err:
            raise JobError(job_id, action, str(err)) from None
        if done.returncode != 0 and not (ok_if is not None and ok_if(done)):
            raise JobError(job_id, action, done.said())
        return done


def _check_id(job_id: str, action: str) -> None:
    if not _JOB_ID.match(job_id):
        raise JobError(job_id, action, f"{job_id!r} is not a Slurm job id (digits, or digits_digits)")


def _unknown_job(done: Completed) -> bool:
    """squeue/scontrol's answer for ids it does not know: not a failure of the call."""
    return "invalid job id" in done.stderr.lower()
