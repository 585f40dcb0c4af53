"""GPU nodes as the loop drives them: cards through a GPU driver, work through a job runner.

A node's "limit" is the per-card power cap times its cards plus the host's busy draw; "sleep" is
its job suspended (suspendable tier) or requeued (preemptible); "wake" resumes it, or starts a
job that waits, held, for power. Firm jobs refuse both: a rented card is never curtailed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from wattshift.daemon.config.gpu import GpuNodeConfig, JobsConfig
from wattshift.drivers.base import DeviceError
from wattshift.drivers.gpu import GpuDriver
from wattshift.drivers.jobs import JobError, JobRunner, JobStatus
from wattshift.model.gpu import GpuLimits, GpuReading
from wattshift.model.jobs import FlexTier, JobState
from wattshift.model.miner import Failure

log = logging.getLogger(__name__)

# When no card of a node has ever answered, assume the largest card on the market (B200).
UNKNOWN_CARD = GpuLimits(200.0, 1000.0, 1000.0)


@dataclass(frozen=True, slots=True)
class NodeReading:
    """One poll of one node: its cards (those that answered) and the job on it."""

    node: str
    gpus: Mapping[str, GpuReading | DeviceError]
    job: JobStatus | None
    runner_failure: str | None = None  # the runner could not be asked: job state unknown

    @property
    def readings(self) -> tuple[GpuReading, ...]:
        return tuple(sorted((r for r in self.gpus.values() if isinstance(r, GpuReading)), key=lambda r: r.index))

    @property
    def failures(self) -> list[DeviceError]:
        return [r for r in self.gpus.values() if isinstance(r, DeviceError)]


class GpuFleet:
    """Every GPU node of the site; one job runner for all of them."""

    def __init__(
        self,
        nodes: Sequence[GpuNodeConfig],
        drivers: Mapping[str, GpuDriver],
        runner: JobRunner | None,
        jobs: JobsConfig,
        *,
        call_timeout_seconds: float = 10.0,
    ) -> None:
        self.nodes = {n.name: n for n in nodes}
        self._drivers = dict(drivers)
        self.runner = runner
        self.jobs = jobs
        self._timeout = call_timeout_seconds
        self._uuids: dict[str, list[str]] = {}
        self._limits: dict[str, GpuLimits] = {}  # last constraints seen, per node
        self._last: dict[str, NodeReading] = {}

    async def start(self) -> None:
        for name, driver in self._drivers.items():
            self._uuids[name] = await driver.start()

    async def close(self) -> None:
        for driver in self._drivers.values():
            await driver.close()

    def card_limits(self, node: str) -> GpuLimits:
        return self._limits.get(node, UNKNOWN_CARD)

    async def read_all(self) -> dict[str, NodeReading]:
        return await self.read(list(self.nodes))

    async def read(self, names: Sequence[str]) -> dict[str, NodeReading]:
        names = [n for n in names if n in self.nodes]
        cards = await asyncio.gather(*(self._read_cards(n) for n in names))
        jobs, runner_failure = await self._jobs_by_node()
        out: dict[str, NodeReading] = {}
        for name, gpus in zip(names, cards, strict=True):
            job = jobs.get(self.nodes[name].scheduler_name)
            out[name] = NodeReading(name, gpus, job, runner_failure)
            limits = next((r.limits for r in out[name].readings if r.limits is not None), None)
            if limits is not None:
                self._limits[name] = limits
        self._last.update(out)
        return out

    async def _read_cards(self, name: str) -> Mapping[str, GpuReading | DeviceError]:
        driver = self._drivers.get(name)
        if driver is None:
            return {}
        try:
            async with asyncio.timeout(self._timeout):
                return await driver.read_all()
        except TimeoutError:
            return {name: DeviceError(name, Failure.TIMEOUT, f"no reading within {self._timeout:g} s")}

    async def _jobs_by_node(self) -> tuple[dict[str, JobStatus], str | None]:
        if self.runner is None:
            return {}, None
        try:
            async with asyncio.timeout(self._timeout):
                statuses = await self.runner.status()
        except (JobError, TimeoutError) as err:
            log.warning("job runner %s: %s", self.runner.name, err or "timed out")
            return {}, str(err) or "timed out"
        by_node: dict[str, JobStatus] = {}
        for status in statuses.values():
            if status.node is None or status.state.finished:
                continue
            held = by_node.get(status.node)
            # One job per node: a running one wins over a suspended one over a waiting one.
            if held is None or _rank(status) < _rank(held):
                by_node[status.node] = status
        return by_node, None

    def driver(self, name: str) -> GpuNodeDriver | None:
        node, cards = self.nodes.get(name), self._drivers.get(name)
        if node is None or cards is None:
            return None
        last = self._last.get(name)
        job = last.job if last is not None else None
        tier = self.tier_of(job) if job is not None else None
        # A node whose cards were not seen at start (an agent host that came up later) is driven
        # by the cards its last reading showed.
        uuids = self._uuids.get(name) or ([r.uuid for r in last.readings] if last is not None else [])
        return GpuNodeDriver(node, cards, uuids, self.card_limits(name), self.runner, job, tier)

    def last(self, name: str) -> NodeReading | None:
        return self._last.get(name)

    def tier_of(self, job: JobStatus) -> FlexTier:
        job_class = self.jobs.class_for(job.name)
        return job_class.tier if job_class is not None else FlexTier.FIRM  # unknown work: hands off


def _rank(status: JobStatus) -> int:
    order = (JobState.RUNNING, JobState.SUSPENDED, JobState.PENDING)
    return order.index(status.state) if status.state in order else len(order)


class GpuNodeDriver:
    """The miner-shaped handle the actuator drives for one node: set a node limit, sleep, wake.
    Made per command from the fleet's last reading, so it acts on the job it was planned for."""

    def __init__(
        self,
        node: GpuNodeConfig,
        cards: GpuDriver,
        uuids: list[str],
        limits: GpuLimits,
        runner: JobRunner | None,
        job: JobStatus | None,
        tier: FlexTier | None,
    ) -> None:
        self.device_id = node.name
        self._node = node
        self._cards = cards
        self._uuids = uuids
        self._limits = limits
        self._runner = runner
        self._job = job
        self._tier = tier

    async def set_power_limit(self, watts: float) -> float:
        if not self._uuids:
            raise DeviceError(self.device_id, Failure.NO_ANSWER, "no GPUs found on this node")
        cap = (watts - self._node.host_max_watts) / len(self._uuids)
        cap = min(max(cap, self._limits.min_watts), self._limits.max_watts)
        held = await asyncio.gather(*(self._cards.set_power_limit(u, cap) for u in self._uuids))
        return self._node.host_max_watts + sum(held)

    def _job_or_refuse(self, action: str) -> tuple[JobRunner, JobStatus]:
        if self._runner is None or self._job is None:
            raise DeviceError(self.device_id, Failure.UNSUPPORTED, f"cannot {action}: no job on this node")
        return self._runner, self._job

    async def sleep(self) -> None:
        runner, job = self._job_or_refuse("sleep")
        try:
            if self._tier is FlexTier.SUSPENDABLE:
                await runner.suspend(job.job_id)
            elif self._tier is FlexTier.PREEMPTIBLE:
                await runner.requeue(job.job_id)
            else:
                raise DeviceError(self.device_id, Failure.REFUSED, f"job {job.job_id} is firm: never curtailed")
        except JobError as err:
            raise DeviceError(self.device_id, Failure.REFUSED, str(err)) from None

    async def wake(self) -> None:
        runner, job = self._job_or_refuse("wake")
        try:
            if job.state is JobState.SUSPENDED:
                await runner.resume(job.job_id)
            elif job.state is JobState.PENDING:
                await runner.start(job.job_id)
        except JobError as err:
            raise DeviceError(self.device_id, Failure.REFUSED, str(err)) from None
