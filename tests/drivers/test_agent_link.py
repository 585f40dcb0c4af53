"""The controller's side of the agents, message by message (no broker: ``deliver`` is what the
connection calls for each message; the integration tests run the same over Mosquitto)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from simulated_gpus import ManualClock

from wattshift.drivers.agent_gpu import AgentGpus, AgentJobs
from wattshift.drivers.agent_link import AgentLink
from wattshift.drivers.agent_wire import MAX_READINGS_BYTES
from wattshift.drivers.base import DeviceError
from wattshift.drivers.catalog import gpu_drivers
from wattshift.drivers.gpu import GpuDriver
from wattshift.drivers.jobs import JobError, JobRunner
from wattshift.model.gpu import GpuReading
from wattshift.model.miner import Failure

P = "wattshift/agents"
WALL = 1_764_585_600.0


def no_broker() -> Any:
    raise AssertionError("these tests never connect")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def link(clock: ManualClock) -> AgentLink:
    return AgentLink(no_broker, prefix=P, stale_after_seconds=10.0, max_skew_seconds=30.0, clock=clock,
                     wall=lambda: WALL + clock.now)


def payload(host: str, uuids: list[str], *, limit: float = 700.0, at: float | None = None, **extra: Any) -> bytes:
    cards = [{"uuid": u, "index": i, "watts": 500.0, "limit_watts": limit, "enforced_limit_watts": limit,
              "limits": {"min_watts": 200.0, "max_watts": 700.0, "default_watts": 700.0}}
             for i, u in enumerate(uuids)]
    return json.dumps({"v": 1, "host": host, "at": at, "seq": 1, "gpus": cards, **extra}).encode()


def now(link: AgentLink) -> float:
    return link.wall()


def test_registered_as_agent_and_meets_the_contract(link):
    assert gpu_drivers().get("agent") is AgentGpus
    assert isinstance(AgentGpus(name="n", host="h", link=link), GpuDriver)
    assert isinstance(AgentJobs(link), JobRunner)


def test_a_good_reading_is_kept_and_read_as_the_cards(link, clock):
    gpus = AgentGpus(name="node-a", host="gpu-a", link=link)
    assert link.deliver(f"{P}/gpu-a/readings", payload("gpu-a", ["GPU-1", "GPU-2"], at=now(link))) is None
    read = asyncio.run(gpus.read_all())
    assert sorted(read) == ["GPU-1", "GPU-2"]
    assert all(isinstance(r, GpuReading) and r.limit_watts == 700.0 for r in read.values())


def test_a_reading_goes_stale_on_our_clock_and_the_cards_read_as_lost(link, clock):
    gpus = AgentGpus(name="node-a", host="gpu-a", link=link)
    link.deliver(f"{P}/gpu-a/readings", payload("gpu-a", ["GPU-1"], at=now(link)))
    clock.advance(12)
    read = asyncio.run(gpus.read_all())
    assert isinstance(read["GPU-1"], DeviceError) and read["GPU-1"].failure is Failure.NO_ANSWER
    assert "12 s old" in read["GPU-1"].detail


def test_the_last_will_makes_the_cards_lost_at_once(link):
    gpus = AgentGpus(name="node-a", host="gpu-a", link=link)
    link.deliver(f"{P}/gpu-a/readings", payload("gpu-a", ["GPU-1"], at=now(link)))
    link.deliver(f"{P}/gpu-a/availability", b"offline")
    read = asyncio.run(gpus.read_all())
    assert isinstance(read["GPU-1"], DeviceError) and "offline" in read["GPU-1"].detail


@pytest.mark.parametrize(("body", "reason"), [
    (lambda link: payload("gpu-b", ["GPU-1"], at=now(link)), "host"),  # on A's topic, says it is B
    (lambda link: payload("gpu-a", ["GPU-1"], at=now(link) + 31), "clock"),  # ahead of our clock
    (lambda link: payload("gpu-a", ["GPU-1"], at=now(link) - 3600), "clock"),  # an old retained one
    (lambda link: payload("gpu-a", ["GPU-1", "GPU-1"], at=now(link)), "malformed"),  # a card twice
    (lambda link: payload("gpu-a", ["GPU-1"], at=now(link), extra=1), "malformed"),  # unknown key
    (lambda link: payload("gpu-a", ["GPU-1"], at=now(link)).replace(b'"seq": 1', b'"seq": "1"'), "malformed"),
    (lambda link: payload("gpu-a", ["GPU-1"], at=now(link)).replace(b'"watts": 500.0', b'"watts": true'),
     "malformed"),
    (lambda link: b"x" * (MAX_READINGS_BYTES + 1), "malformed"),
    (lambda link: b"\xff\xfe", "malformed"),
])
def test_a_refused_reading_changes_nothing(link, body, reason):
    AgentGpus(name="node-a", host="gpu-a", link=link)
    assert link.deliver(f"{P}/gpu-a/readings", payload("gpu-a", ["GPU-1"], limit=300.0, at=now(link))) is None
    before = link.hosts["gpu-a"].readings
    assert link.deliver(f"{P}/gpu-a/readings", body(link)) == reason
    assert link.hosts["gpu-a"].readings is before
    assert link.hosts["gpu-a"].refused[reason] == 1


def test_a_card_another_host_reports_is_refused(link):
    AgentGpus(name="node-a", host="gpu-a", link=link)
    AgentGpus(name="node-b", host="gpu-b", link=link)
    assert link.deliver(f"{P}/gpu-b/readings", payload("gpu-b", ["GPU-B1"], at=now(link))) is None
    assert link.deliver(f"{P}/gpu-a/readings", payload("gpu-a", ["GPU-B1"], limit=200.0, at=now(link))) == "uuid"
    assert not link.fresh("gpu-a")


def test_only_the_cards_the_site_file_lists_are_taken(link):
    AgentGpus(["GPU-1", "GPU-2"], name="node-a", host="gpu-a", link=link)
    assert link.deliver(f"{P}/gpu-a/readings", payload("gpu-a", ["GPU-1", "GPU-9"], at=now(link))) == "uuid"
    assert link.deliver(f"{P}/gpu-a/readings", payload("gpu-a", ["GPU-1", "GPU-2"], at=now(link))) is None


def test_messages_for_hosts_the_site_does_not_name_are_counted_and_dropped(link):
    assert link.deliver(f"{P}/gpu-x/readings", payload("gpu-x", ["GPU-1"], at=now(link))) == "unknown_host"
    assert link.unknown_refused == 1 and "gpu-x" not in link.hosts


def test_one_host_one_node(link):
    AgentGpus(name="node-a", host="gpu-a", link=link)
    with pytest.raises(ValueError, match="already driven by node 'node-a'"):
        AgentGpus(name="node-b", host="gpu-a", link=link)


def test_a_reply_must_be_for_this_host_not_retained_and_asked_for(link):
    AgentGpus(name="node-a", host="gpu-a", link=link)

    def reply(host: str, request: str) -> bytes:
        return json.dumps({"v": 1, "host": host, "id": request, "status": "ok", "at": now(link)}).encode()

    async def main() -> None:
        waiting = asyncio.get_running_loop().create_future()
        link.hosts["gpu-a"].replies["r1"] = waiting
        assert link.deliver(f"{P}/gpu-a/reply", reply("gpu-a", "r1"), retained=True) == "retained"
        assert link.deliver(f"{P}/gpu-a/reply", reply("gpu-b", "r1")) == "host"
        assert link.deliver(f"{P}/gpu-a/reply", reply("gpu-a", "r2")) == "unexpected"  # never sent
        assert not waiting.done()
        assert link.deliver(f"{P}/gpu-a/reply", reply("gpu-a", "r1")) is None
        assert waiting.result().id == "r1"

    asyncio.run(main())


def test_a_cap_is_confirmed_only_by_a_reading_taken_after_the_agents_reply(link, clock):
    """A reading that shows the asked-for limit but was taken before the reply does not count."""
    AgentGpus(name="node-a", host="gpu-a", link=link)

    async def main() -> None:
        replied_at = now(link)
        link.deliver(f"{P}/gpu-a/readings", payload("gpu-a", ["GPU-1"], limit=300.0, at=replied_at - 0.5))
        sent = clock.now
        waiting = asyncio.create_task(link.reading_after("gpu-a", replied_at, sent, timeout=5.0))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # the reading it has predates the reply
        link.deliver(f"{P}/gpu-a/readings", payload("gpu-a", ["GPU-1"], limit=300.0, at=replied_at + 0.2))
        found = await asyncio.wait_for(waiting, 1.0)
        assert found.at == replied_at + 0.2

    asyncio.run(main())


def test_no_fresh_reading_in_time_is_a_timeout(link):
    AgentGpus(name="node-a", host="gpu-a", link=link)

    async def main() -> None:
        with pytest.raises(DeviceError) as err:
            await link.reading_after("gpu-a", now(link), 0.0, timeout=0.1)
        assert err.value.failure is Failure.TIMEOUT

    asyncio.run(main())


def test_a_retained_reading_is_as_old_as_it_says_not_as_its_delivery(link):
    """The broker hands a new subscriber the last retained reading, however old: one 12 s old
    (within the skew allowed) is already stale for a link that allows 10 s."""
    AgentGpus(name="node-a", host="gpu-a", link=link)
    AgentGpus(name="node-b", host="gpu-b", link=link)
    assert link.deliver(f"{P}/gpu-a/readings", payload("gpu-a", ["GPU-1"], at=now(link) - 12), retained=True) is None
    assert not link.fresh("gpu-a")
    assert link.deliver(f"{P}/gpu-b/readings", payload("gpu-b", ["GPU-2"], at=now(link) - 12)) is None  # live
    assert link.fresh("gpu-b")


def test_a_host_whose_job_runner_failed_reads_as_unknown(link):
    """What runs there is unknown, so its draw is: the node counts at its maximum."""
    gpus = AgentGpus(name="node-a", host="gpu-a", link=link)
    body = json.loads(payload("gpu-a", ["GPU-1"], at=now(link)))
    body["jobs_error"] = "status: exit status 1: docker: permission denied"
    assert link.deliver(f"{P}/gpu-a/readings", json.dumps(body).encode()) is None
    read = asyncio.run(gpus.read_all())
    assert isinstance(read["GPU-1"], DeviceError) and "job runner failed" in read["GPU-1"].detail


def test_the_jobs_of_fresh_hosts_only_with_ids_that_name_their_host(link, clock):
    AgentGpus(name="node-a", host="gpu-a", link=link)
    AgentGpus(name="node-b", host="gpu-b", link=link)
    for host, job in (("gpu-a", "7"), ("gpu-b", "7")):
        body = json.loads(payload(host, [f"GPU-{host}"], at=now(link)))
        body["jobs"] = [{"job_id": job, "name": "train", "state": "running", "gpus": 8}]
        assert link.deliver(f"{P}/{host}/readings", json.dumps(body).encode()) is None
    runner = AgentJobs(link)
    status = asyncio.run(runner.status())
    assert sorted(status) == ["gpu-a/7", "gpu-b/7"] and status["gpu-b/7"].node == "node-b"
    clock.advance(11)  # both stale: their jobs are not reported (their nodes count at their maximum)
    assert asyncio.run(runner.status()) == {}


@pytest.mark.parametrize("job", [
    {"job_id": "a/b", "name": "x", "state": "running"},  # a "/" would let it name another host's job
    {"job_id": "1", "name": "x", "state": "sleeping"},
    {"job_id": "1", "name": "x", "state": "running", "gpus": "8"},
])
def test_a_job_the_wire_does_not_allow_refuses_the_reading(link, job):
    AgentGpus(name="node-a", host="gpu-a", link=link)
    body = json.loads(payload("gpu-a", ["GPU-1"], at=now(link)))
    body["jobs"] = [job]
    assert link.deliver(f"{P}/gpu-a/readings", json.dumps(body).encode()) == "malformed"


def test_moving_a_job_without_a_broker_is_a_job_error(link):
    AgentGpus(name="node-a", host="gpu-a", link=link)
    with pytest.raises(JobError, match="not connected"):
        asyncio.run(AgentJobs(link).suspend("gpu-a/7"))


def test_a_job_move_is_done_only_once_a_reading_taken_after_the_reply_shows_it(link, clock):
    """Until the agent's next reading, the controller's view has the job where it was, and the
    next tick would send the same move again (which the host's runner refuses)."""
    AgentGpus(name="node-a", host="gpu-a", link=link)
    sent: list[Any] = []

    async def publish(host: str, message: Any) -> None:
        sent.append(message)

    link.publish = publish  # type: ignore[method-assign]

    def reading(state: str, at: float) -> bytes:
        body = json.loads(payload("gpu-a", ["GPU-1"], at=at))
        body["jobs"] = [{"job_id": "7", "name": "train", "state": state, "gpus": 1}]
        return json.dumps(body).encode()

    async def main() -> None:
        link.deliver(f"{P}/gpu-a/readings", reading("running", now(link)))
        moving = asyncio.create_task(AgentJobs(link, timeout_seconds=5.0).suspend("gpu-a/7"))
        while not sent:
            await asyncio.sleep(0.01)
        replied_at = now(link)
        ok = {"v": 1, "host": "gpu-a", "id": sent[0].id, "status": "ok", "at": replied_at, "job_id": "7"}
        assert link.deliver(f"{P}/gpu-a/reply", json.dumps(ok).encode()) is None
        link.deliver(f"{P}/gpu-a/readings", reading("running", replied_at - 0.1))  # taken before it moved
        await asyncio.sleep(0.05)
        assert not moving.done()  # the agent said OK; its readings do not show it yet
        clock.advance(0.2)
        link.deliver(f"{P}/gpu-a/readings", reading("suspended", replied_at + 0.2))
        await asyncio.wait_for(moving, 1.0)
        assert link.hosts["gpu-a"].readings.jobs[0].state.value == "suspended"  # type: ignore[union-attr]

    asyncio.run(main())
