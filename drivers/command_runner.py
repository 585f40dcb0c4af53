"""A job runner made of operator-given shell commands: Kubernetes, Docker, systemd, anything.

Each action is one shell command, run with ``/bin/sh -c`` under a deadline. Job facts reach
the command **only as environment variables**, never spliced into the command text, so a job
named ``$(rm -rf /)`` is just a name. The command quotes them itself (``"$WATTSHIFT_JOB_ID"``).

Environment, per action:

- every action on a job: ``WATTSHIFT_JOB_ID``, and, when this runner submitted it,
  ``WATTSHIFT_JOB_NAME``, ``WATTSHIFT_JOB_GPUS``, ``WATTSHIFT_JOB_NODE``;
- ``submit``: ``WATTSHIFT_JOB_NAME``, ``WATTSHIFT_JOB_GPUS``, ``WATTSHIFT_JOB_NODE`` (empty when
  not pinned), ``WATTSHIFT_JOB_COMMAND``, ``WATTSHIFT_JOB_PARTITION``,
  ``WATTSHIFT_JOB_TIME_LIMIT_MINUTES`` (empty when none), ``WATTSHIFT_JOB_HOLD`` (``1`` or ``0``),
  plus the spec's own ``env``;
- ``status``: ``WATTSHIFT_JOB_IDS``, the ids asked about, space-separated (empty: all).

Output: ``submit`` prints the new job's id as its last line. ``status`` prints one line per job::

    <job_id> <state> [<node> [<name ...>]]

``state`` is one of pending, running, suspended, completed, failed, cancelled, unknown (any
case); ``node`` is ``-`` when the job has none; the name is the rest of the line. Blank lines and
lines starting with ``#`` are ignored. A non-zero exit, a timeout (the command's whole process
group is killed) or output that does not fit is a :class:`JobError`.

A command must not leave a background child holding its stdout open: the runner reads until
end of file, so that would count as a hang. ``requeue`` should leave the job held (see
:class:`~.jobs.JobRunner`), and ``start`` let it go.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator

from wattshift.model.jobs import JobState

from .jobs import DEFAULT_ACTION_TIMES, ActionTimes, JobError, JobSpec, JobStatus
from .subprocess_run import CommandTimeout, Completed, run_program

SHELL = "/bin/sh"


class CommandActions(BaseModel):
    """One shell command per action. All are required: a lever that cannot move must say so
    in its own command (``echo 'no suspend on k8s' >&2; exit 1``), not by being left out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    submit: str
    start: str
    suspend: str
    resume: str
    requeue: str
    stop: str
    status: str

    @field_validator("*")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a non-empty shell command")
        return value


class CommandRunnerOptions(BaseModel):
    """The site file's ``runner: command`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    commands: CommandActions
    timeout_seconds: float = Field(10.0, gt=0)


class CommandRunner:
    """Runs the operator's command for each lever; see the module docstring for the contract."""

    def __init__(
        self,
        commands: CommandActions | Mapping[str, str],
        *,
        timeout_seconds: float = 10.0,
        times: ActionTimes = DEFAULT_ACTION_TIMES,
        name: str = "command",
    ) -> None:
        options = CommandRunnerOptions.model_validate({"commands": commands, "timeout_seconds": timeout_seconds})
        self.commands = options.commands
        self.timeout_seconds = options.timeout_seconds
        self.times = times
        self.name = name
        self._specs: dict[str, JobSpec] = {}  # what we submitted, for names in status and env

    @classmethod
    def from_options(cls, options: CommandRunnerOptions, *, times: ActionTimes = DEFAULT_ACTION_TIMES) -> CommandRunner:
        return cls(options.commands, timeout_seconds=options.timeout_seconds, times=times)

    async def submit(self, spec: JobSpec) -> str:
        env = {
            **spec.env,
            "WATTSHIFT_JOB_NAME": spec.name,
            "WATTSHIFT_JOB_GPUS": str(spec.gpus),
            "WATTSHIFT_JOB_NODE": spec.node or "",
            "WATTSHIFT_JOB_COMMAND": spec.command,
            "WATTSHIFT_JOB_PARTITION": spec.partition or "",
            "WATTSHIFT_JOB_TIME_LIMIT_MINUTES": "" if spec.time_limit_minutes is None else str(spec.time_limit_minutes),
            "WATTSHIFT_JOB_HOLD": "1" if spec.hold else "0",
        }
        done = await self._run(None, "submit", env)
        lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
        job_id = lines[-1] if lines else ""
        if not job_id or len(job_id.split()) != 1:
            raise JobError(None, "submit", f"the last line of output must be the job id, got {job_id!r}")
        self._specs[job_id] = spec
        return job_id

    async def start(self, job_id: str) -> None:
        await self._run(job_id, "start", self._job_env(job_id))

    async def suspend(self, job_id: str) -> None:
        await self._run(job_id, "suspend", self._job_env(job_id))

    async def resume(self, job_id: str) -> None:
        await self._run(job_id, "resume", self._job_env(job_id))

    async def requeue(self, job_id: str) -> None:
        await self._run(job_id, "requeue", self._job_env(job_id))

    async def stop(self, job_id: str) -> None:
        await self._run(job_id, "stop", self._job_env(job_id))

    async def status(self, job_ids: Sequence[str] | None = None) -> Mapping[str, JobStatus]:
        if job_ids is not None and not job_ids:
            return {}
        done = await self._run(None, "status", {"WATTSHIFT_JOB_IDS": " ".join(job_ids or ())})
        found = parse_status(done.stdout, self._specs)
        if job_ids is None:
            return found
        return {job_id: found[job_id] for job_id in job_ids if job_id in found}

    def _job_env(self, job_id: str) -> dict[str, str]:
        env = {"WATTSHIFT_JOB_ID": job_id}
        spec = self._specs.get(job_id)
        if spec is not None:
            env.update(
                WATTSHIFT_JOB_NAME=spec.name, WATTSHIFT_JOB_GPUS=str(spec.gpus), WATTSHIFT_JOB_NODE=spec.node or ""
            )
        return env

    async def _run(self, job_id: str | None, action: str, job_env: Mapping[str, str]) -> Completed:
        command: str = getattr(self.commands, action)
        env = {**os.environ, **job_env}
        # "$0" names the action in the shell's own error messages.
        argv = [SHELL, "-c", command, f"wattshift-{action}"]
        try:
            done = await run_program(argv, timeout_seconds=self.timeout_seconds, env=env)
        except CommandTimeout:
            raise JobError(
                job_id, action, f"no answer within {self.timeout_seconds:g} s (process group killed)"
            ) from None
        if done.returncode != 0:
            raise JobError(job_id, action, f"exit status {done.returncode}: {done.said()}")
        return done


def parse_status(text: str, known: Mapping[str, JobSpec] | None = None) -> dict[str, JobStatus]:
    """The status command's output (format in the module docstring); any bad line is an error."""
    states = {s.value: s for s in JobState}
    out: dict[str, JobStatus] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(None, 3)
        if len(fields) < 2:
            raise JobError(None, "status", f"line {number}: {line!r}: expected '<job_id> <state> [<node> [<name>]]'")
        job_id, word = fields[0], fields[1].lower()
        if word not in states:
            raise JobError(
                None, "status", f"line {number}: {line!r}: unknown state {fields[1]!r} (one of {', '.join(states)})"
            )
        spec = (known or {}).get(job_id)
        node = fields[2] if len(fields) > 2 and fields[2] != "-" else None
        name = fields[3] if len(fields) > 3 else (spec.name if spec is not None else job_id)
        gpus = spec.gpus if spec is not None else 0
        out[job_id] = JobStatus(job_id=job_id, name=name, state=states[word], node=node, gpus=gpus)
    return out
