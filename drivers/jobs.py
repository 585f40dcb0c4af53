"""The AI job runner contract: the levers on GPU work and how fast each moves power.

A runner fronts one scheduler (Slurm, a set of operator shell commands, the simulator). The
loop never waits on a scheduler inside a tick longer than its deadline, and every action says
how long it takes to release or draw power (DESIGN.md, levers on AI work), because that is what
the sequencer must budget for: a suspended job's GPUs drop to idle in seconds, a requeued job
takes minutes to come back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from wattshift.model.jobs import JobState


@dataclass(frozen=True, slots=True)
class ActionTimes:
    """Expected seconds until power is released (down) or drawn again (up), per action."""

    suspend_release: float = 5.0
    resume_draw: float = 5.0
    requeue_release: float = 30.0
    start_draw: float = 120.0
    stop_release: float = 30.0


DEFAULT_ACTION_TIMES = ActionTimes()


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What to run: the runner turns it into an sbatch script, a command, or a simulated job."""

    name: str
    gpus: int
    command: str = ""  # Slurm: the batch script body; command runner: $WATTSHIFT_JOB_COMMAND
    node: str | None = None  # pin to a node (Slurm --nodelist)
    partition: str | None = None
    time_limit_minutes: int | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    hold: bool = False  # queue it held: it waits for power until ``JobRunner.start``

    def __post_init__(self) -> None:
        # Bad input is refused before it reaches a scheduler, naming the field and the value.
        if not self.name.strip():
            raise ValueError(f"JobSpec.name: {self.name!r}: must not be empty")
        if isinstance(self.gpus, bool) or not isinstance(self.gpus, int) or self.gpus < 0:
            raise ValueError(f"JobSpec.gpus: {self.gpus!r}: must be a whole number >= 0")
        if self.time_limit_minutes is not None and self.time_limit_minutes <= 0:
            raise ValueError(f"JobSpec.time_limit_minutes: {self.time_limit_minutes!r}: must be > 0")


@dataclass(frozen=True, slots=True)
class JobStatus:
    job_id: str
    name: str
    state: JobState
    node: str | None = None
    gpus: int = 0
    reason: str = ""  # the scheduler's own words (Slurm's REASON column), for operators


class JobError(Exception):
    """A runner action failed; the message names the job, the action and what the scheduler said."""

    def __init__(self, job_id: str | None, action: str, detail: str) -> None:
        super().__init__(f"{action} {job_id or ''}: {detail}".replace("  ", " "))
        self.job_id = job_id
        self.action = action
        self.detail = detail


@runtime_checkable
class JobRunner(Protocol):
    """One scheduler. Each call has a deadline and raises :class:`JobError` on failure.

    A requeued job waits *held*: a scheduler left to itself would start it again as soon as its
    GPUs are free, drawing power the site did not grant. Only :meth:`start` lets it run again.
    """

    name: str
    times: ActionTimes

    async def submit(self, spec: JobSpec) -> str: ...

    async def start(self, job_id: str) -> None:
        """Let a held job run (Slurm: ``scontrol release``). Jobs wait for power in the queue,
        held, until the loop has room for them: that is what keeps an arrival under budget."""
        ...

    async def suspend(self, job_id: str) -> None: ...

    async def resume(self, job_id: str) -> None: ...

    async def requeue(self, job_id: str) -> None:
        """Stop a running or suspended job and queue it again, held (see the class docstring)."""
        ...

    async def stop(self, job_id: str) -> None: ...

    async def status(self, job_ids: Sequence[str] | None = None) -> Mapping[str, JobStatus]:
        """The jobs named (all this runner knows when ``None``); a finished job may be absent."""
        ...


JobRunnerFactory = Callable[..., JobRunner]


