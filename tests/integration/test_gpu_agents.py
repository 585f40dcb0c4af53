"""GPU hosts through their agents: ``wattshift agent`` in its own process over the simulated NVML
library (the real nvidia-ml-py binding runs under it), a real Mosquitto between it and the
controller, and the controller in this process, as the site would run them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from gpu_agents import PREFIX, AgentProcess, agent_file, agents_acl, host_jobs, link_for
from mosquitto import Broker, make_tls
from pydantic import SecretStr

from wattshift.daemon.config.mqtt import Login, TlsConfig
from wattshift.daemon.config.site import SiteConfig
from wattshift.daemon.mqtt.client import admits_anonymous, make_client
from wattshift.daemon.runtime.app import open_daemon
from wattshift.drivers.agent_gpu import AgentGpus, AgentJobs
from wattshift.drivers.agent_link import AgentLink
from wattshift.drivers.base import DeviceError
from wattshift.drivers.jobs import JobError, JobSpec, JobStatus
from wattshift.model.budget import BudgetEvent, BudgetSchedule
from wattshift.model.gpu import GpuReading
from wattshift.model.jobs import JobState
from wattshift.model.miner import Failure
from wattshift.simulators.jobs import SimulatedJobRunner
from wattshift.simulators.site import MinerBatch, SimulatedSite

HOST = "127.0.42.1"


@pytest.fixture
def broker(tmp_path):
    with Broker(tmp_path / "broker", HOST) as running:
        yield running


@pytest.fixture
def agents():
    started: list[AgentProcess] = []

    def start(tmp_path: Path, broker: Broker, host: str, **options: Any) -> AgentProcess:
        load = options.pop("load", 0.9)
        agent = AgentProcess(host, agent_file(tmp_path / host, broker, host, **options), load=load).start()
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.kill()


async def until(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout:g} s")


@contextlib.asynccontextmanager
async def node_through(link: AgentLink, host: str, **options: Any) -> AsyncIterator[AgentGpus]:
    gpus = AgentGpus(options.pop("gpus", "all"), name=f"node-{host}", host=host, link=link,
                     call_timeout_seconds=options.pop("timeout", 10.0))
    await gpus.start()
    try:
        yield gpus
    finally:
        await gpus.close()


async def cards(gpus: AgentGpus) -> dict[str, GpuReading]:
    read = await gpus.read_all()
    assert all(isinstance(r, GpuReading) for r in read.values()), read
    return {u: r for u, r in read.items() if isinstance(r, GpuReading)}


async def test_read_cap_and_read_back_through_the_agent(tmp_path, broker, agents):
    agent = agents(tmp_path, broker, "gpu-a")
    link = link_for(broker)
    async with node_through(link, "gpu-a") as gpus:
        await until(lambda: link.fresh("gpu-a"), what="first reading")
        before = await cards(gpus)
        assert sorted(before) == sorted(agent.uuids)
        first = before[agent.uuids[0]]
        assert first.limit_watts == 700.0 and first.limits is not None and first.limits.min_watts == 200.0
        assert first.model and "H100" in first.model and first.processes == (4242,)
        assert first.energy_joules is not None and first.temperature_c is not None

        held = await gpus.set_power_limit(agent.uuids[0], 350.0)
        assert held == 350.0
        after = await cards(gpus)
        assert after[agent.uuids[0]].limit_watts == 350.0  # the agent's next reading shows it
        assert after[agent.uuids[1]].limit_watts == 700.0  # and only that card moved

        with pytest.raises(DeviceError) as refused:  # outside the card's range: the agent refuses
            await gpus.set_power_limit(agent.uuids[0], 5000.0)
        assert refused.value.failure is Failure.REFUSED
        assert (await cards(gpus))[agent.uuids[0]].limit_watts == 350.0


async def test_a_killed_agent_goes_offline_and_its_cards_read_as_lost(tmp_path, broker, agents):
    agent = agents(tmp_path, broker, "gpu-a")
    link = link_for(broker, stale_after_seconds=60.0)  # only the will can tell, this soon
    async with node_through(link, "gpu-a") as gpus:
        await until(lambda: link.fresh("gpu-a"), what="first reading")
        agent.signal(signal.SIGKILL)
        await until(lambda: link.hosts["gpu-a"].online is False, what="the last will")
        read = await gpus.read_all()
        assert sorted(read) == sorted(agent.uuids)
        assert all(isinstance(r, DeviceError) and r.failure is Failure.NO_ANSWER for r in read.values())
        assert "offline" in next(iter(read.values())).detail  # type: ignore[union-attr]
        with pytest.raises(DeviceError):
            await gpus.set_power_limit(agent.uuids[0], 300.0)


async def test_a_stopped_agent_goes_stale_and_comes_back(tmp_path, broker, agents):
    """SIGSTOP: the connection stays open (no will), the readings stop: only their age tells."""
    agent = agents(tmp_path, broker, "gpu-a")
    link = link_for(broker, stale_after_seconds=2.0)
    async with node_through(link, "gpu-a") as gpus:
        await until(lambda: link.fresh("gpu-a"), what="first reading")
        agent.signal(signal.SIGSTOP)
        await until(lambda: not link.fresh("gpu-a"), timeout=10, what="stale")
        read = await gpus.read_all()
        assert all(isinstance(r, DeviceError) and r.failure is Failure.NO_ANSWER for r in read.values())
        assert link.hosts["gpu-a"].online is not False  # it never said goodbye
        agent.signal(signal.SIGCONT)
        await until(lambda: link.fresh("gpu-a"), what="fresh again")
        assert len(await cards(gpus)) == 2


async def test_both_ends_come_back_after_the_broker_restarts(tmp_path, broker, agents):
    agent = agents(tmp_path, broker, "gpu-a")
    link = link_for(broker, stale_after_seconds=2.0)
    async with node_through(link, "gpu-a") as gpus:
        await until(lambda: link.fresh("gpu-a"), what="first reading")
        broker.stop()  # persistence off: the retained readings die with it
        await until(lambda: not link.fresh("gpu-a"), timeout=10, what="stale while the broker is away")
        broker.start()
        await until(lambda: link.connections >= 2 and link.fresh("gpu-a"), timeout=30, what="back")
        assert await gpus.set_power_limit(agent.uuids[1], 400.0) == 400.0
        assert (await cards(gpus))[agent.uuids[1]].limit_watts == 400.0


async def test_readings_from_a_clock_far_from_ours_are_refused(tmp_path, broker, agents):
    agents(tmp_path, broker, "gpu-a")
    # The controller's clock 2 minutes ahead of the agent's (the agent's NTP is broken).
    link = link_for(broker, max_skew_seconds=30.0, wall=lambda: time.time() + 120)
    async with node_through(link, "gpu-a", timeout=2.0) as gpus:
        await until(lambda: link.hosts["gpu-a"].refused["clock"] >= 2, what="refusals")
        assert not link.fresh("gpu-a")
        offset = link.hosts["gpu-a"].clock_offset_seconds
        assert offset is not None and -125 < offset < -115
        read = await gpus.read_all()
        (only,) = read.values()  # no card was ever accepted: the node is one unknown
        assert isinstance(only, DeviceError) and only.failure is Failure.NO_ANSWER
        assert "clock" in only.detail


async def test_the_agent_refuses_a_command_sent_by_a_clock_far_from_its_own(tmp_path, broker, agents):
    agent = agents(tmp_path, broker, "gpu-a")
    link = link_for(broker, max_skew_seconds=300.0, wall=lambda: time.time() + 120)
    async with node_through(link, "gpu-a") as gpus:
        await until(lambda: link.fresh("gpu-a"), what="first reading")
        with pytest.raises(DeviceError) as refused:
            await gpus.set_power_limit(agent.uuids[0], 300.0)
        assert refused.value.failure is Failure.REFUSED and "ahead of this host's clock" in refused.value.detail
        assert (await cards(gpus))[agent.uuids[0]].limit_watts == 700.0


@contextlib.asynccontextmanager
async def fake_agent(broker: Broker, host: str) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(broker.host, broker.port, identifier=f"fake-{host}",
                              protocol=aiomqtt.ProtocolVersion.V5) as client:
        yield client


def readings(host: str, uuids: list[str], limit: float, *, at: float | None = None) -> bytes:
    cards = [{"uuid": u, "index": i, "model": "NVIDIA H100 80GB HBM3", "watts": limit * 0.9, "limit_watts": limit,
              "enforced_limit_watts": limit, "utilisation_pct": 90.0,
              "limits": {"min_watts": 200.0, "max_watts": 700.0, "default_watts": 700.0}}
             for i, u in enumerate(uuids)]
    return json.dumps({"v": 1, "host": host, "at": at or time.time(), "seq": 1, "gpus": cards}).encode()


async def test_an_agent_that_says_ok_and_keeps_its_old_cap_is_not_believed(tmp_path, broker):
    """A liar (a buggy or hostile agent): replies OK to every cap, keeps reporting 700 W."""
    uuids = ["GPU-liar-0", "GPU-liar-1"]
    link = link_for(broker)
    async with fake_agent(broker, "gpu-l") as liar:
        await liar.subscribe(f"{PREFIX}/gpu-l/cmd")

        async def lie() -> None:
            async for message in liar.messages:
                command = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                if command["command"] != "cap":
                    continue
                reply = {"v": 1, "host": "gpu-l", "id": command["id"], "status": "ok", "at": time.time(),
                         "uuid": command["uuid"], "held_watts": command["watts"], "enforced_watts": command["watts"]}
                await liar.publish(f"{PREFIX}/gpu-l/reply", json.dumps(reply).encode())
                await asyncio.sleep(0.05)
                await liar.publish(f"{PREFIX}/gpu-l/readings", readings("gpu-l", uuids, 700.0), retain=True)

        await liar.publish(f"{PREFIX}/gpu-l/readings", readings("gpu-l", uuids, 700.0), retain=True)
        liar_task = asyncio.create_task(lie())
        try:
            async with node_through(link, "gpu-l", timeout=3.0) as gpus:
                await until(lambda: link.fresh("gpu-l"), what="first reading")
                with pytest.raises(DeviceError) as ignored:
                    await gpus.set_power_limit(uuids[0], 300.0)
                assert ignored.value.failure is Failure.IGNORED
                assert "shows 700 W" in ignored.value.detail
        finally:
            liar_task.cancel()


async def test_a_message_on_one_hosts_topic_claiming_another_host_is_refused(tmp_path, broker, agents):
    real = agents(tmp_path, broker, "gpu-b")
    link = link_for(broker)
    async with node_through(link, "gpu-a", timeout=1.0) as node_a, node_through(link, "gpu-b") as node_b:
        await until(lambda: link.fresh("gpu-b"), what="gpu-b's first reading")
        async with fake_agent(broker, "gpu-a") as spoofer:
            # On gpu-a's topic, saying it is gpu-b: refused, whoever sent it.
            await spoofer.publish(f"{PREFIX}/gpu-a/readings", readings("gpu-b", ["GPU-x-0"], 200.0))
            await until(lambda: link.hosts["gpu-a"].refused["host"] == 1, what="host refusal")
            # On gpu-a's topic, as gpu-a, but reporting gpu-b's cards (low, to make room): refused.
            await spoofer.publish(f"{PREFIX}/gpu-a/readings", readings("gpu-a", real.uuids, 200.0))
            await until(lambda: link.hosts["gpu-a"].refused["uuid"] == 1, what="uuid refusal")
            # A reply for gpu-b, sent on gpu-a's topic: refused too.
            await spoofer.publish(f"{PREFIX}/gpu-a/reply", json.dumps(
                {"v": 1, "host": "gpu-b", "id": "x1", "status": "ok", "at": time.time()}).encode())
            await until(lambda: link.hosts["gpu-a"].refused["host"] == 2, what="reply refusal")
        assert not link.fresh("gpu-a")
        assert all(isinstance(r, DeviceError) for r in (await node_a.read_all()).values())
        assert {r.limit_watts for r in (await cards(node_b)).values()} == {700.0}  # gpu-b untouched


async def test_a_silent_controller_moves_the_cards_to_the_safe_cap_and_never_up(tmp_path, broker, agents):
    agent = agents(tmp_path, broker, "gpu-a", controller_silence_seconds=3, safe_cap_watts=300.0)
    link = link_for(broker, heartbeat_seconds=0.2)
    async with node_through(link, "gpu-a") as gpus:
        await until(lambda: link.fresh("gpu-a"), what="first reading")
        assert await gpus.set_power_limit(agent.uuids[1], 250.0) == 250.0  # already under the safe cap
        for _ in range(40):  # 4 s of heartbeats: the controller is alive, nothing moves
            await gpus.read_all()
            await asyncio.sleep(0.1)
        limits = {u: r.limit_watts for u, r in (await cards(gpus)).items()}
        assert limits == {agent.uuids[0]: 700.0, agent.uuids[1]: 250.0}
        state = link.hosts["gpu-a"]
        assert state.readings is not None and not state.readings.safe_cap
    # The controller stops reading (no heartbeats): the agent waits its silence out, then cuts.
    watcher = link_for(broker, identifier="watcher", heartbeat_seconds=3600)
    async with node_through(watcher, "gpu-a") as quiet:
        got = await until(lambda: watcher.hosts["gpu-a"].readings is not None
                          and watcher.hosts["gpu-a"].readings.safe_cap and watcher.hosts["gpu-a"].readings,
                          timeout=20, what="safe cap")
        assert {c.uuid: c.limit_watts for c in got.gpus} == {agent.uuids[0]: 300.0, agent.uuids[1]: 250.0}
        assert isinstance(quiet, AgentGpus)


# --- the controller's loop over an agent node ---------------------------------------------------

BATCHES = [MinerBatch("luxos", 2, "site", "Antminer S21")]


@contextlib.asynccontextmanager
async def site_with_agent_node(tmp_path: Path, broker: Broker, first_address: str, *, budget_kw: float,
                               stale_after: float = 2.0, runner: Any = None, hosts: tuple[str, ...] = ("gpu-a",),
                               **extra: Any) -> AsyncIterator[tuple[SimulatedSite, Any]]:
    sim = SimulatedSite(BATCHES, first_address=first_address, physics_options={"ramp_watts_per_s": 4000.0})
    async with sim:
        site = SiteConfig.model_validate(sim.site_file(
            name="test", budget_kw=budget_kw, state_dir=str(tmp_path / "state"),
            prices={"power_usd_per_mwh": {"source": "fixed", "value": 40.0}},
            policy={"name": "merit-order", "options": {"min_dwell_seconds": 0}},
            drivers={"call_timeout_seconds": 2.0, "confirm_timeout_seconds": 4.0},
            gpu_nodes=[{"name": f"gpu-node-{h[-1]}", "driver": "agent", "host": h, "gpu_count": 2,
                        "host_idle_kw": 0.5, "host_max_kw": 1.0} for h in hosts],
            mqtt={"host": broker.host, "port": broker.port, "reconnect_min_seconds": 0.1,
                  "reconnect_max_seconds": 0.5,
                  "agents": {"stale_after_seconds": stale_after, "heartbeat_seconds": 0.5}},
            **extra,
        ))
        budget = BudgetSchedule(site.budget_watts, lead_seconds=30)
        async with open_daemon(site, base_dir=tmp_path, budget=budget, serve_metrics=False, runner=runner) as daemon:
            yield sim, daemon


def scrape(daemon: Any) -> dict[str, float]:
    from prometheus_client import generate_latest

    values = {}
    for line in generate_latest(daemon.metrics.registry).decode().splitlines():
        if line.startswith("wattshift_agent_"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def test_a_killed_agent_counts_its_node_at_its_maximum_and_the_site_stays_under(tmp_path, broker, agents):
    # 2 S21s at 3.5 kW; the node: 1 kW host and 2 cards of 200-700 W, 2.4 kW at full caps. Its
    # light job draws ~1.2 kW: 8.2 kW fits 8.5 kW, but not with the node at its maximum.
    agent = agents(tmp_path, broker, "gpu-a", load=0.2)
    async with site_with_agent_node(tmp_path, broker, "127.0.42.11", budget_kw=8.5) as (sim, daemon):
        controller = daemon.controller
        await until(lambda: daemon.gpus._drivers["gpu-node-a"]._link.fresh("gpu-a"), what="first reading")
        report = await controller.run_once()
        node = report.snapshot.load("gpu-node-a")
        assert node.failure is None and len(node.readings) == 2
        assert node.worst_case_watts < node.max_watts
        assert scrape(daemon)['wattshift_agent_up{host="gpu-a",node="gpu-node-a"}'] == 1.0

        agent.signal(signal.SIGKILL)
        await until(lambda: not daemon.gpus._drivers["gpu-node-a"]._link.fresh("gpu-a"), what="offline")
        for _ in range(4):
            report = await controller.run_once()
            await asyncio.sleep(0.5)
        node = report.snapshot.load("gpu-node-a")
        assert node.failure is Failure.NO_ANSWER
        assert node.worst_case_watts == node.max_watts == 1000 + 2 * 700
        worst = sum(d.worst_case_watts for d in report.snapshot.loads)
        assert worst <= report.snapshot.budget_watts, report.allocation.summary
        # The miners really gave the room up: their true draw plus the node's most fits.
        await until(lambda: sim.true_watts() + node.max_watts <= 8500, timeout=10, what="miners shed")
        assert scrape(daemon)['wattshift_agent_up{host="gpu-a",node="gpu-node-a"}'] == 0.0


async def test_a_shed_the_agent_does_not_confirm_keeps_the_node_at_its_maximum(tmp_path, broker):
    """The lying agent again, now under the loop: its node must be shed (the budget drops), it says
    OK, its readings keep 700 W: the shed is not confirmed and the node counts at its maximum."""
    uuids = ["GPU-liar-0", "GPU-liar-1"]
    async with fake_agent(broker, "gpu-a") as liar:
        await liar.subscribe(f"{PREFIX}/gpu-a/cmd")
        caps: list[float] = []

        async def lie() -> None:
            async for message in liar.messages:
                command = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                if command["command"] == "cap":
                    caps.append(command["watts"])
                    reply = {"v": 1, "host": "gpu-a", "id": command["id"], "status": "ok", "at": time.time(),
                             "uuid": command["uuid"], "held_watts": command["watts"]}
                    await liar.publish(f"{PREFIX}/gpu-a/reply", json.dumps(reply).encode())

        async def report_forever() -> None:
            while True:
                await liar.publish(f"{PREFIX}/gpu-a/readings", readings("gpu-a", uuids, 700.0), retain=True)
                await asyncio.sleep(0.3)

        tasks = [asyncio.create_task(lie()), asyncio.create_task(report_forever())]
        # A training job on the node, worth more than mining: under a cut the miners go first,
        # then the node's caps (DESIGN.md: miners, then caps, then jobs).
        runner = SimulatedJobRunner({"gpu-node-a": 2})
        runner.submit_now(JobSpec("train-llm", gpus=2, node="gpu-node-a"))
        jobs = {"classes": [{"match": "train-*", "tier": "suspendable", "rate_usd_per_gpu_hour": 2.35}]}
        try:
            async with site_with_agent_node(tmp_path, broker, "127.0.42.21", budget_kw=10.0, runner=runner,
                                            jobs=jobs) as (_sim, daemon):
                controller = daemon.controller
                await until(lambda: daemon.gpus._drivers["gpu-node-a"]._link.fresh("gpu-a"), what="first reading")
                report = await controller.run_once()
                node = report.snapshot.load("gpu-node-a")
                assert node.failure is None and node.reads_on
                # A cut to 2 kW: room for the node (1 kW host + 2 cards) only at caps under 500 W.
                controller.budget.add(BudgetEvent("cut", 2000.0, datetime.now(UTC) - timedelta(seconds=1)))
                results = []
                for _ in range(3):
                    report = await controller.run_once()
                    results += [r for r in report.results if r.step.device_id == "gpu-node-a"]
                assert caps and max(caps) < 500, caps  # the caps went out
                assert any(r.failure is Failure.IGNORED and "shows 700 W" in r.detail for r in results), results
                node = report.snapshot.load("gpu-node-a")
                assert node.failure is Failure.IGNORED  # distrusted after the unconfirmed cap
                assert node.worst_case_watts == node.max_watts == 1000 + 2 * 700
        finally:
            for task in tasks:
                task.cancel()


# --- the per-agent ACL (docs/mqtt.md) on a real Mosquitto -----------------------------------------


async def test_with_the_per_agent_acl_one_agent_cannot_speak_or_listen_for_another(tmp_path, agents):
    users = {"wattshift": "pw-controller", "gpu-a": "pw-a", "gpu-b": "pw-b"}
    acl = agents_acl("wattshift", ["gpu-a", "gpu-b"])
    with Broker(tmp_path / "acl-broker", "127.0.42.2", users=users, acl=acl) as broker:
        real = agents(tmp_path, broker, "gpu-b", login=("gpu-b", "pw-b"))
        link = link_for(broker, username="wattshift", password="pw-controller")
        async with node_through(link, "gpu-a", timeout=1.0), node_through(link, "gpu-b") as node_b:
            await until(lambda: link.fresh("gpu-b"), what="gpu-b's first reading, through the ACL")
            seen: list[bytes] = []
            async with aiomqtt.Client(broker.host, broker.port, identifier="observer", username="wattshift",
                                      password="pw-controller", protocol=aiomqtt.ProtocolVersion.V5) as observer, \
                    aiomqtt.Client(broker.host, broker.port, identifier="stolen-gpu-a", username="gpu-a",
                                   password="pw-a", protocol=aiomqtt.ProtocolVersion.V5) as gpu_a:
                await observer.subscribe(f"{PREFIX}/gpu-b/readings")

                async def observe() -> None:
                    with contextlib.suppress(aiomqtt.MqttError):
                        async for message in observer.messages:
                            seen.append(bytes(message.payload))  # type: ignore[arg-type]

                watching = asyncio.create_task(observe())
                await gpu_a.subscribe(f"{PREFIX}/gpu-b/cmd")  # listening for another host's commands
                # gpu-a's login, publishing as gpu-b on gpu-b's topic (the payload check would pass).
                await gpu_a.publish(f"{PREFIX}/gpu-b/readings", readings("gpu-b", real.uuids, 200.0), qos=1)
                # ... and on its own topic, as itself: that one is allowed.
                await gpu_a.publish(f"{PREFIX}/gpu-a/readings", readings("gpu-a", ["GPU-a-0", "GPU-a-1"], 700.0),
                                    qos=1)
                await until(lambda: link.fresh("gpu-a"), what="gpu-a's own reading")
                assert await node_b.set_power_limit(real.uuids[0], 320.0) == 320.0  # the cap went to gpu-b ...
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        async for message in gpu_a.messages:
                            raise AssertionError(f"gpu-a heard {message.topic}")  # ... and gpu-a never heard it
                watching.cancel()
            # Everything published on gpu-b's topic came from gpu-b: the broker dropped gpu-a's.
            assert seen and all(b'"limit_watts":200.0' not in m and b'"limit_watts": 200.0' not in m for m in seen)
            limits = {r.limit_watts for r in (await cards(node_b)).values()}
            assert limits == {320.0, 700.0}
            assert link.hosts["gpu-b"].refused["uuid"] == 0 and link.hosts["gpu-b"].refused["host"] == 0


async def test_over_tls_with_logins_from_the_agents_own_secrets_file(tmp_path, agents):
    tls = make_tls(tmp_path / "tls", "127.0.42.3")
    users = {"wattshift": "pw-controller", "gpu-a": "pw-a"}
    with Broker(tmp_path / "tls-broker", "127.0.42.3", users=users, tls_files=tls,
                acl=agents_acl("wattshift", ["gpu-a"])) as broker:
        agent = agents(tmp_path, broker, "gpu-a", login=("gpu-a", "pw-a"))

        def client() -> aiomqtt.Client:
            return make_client(broker.host, broker.port, identifier="controller-agents", keepalive=5,
                               tls=TlsConfig(ca_file=tls.ca_file),
                               login=Login(username="wattshift", password=SecretStr("pw-controller")))

        link = AgentLink(client, prefix=PREFIX, stale_after_seconds=3.0)
        async with node_through(link, "gpu-a") as gpus:
            await until(lambda: link.fresh("gpu-a"), what="first reading over TLS")
            assert await gpus.set_power_limit(agent.uuids[0], 410.0) == 410.0
        assert "pw-a" not in agent.output()  # the agent never logs its password


async def test_the_hosts_own_jobs_are_reported_and_moved_through_its_agent(tmp_path, broker, agents):
    jobs = host_jobs(tmp_path / "jobs", {"7": "running - train-llm"})
    agents(tmp_path, broker, "gpu-a", jobs=jobs)
    link = link_for(broker)
    runner = AgentJobs(link)
    async with node_through(link, "gpu-a"):
        await until(lambda: link.fresh("gpu-a"), what="first reading")
        status = await runner.status()
        assert status == {"gpu-a/7": JobStatus("gpu-a/7", "train-llm", JobState.RUNNING, node="node-gpu-a")}
        await runner.suspend("gpu-a/7")
        assert (tmp_path / "jobs" / "job.7").read_text().startswith("suspended")  # the host's runner did it
        await until(lambda: link.hosts["gpu-a"].readings.jobs[0].state is JobState.SUSPENDED,  # type: ignore[union-attr]
                    what="the suspended job in a reading")
        with pytest.raises(JobError, match="is suspended, not pending"):  # the host's runner refuses
            await runner.start("gpu-a/7")
        with pytest.raises(JobError, match="not a job of an agent host"):
            await runner.stop("gpu-z/7")


async def test_a_site_of_silent_agents_starts_without_a_timeout_per_node(tmp_path, broker):
    """The broker hands over retained readings once; nodes whose agent never spoke do not each
    wait out the call timeout (here 30 s for each of 4: two minutes, against the 25 s allowed)."""
    link = link_for(broker)
    nodes = [AgentGpus(name=f"node-{i}", host=f"gpu-{i}", link=link, call_timeout_seconds=30.0) for i in range(4)]
    try:
        async with asyncio.timeout(25):
            for node in nodes:
                assert await node.start() == []
        read = await nodes[0].read_all()
        assert all(isinstance(r, DeviceError) and r.failure is Failure.NO_ANSWER for r in read.values())
    finally:
        for node in nodes:
            await node.close()


async def test_a_stopped_agent_says_offline_exits_cleanly_and_leaves_its_caps(tmp_path, broker, agents):
    agent = agents(tmp_path, broker, "gpu-a")
    link = link_for(broker, stale_after_seconds=60.0)
    async with node_through(link, "gpu-a") as gpus:
        await until(lambda: link.fresh("gpu-a"), what="first reading")
        assert await gpus.set_power_limit(agent.uuids[0], 330.0) == 330.0
        agent.signal(signal.SIGTERM)
        await until(lambda: link.hosts["gpu-a"].online is False, what="offline on a clean stop")
        assert agent.process is not None and agent.process.wait(timeout=20) == 0, agent.output()
        last = link.hosts["gpu-a"].readings
        assert last is not None and {c.uuid: c.limit_watts for c in last.gpus}[agent.uuids[0]] == 330.0
        assert "restor" not in agent.output().lower()  # nothing put back to its default on the way out


def test_a_bad_agent_file_exits_2_and_names_the_problem(tmp_path, capsys):
    from wattshift.daemon.cli.main import main

    path = tmp_path / "agent.yaml"
    path.write_text("host: gpu-a\nmqtt: {host: b}\nsafe_cap_watts: -5\n")
    assert main(["agent", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "safe_cap_watts" in err and "nothing was changed" in err



async def test_two_agent_hosts_take_power_from_the_miners_and_give_it_back(tmp_path, broker, agents):
    """The issue's "done when": GPU nodes on two agent hosts, their jobs on the hosts' own runners,
    under the loop. A cut sheds the miners first, then caps both nodes through their agents,
    each cap confirmed by the agent's next reading; the end of the cut gives the caps back."""
    train = {"classes": [{"match": "train-*", "tier": "suspendable", "rate_usd_per_gpu_hour": 2.35}]}
    for host in ("gpu-a", "gpu-b"):
        agents(tmp_path, broker, host, jobs=host_jobs(tmp_path / f"jobs-{host}", {"1": f"running - train-{host}"}))
    async with site_with_agent_node(tmp_path, broker, "127.0.42.31", budget_kw=12.0, hosts=("gpu-a", "gpu-b"),
                                    jobs=train) as (sim, daemon):
        controller, link = daemon.controller, daemon.gpus._drivers["gpu-node-a"]._link
        await until(lambda: link.fresh("gpu-a") and link.fresh("gpu-b"), what="both agents read")
        report = await controller.run_once()
        nodes = [report.snapshot.load(n) for n in ("gpu-node-a", "gpu-node-b")]
        assert all(n.failure is None and n.reads_on for n in nodes), nodes  # the hosts' jobs, through the agents

        def worst_cases(report: Any) -> list[tuple[str, float]]:
            return [(d.device_id, d.worst_case_watts) for d in report.snapshot.loads]

        async def tick() -> Any:
            """One tick. Whatever it grants must fit the budget with every load at its worst case
            (its last plan is the one planned from the snapshot it reports)."""
            report = await controller.run_once()
            last = report.plans[-1]
            granted = sum(max(0.0, s.worst_after - s.worst_before) for s in last.grants)
            worst = sum(w for _, w in worst_cases(report))
            assert not last.grants or worst + granted <= report.snapshot.budget_watts, (worst_cases(report), last)
            results.extend(report.results)
            return report

        # 4 kW: the miners (worth less) off, and 2 kW per node: caps of at most 500 W per card.
        controller.budget.add(BudgetEvent("cut", 4000.0, datetime.now(UTC) - timedelta(seconds=1)))
        results: list[Any] = []
        for _ in range(4):
            await tick()
        capped = {r.step.device_id: r for r in results if r.step.device_id.startswith("gpu-node") and r.ok}
        assert sorted(capped) == ["gpu-node-a", "gpu-node-b"], results
        for host in ("gpu-a", "gpu-b"):
            state = link.hosts[host]
            assert state.readings is not None and all(c.limit_watts is not None and c.limit_watts <= 500.0
                                                      for c in state.readings.gpus), state.readings
        # Asleep at once, the miners' boards wind down on their ramp, and till they are down they
        # count at what they draw: with the nodes at ~3.8 kW that is over the cut for a moment (the
        # cut began before the loop could shed ahead of it), and no tick may grant anything then.
        # Once the miners are at their sleep draw, the loop's own snapshot is inside the cut,
        # worst case and all.
        deadline = time.monotonic() + 15
        while True:
            down = all(m.true_watts() <= m.spec.sleep_watts for m in sim.miners)  # before the tick reads
            report = await tick()
            if down and sum(w for _, w in worst_cases(report)) <= report.snapshot.budget_watts:
                break
            assert time.monotonic() < deadline, ("the site never came inside the cut", down, worst_cases(report))
            await asyncio.sleep(0.1)

        controller.budget.cancel("cut")
        for _ in range(4):
            report = await tick()
        nodes = [(n.device_id, n.failure, n.is_on) for n in report.snapshot.gpu_nodes]
        for host in ("gpu-a", "gpu-b"):
            cards = link.hosts[host].readings.gpus  # type: ignore[union-attr]
            assert all(c.limit_watts == 700.0 for c in cards), (cards, nodes, results)  # the caps given back


# --- a broker that lets anyone in ---------------------------------------------------------------


async def test_on_a_broker_that_lets_anonymous_clients_in_neither_side_trusts_the_other(tmp_path, agents):
    """Logins on both sides, but the broker also admits clients with none: anyone could publish
    readings that under-report a node, or caps that raise one. The controller counts the node at
    its maximum and the agent refuses every command, each saying why; accepting it in the files
    (allow_anonymous_broker on both sides) brings the node back."""
    users = {"wattshift": "pw-controller", "gpu-a": "pw-a"}
    with Broker(tmp_path / "open-broker", "127.0.42.4", users=users, anonymous=True) as broker:
        agent = agents(tmp_path / "strict", broker, "gpu-a", login=("gpu-a", "pw-a"))
        login = Login(username="wattshift", password=SecretStr("pw-controller"))

        def client() -> aiomqtt.Client:
            return make_client(broker.host, broker.port, identifier="controller-agents", keepalive=5, login=login)

        async def broker_open() -> bool:
            return await admits_anonymous(broker.host, broker.port, identifier="controller-agents", tls=None)

        link = AgentLink(client, prefix=PREFIX, stale_after_seconds=3.0, anonymity_check=broker_open)
        async with node_through(link, "gpu-a", timeout=3.0) as gpus:
            await until(lambda: link.fresh("gpu-a"), what="gpu-a's reading arrives (and is not believed)")
            assert link.untrusted is not None and "allow_anonymous_broker" in link.untrusted
            read = await gpus.read_all()
            assert read and all(isinstance(r, DeviceError) and r.failure is Failure.NO_ANSWER
                                and "anonymous" in r.detail for r in read.values()), read
            with pytest.raises(DeviceError) as refused:
                await gpus.set_power_limit(agent.uuids[0], 300.0)
            assert "anonymous" in refused.value.detail, refused.value
        assert "every command is refused" in agent.output()
        agent.kill()

        trusting = agents(tmp_path / "trusting", broker, "gpu-a", login=("gpu-a", "pw-a"))
        trusting.kill()
        allow = trusting.config.read_text().replace("mqtt:\n", "mqtt:\n  allow_anonymous_broker: true\n")
        trusting.config.write_text(allow)
        trusting.start()
        link = AgentLink(client, prefix=PREFIX, stale_after_seconds=3.0)  # the site file's allow: no check
        async with node_through(link, "gpu-a") as gpus:
            await until(lambda: link.fresh("gpu-a"), what="gpu-a's reading, believed")
            assert await gpus.set_power_limit(trusting.uuids[0], 300.0) == 300.0
