"""A job scheduler in-process, for the demo, the site simulator and scenario tests.

:class:`SimulatedJobRunner` implements :class:`~wattshift.drivers.jobs.JobRunner` over a few GPU
nodes on an injectable clock. Like the other simulators it is evaluated lazily: nothing ticks
in the background; every call first plays the events due by ``clock()``, in time order.

What it models, and why:

- **The report leads the power.** An action changes the state the scheduler reports at once;
  the GPUs' draw follows after the runner's :class:`ActionTimes` (a suspended job still draws for
  ``suspend_release`` seconds, a started one draws only after ``start_draw``). That lag is what
  the sequencer must budget for, so the simulator makes it visible: ``SimulatedJob.drawing``.
- **Requeued jobs wait held**, as the contract says; ``start`` lets them run. Work done before a
  requeue is lost (restart from the top); ``restarts`` counts.
- **Arrivals and ends are scripted**: a job arrives at ``t``, needs ``g`` GPUs (on a node, or
  anywhere), does ``d`` seconds of useful work (time spent drawing), at a load factor.
- **Faults**: the next call of an action can be refused, or hang until the runner's deadline.

Coupling to simulated GPUs: ``load_of(node)`` gives each card's load (0..1) and ``pids_of(node)``
the processes holding it; ``on_change(job)`` fires on every state or draw change, so a site
simulator can push loads when something moves instead of polling (``runner.now`` is then
the event's own time, which may lie before ``clock()`` when a call replays a stretch).
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from wattshift.drivers.jobs import DEFAULT_ACTION_TIMES, ActionTimes, JobError, JobSpec, JobStatus
from wattshift.model.jobs import JobState

Clock = Callable[[], float]
FIRST_PID = 40000  # fake process ids for NVML's process list: one per job, stable


@dataclass(frozen=True, slots=True)
class ScriptedJob:
    """A job that arrives by itself ``at`` seconds after the runner's origin."""

    at: float
    spec: JobSpec
    run_seconds: float | None = None  # useful work needed; None: runs until stopped
    load: float = 1.0  # GPU load while it draws, 0..1


@dataclass(eq=False)
class SimulatedJob:
    """One job's true state. ``state`` is what the scheduler reports; ``drawing`` is the power."""

    job_id: str
    spec: JobSpec
    load: float
    run_seconds: float | None
    submitted_at: float
    held: bool
    pid: int
    state: JobState = JobState.PENDING
    node: str | None = None
    gpu_indices: tuple[int, ...] = ()
    drawing: bool = False
    work_seconds: float = 0.0  # useful work in this run, up to the last draw change
    restarts: int = 0
    reason: str = ""
    ended_at: float | None = None
    _draw_since: float = 0.0
    _draw_change: tuple[float, bool] | None = None  # (at, drawing): the power follows the state
    _release_at: float | None = None  # GPUs given back (requeue, stop)

    def status(self) -> JobStatus:
        # A waiting job pinned to a node reports that node, as Slurm's requested node list does:
        # it is how the loop knows where the power for it must be found.
        node = self.node or (self.spec.node if self.state is JobState.PENDING else None)
        return JobStatus(self.job_id, self.spec.name, self.state, node, self.spec.gpus, self.reason)

    def done_at(self) -> float | None:
        """When its work completes, if it keeps drawing."""
        if not self.drawing or self.run_seconds is None:
            return None
        return self._draw_since + max(0.0, self.run_seconds - self.work_seconds)


class Fault(enum.StrEnum):
    REFUSE = "refuse"  # the scheduler answers with an error
    HANG = "hang"  # the scheduler never answers: the call fails at the runner's deadline


@dataclass
class _FaultPlan:
    fault: Fault
    detail: str
    remaining: int | None  # None: every call until cleared


class SimulatedJobRunner:
    """Nodes with GPUs, a FIFO queue, and the levers of the JobRunner contract."""

    def __init__(
        self,
        nodes: Mapping[str, int],
        *,
        clock: Clock = time.monotonic,
        times: ActionTimes = DEFAULT_ACTION_TIMES,
        timeout_seconds: float = 10.0,
        script: Iterable[ScriptedJob] = (),
        on_change: Callable[[SimulatedJob], None] | None = None,
        default_load: float = 1.0,
        name: str = "simulated",
    ) -> None:
        for node, gpus in nodes.items():
            if gpus < 0:
                raise ValueError(f"nodes.{node}: {gpus!r}: a GPU count must be >= 0")
        _check_load(default_load)
        self.name = name
        self.times = times
        self.timeout_seconds = timeout_seconds
        self.nodes = dict(nodes)
        self.on_change = on_change
        self.default_load = default_load
        self._clock = clock
        self.origin = clock()
        self._jobs: dict[str, SimulatedJob] = {}
        self._script: list[ScriptedJob] = []
        self._faults: dict[str, list[_FaultPlan]] = {}
        self._now = self.origin
        self.script(script)

    # -- the JobRunner contract ------------------------------------------------------------

    async def submit(self, spec: JobSpec) -> str:
        await self._fault(None, "submit")
        return self.submit_now(spec).job_id

    async def start(self, job_id: str) -> None:
        await self._fault(job_id, "start")
        job = self._job(job_id, "start")
        if job.state is JobState.PENDING:
            job.held = False
            job.reason = "released"
            self._place(self._now)
        elif job.state.finished:
            raise JobError(job_id, "start", f"job is {job.state.value}")
        # Running or suspended: already let go, nothing to do (as Slurm's release).

    async def suspend(self, job_id: str) -> None:
        await self._fault(job_id, "suspend")
        job = self._expect(job_id, "suspend", JobState.RUNNING)
        self._set(job, JobState.SUSPENDED, "suspended")
        job._draw_change = (self._now + self.times.suspend_release, False)

    async def resume(self, job_id: str) -> None:
        await self._fault(job_id, "resume")
        job = self._expect(job_id, "resume", JobState.SUSPENDED)
        self._set(job, JobState.RUNNING, "")
        job._draw_change = (self._now + self.times.resume_draw, True)

    async def requeue(self, job_id: str) -> None:
        await self._fault(job_id, "requeue")
        job = self._expect(job_id, "requeue", JobState.RUNNING, JobState.SUSPENDED)
        job.held = True
        job.restarts += 1
        self._set(job, JobState.PENDING, "requeued, held")
        job._draw_change = (self._now + self.times.requeue_release, False)
        job._release_at = self._now + self.times.requeue_release

    async def stop(self, job_id: str) -> None:
        await self._fault(job_id, "stop")
        job = self._job(job_id, "stop")
        if job.state.finished:
            raise JobError(job_id, "stop", f"job is already {job.state.value}")
        holding = bool(job.node)
        self._set(job, JobState.CANCELLED, "cancelled")
        job.ended_at = self._now
        if holding:
            job._draw_change = (self._now + self.times.stop_release, False)
            job._release_at = self._now + self.times.stop_release

    async def status(self, job_ids: Sequence[str] | None = None) -> Mapping[str, JobStatus]:
        await self._fault(None, "status")
        self.advance()
        ids = list(self._jobs) if job_ids is None else [i for i in job_ids if i in self._jobs]
        return {i: self._jobs[i].status() for i in ids}

    # -- for the simulator, the demo and tests ---------------------------------------------

    def submit_now(self, spec: JobSpec, *, run_seconds: float | None = None, load: float | None = None) -> SimulatedJob:
        """Queue a job with its work and load (``submit`` uses no end and the default load)."""
        self.advance()
        return self._arrive(spec, run_seconds, self.default_load if load is None else load, self._now)

    def script(self, jobs: Iterable[ScriptedJob]) -> None:
        """Add arrivals; ``at`` counts from :attr:`origin`. Checked now, not when they arrive."""
        added = list(jobs)
        for item in added:
            self._check_spec(item.spec)
            _check_load(item.load)
            if item.run_seconds is not None and item.run_seconds <= 0:
                raise ValueError(f"run_seconds: {item.run_seconds!r}: must be > 0")
        self._script = sorted(self._script + added, key=lambda item: item.at)

    def advance(self) -> float:
        """Play every event due by ``clock()``, in time order; returns that time."""
        now = max(self._clock(), self._now)
        while (event := self._next_event()) is not None and event[0] <= now:
            self._now = event[0]
            event[1]()
        self._now = now
        return now

    @property
    def now(self) -> float:
        """The simulated time: inside ``on_change``, the time of the event being played."""
        return self._now

    def next_event_at(self) -> float | None:
        """When the next thing happens by itself (arrival, draw change, release, completion)."""
        event = self._next_event()
        return event[0] if event is not None else None

    @property
    def jobs(self) -> list[SimulatedJob]:
        self.advance()
        return list(self._jobs.values())

    def job(self, job_id: str) -> SimulatedJob:
        self.advance()
        return self._job(job_id, "job")

    def load_of(self, node: str) -> dict[int, float]:
        """Each card's load on ``node`` (0.0: idle; a suspended job's card is idle too)."""
        self.advance()
        loads = {index: 0.0 for index in range(self._gpu_count(node))}
        for job in self._jobs.values():
            if job.node == node and job.drawing:
                loads.update(dict.fromkeys(job.gpu_indices, job.load))
        return loads

    def pids_of(self, node: str) -> dict[int, tuple[int, ...]]:
        """The processes holding each card on ``node`` (a suspended job keeps its memory)."""
        self.advance()
        pids: dict[int, tuple[int, ...]] = {index: () for index in range(self._gpu_count(node))}
        for job in self._jobs.values():
            if job.node == node:
                for index in job.gpu_indices:
                    pids[index] += (job.pid,)
        return pids

    def refuse(self, action: str, detail: str = "refused by the simulated scheduler", *, times: int | None = 1) -> None:
        """The next ``times`` calls of ``action`` fail with ``detail`` (None: until cleared)."""
        self._add_fault(action, _FaultPlan(Fault.REFUSE, detail, times))

    def hang(self, action: str, *, times: int | None = 1) -> None:
        """The next ``times`` calls of ``action`` never answer: JobError at the deadline."""
        self._add_fault(action, _FaultPlan(Fault.HANG, "", times))

    def clear_faults(self) -> None:
        self._faults.clear()

    # -- the machinery ---------------------------------------------------------------------

    def _next_event(self) -> tuple[float, Callable[[], None]] | None:
        best: tuple[float, Callable[[], None]] | None = None

        def consider(at: float | None, action: Callable[[], None]) -> None:
            nonlocal best
            if at is not None and (best is None or at < best[0]):
                best = (at, action)

        if self._script:
            item = self._script[0]
            consider(self.origin + item.at, lambda: self._arrive_scripted(item))
        for job in self._jobs.values():
            if job._draw_change is not None:
                at, on = job._draw_change
                consider(at, lambda job=job, on=on: self._draw(job, on))  # type: ignore[misc]
            consider(job._release_at, lambda job=job: self._release(job))  # type: ignore[misc]
            consider(job.done_at(), lambda job=job: self._complete(job))  # type: ignore[misc]
        return best

    def _arrive_scripted(self, item: ScriptedJob) -> None:
        self._script.remove(item)
        self._arrive(item.spec, item.run_seconds, item.load, self._now)

    def _arrive(self, spec: JobSpec, run_seconds: float | None, load: float, at: float) -> SimulatedJob:
        self._check_spec(spec)
        _check_load(load)
        number = len(self._jobs) + 1
        job = SimulatedJob(
            str(number), spec, load, run_seconds, at, held=spec.hold, pid=FIRST_PID + number,
            reason="held" if spec.hold else "",
        )  # fmt: skip
        self._jobs[job.job_id] = job
        self._changed(job)
        self._place(at)
        return job

    def _place(self, at: float) -> None:
        """Start waiting jobs, first come first served, where their GPUs are free."""
        for job in self._jobs.values():
            if job.state is not JobState.PENDING or job.held or job.node is not None:
                continue
            spot = self._free_gpus(job.spec)
            if spot is None:
                job.reason = "waiting for GPUs"
                continue
            job.node, job.gpu_indices = spot
            job.work_seconds = 0.0
            self._set(job, JobState.RUNNING, "")
            job._draw_change = (at + self.times.start_draw, True)

    def _free_gpus(self, spec: JobSpec) -> tuple[str, tuple[int, ...]] | None:
        for node, count in self.nodes.items():
            if spec.node is not None and node != spec.node:
                continue
            used = {i for j in self._jobs.values() if j.node == node for i in j.gpu_indices}
            free = [i for i in range(count) if i not in used]
            if len(free) >= spec.gpus:
                return node, tuple(free[: spec.gpus])
        return None

    def _draw(self, job: SimulatedJob, on: bool) -> None:
        job._draw_change = None
        if on == job.drawing:
            return
        if on:
            job._draw_since = self._now
        else:
            job.work_seconds += self._now - job._draw_since
        job.drawing = on
        self._changed(job)

    def _release(self, job: SimulatedJob) -> None:
        job._release_at = None
        self._draw(job, False)
        job.node, job.gpu_indices = None, ()
        job.work_seconds = 0.0  # a requeued job starts from the top
        self._changed(job)
        self._place(self._now)

    def _complete(self, job: SimulatedJob) -> None:
        self._draw(job, False)
        job._draw_change = job._release_at = None
        job.node, job.gpu_indices = None, ()
        job.ended_at = self._now
        self._set(job, JobState.COMPLETED, "")
        self._place(self._now)

    def _set(self, job: SimulatedJob, state: JobState, reason: str) -> None:
        job.state, job.reason = state, reason
        self._changed(job)

    def _changed(self, job: SimulatedJob) -> None:
        if self.on_change is not None:
            self.on_change(job)

    def _job(self, job_id: str, action: str) -> SimulatedJob:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise JobError(job_id, action, "no such job") from None

    def _expect(self, job_id: str, action: str, *states: JobState) -> SimulatedJob:
        self.advance()
        job = self._job(job_id, action)
        if job.state not in states:
            wanted = " or ".join(s.value for s in states)
            raise JobError(job_id, action, f"job is {job.state.value}, not {wanted}")
        return job

    def _check_spec(self, spec: JobSpec) -> None:
        if spec.node is not None and spec.node not in self.nodes:
            known = ", ".join(self.nodes) or "none"
            raise JobError(None, "submit", f"unknown node {spec.node!r} (known: {known})")
        room = self.nodes[spec.node] if spec.node is not None else max(self.nodes.values(), default=0)
        if spec.gpus > room:
            raise JobError(None, "submit", f"{spec.name!r} needs {spec.gpus} GPUs; the most a node has is {room}")

    def _gpu_count(self, node: str) -> int:
        try:
            return self.nodes[node]
        except KeyError:
            raise KeyError(f"unknown node {node!r} (known: {', '.join(self.nodes)})") from None

    def _add_fault(self, action: str, plan: _FaultPlan) -> None:
        actions = ("submit", "start", "suspend", "resume", "requeue", "stop", "status")
        if action not in actions:
            raise ValueError(f"action: {action!r}: one of {', '.join(actions)}")
        self._faults.setdefault(action, []).append(plan)

    async def _fault(self, job_id: str | None, action: str) -> None:
        self.advance()
        plans = self._faults.get(action)
        if not plans:
            return
        plan = plans[0]
        if plan.remaining is not None:
            plan.remaining -= 1
            if plan.remaining <= 0:
                plans.pop(0)
        if plan.fault is Fault.REFUSE:
            raise JobError(job_id, action, plan.detail)
        await asyncio.sleep(self.timeout_seconds)  # the hang, cut short by our own deadline
        raise JobError(job_id, action, f"no answer within {self.timeout_seconds:g} s")


def _check_load(load: float) -> None:
    if not 0.0 <= load <= 1.0:
        raise ValueError(f"load: {load!r}: must be within 0..1")

