"""The agent of a GPU host, without a broker: its file, its command gate, and the agent itself
over the real NVML driver on the simulated library (the integration tests add Mosquitto)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from simulated_gpus import ManualClock

from wattshift.daemon.agent.commands import CommandGate, Refusal
from wattshift.daemon.agent.service import GpuAgent
from wattshift.daemon.config.agent import AgentConfig, load_agent
from wattshift.daemon.config.yamlfile import FileInvalid
from wattshift.drivers.agent_wire import MAX_COMMAND_BYTES, CapCommand, Heartbeat
from wattshift.drivers.command_runner import CommandRunner
from wattshift.drivers.nvml_gpu import NvmlGpus
from wattshift.simulators.nvml_lib import SimulatedGpu, SimulatedNvmlLib, simulated_nvml

WALL = 1_764_585_600.0


def command(kind: str = "cap", **fields: Any) -> bytes:
    body: dict[str, Any] = {"v": 1, "command": kind, "id": "c1", "host": "gpu-a", "sent_at": WALL}
    if kind == "cap":
        body |= {"uuid": "GPU-1", "watts": 300.0}
    return json.dumps(body | fields).encode()


# --- the gate -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("payload", "retained", "why"), [
    (command(), True, "retained"),
    (command(host="gpu-b"), False, "host: 'gpu-b' is not this agent"),
    (command(sent_at=WALL - 61), False, "61 s old"),
    (command(sent_at=WALL + 61), False, "ahead of this host's clock"),
    (command(watts="300"), False, "watts"),  # strict: no string for a number
    (command(watts=True), False, "watts"),
    (command(watts=float("inf")), False, "watts"),
    (command(watts=-1), False, "watts"),
    (command(kind="reboot"), False, "not a command"),
    (command(extra="x"), False, "extra"),
    (command(id="a/b"), False, "id"),
    (command(uuid="x" * 200), False, "uuid"),
    (b"[" * 5000, False, f"over the {MAX_COMMAND_BYTES} allowed"),
    (b"\xff", False, "not a command"),
])
def test_the_gate_refuses_hostile_commands_with_a_reason(payload, retained, why):
    admitted = CommandGate("gpu-a", max_age_seconds=60).admit(payload, retained=retained, now=WALL)
    assert isinstance(admitted, Refusal) and why in admitted.reason, admitted


def test_the_gate_admits_a_cap_and_a_heartbeat_once_each():
    gate = CommandGate("gpu-a", max_age_seconds=60)
    assert isinstance(gate.admit(command(), retained=False, now=WALL + 5), CapCommand)
    replay = gate.admit(command(), retained=False, now=WALL + 6)
    assert isinstance(replay, Refusal) and "replay" in replay.reason
    assert isinstance(gate.admit(command("heartbeat", id="h1"), retained=False, now=WALL), Heartbeat)


# --- the file -------------------------------------------------------------------------------------


def test_the_agent_file_with_its_own_secrets_file(tmp_path):
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("broker: {username: agent-gpu-a, password: s3cret}\n")
    secrets.chmod(0o600)
    path = tmp_path / "agent.yaml"
    path.write_text("host: gpu-a\nmqtt: {host: 10.0.0.5, credentials: broker, tls: {ca_file: /etc/ca.pem}}\n"
                    "secrets_file: secrets.yaml\nsafe_cap_watts: 300\n")
    config = load_agent(path, environ={})
    login = config.login()
    assert login is not None and login.username == "agent-gpu-a" and login.password.get_secret_value() == "s3cret"
    assert config.mqtt.broker_port() == 8883 and config.client_id == "wattshift-agent-gpu-a"
    assert "s3cret" not in repr(config)


@pytest.mark.parametrize(("text", "where"), [
    ("host: gpu-a\nmqtt: {host: b}\nsafe_cap: 300\n", "safe_cap"),  # a typo is an error, not ignored
    ("host: GPU A\nmqtt: {host: b}\n", "host"),
    ("host: gpu-a\nmqtt: {host: b, credentials: broker}\n", "credentials"),  # not in any secrets file
    ("host: gpu-a\nmqtt: {host: b}\ncredentials: {broker: {password: x}}\n", "credentials"),
    ("host: gpu-a\nmqtt: {host: b, prefix: 'a/+/b'}\n", "prefix"),
    ("host: gpu-a\nmqtt: {host: b}\ncontroller_silence_seconds: 0\n", "controller_silence_seconds"),
    ("host: gpu-a\nmqtt: {host: b}\ngpus: '0-7'\n", "gpus"),
])
def test_a_bad_agent_file_is_refused_naming_the_field(tmp_path, text, where):
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    with pytest.raises(FileInvalid) as err:
        load_agent(path, environ={})
    assert any(where in str(p) for p in err.value.problems), err.value.problems


# --- the agent over the simulated NVML library ------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def lib(clock: ManualClock) -> Iterator[SimulatedNvmlLib]:
    with simulated_nvml([SimulatedGpu("H100-SXM", clock=clock) for _ in range(2)], seed="gpu-a") as lib:
        yield lib


def no_broker(_will: Any) -> Any:
    raise AssertionError("these tests never connect")


@pytest.fixture
async def agent(lib: SimulatedNvmlLib, clock: ManualClock) -> AsyncIterator[GpuAgent]:
    config = AgentConfig.model_validate({"host": "gpu-a", "mqtt": {"host": "127.0.0.1"},
                                         "controller_silence_seconds": 60, "safe_cap_watts": 300})
    cards = NvmlGpus(call_timeout_seconds=5.0, clock=clock)
    agent = GpuAgent(config, cards, no_broker, clock=clock, wall=lambda: WALL + clock.now)
    await cards.start()
    await agent.read_now()
    yield agent
    await cards.close()


def cap(agent: GpuAgent, uuid: str, watts: Any, request: str) -> bytes:
    return command(id=request, uuid=uuid, watts=watts, sent_at=agent._wall())


async def test_a_cap_is_set_read_back_and_answered_with_what_the_card_holds(agent, lib):
    uuid = lib.gpus[0].uuid
    reply = await agent.on_command(cap(agent, uuid, 350.0, "c1"))
    assert reply is not None and reply.status == "ok" and reply.enforced_watts == 350.0 and reply.id == "c1"
    assert lib.gpus[0].limit_watts == 350.0 and lib.gpus[1].limit_watts == 700.0
    readings = await agent.read_now()
    assert readings.at >= reply.at  # taken after the reply: it can confirm the cap
    assert {c.uuid: c.limit_watts for c in readings.gpus}[uuid] == 350.0


async def test_hostile_commands_change_nothing(agent, lib):
    uuid = lib.gpus[0].uuid
    for payload, retained in ((cap(agent, uuid, 5000.0, "c2"), False),  # outside the card's range
                              (cap(agent, "GPU-not-here", 300.0, "c3"), False),
                              (cap(agent, uuid, 300.0, "c4"), True),  # retained
                              (cap(agent, uuid, "300", "c5"), False)):
        reply = await agent.on_command(payload, retained=retained)
        assert reply is not None and reply.status in ("refused", "failed"), reply
    assert [g.limit_watts for g in lib.gpus] == [700.0, 700.0]
    assert agent.obeyed == 2 and agent.refused == 2  # past the gate: out of range (NVML driver), unknown card


async def test_a_card_whose_set_is_ignored_is_answered_failed(agent, lib):
    lib.gpus[1].faults.ignore_set = True  # NVML says OK and keeps 700 W: the driver's read-back sees it
    reply = await agent.on_command(cap(agent, lib.gpus[1].uuid, 300.0, "c6"))
    assert reply is not None and reply.status == "failed" and reply.failure == "ignored"


async def test_the_safe_cap_only_ever_cuts(agent, lib, clock):
    low = lib.gpus[1].uuid
    await agent.on_command(cap(agent, low, 250.0, "c7"))  # already under the safe cap of 300 W
    await agent.read_now()
    moved = await agent.apply_safe_cap(61)
    assert moved == {lib.gpus[0].uuid: 300.0}
    assert [g.limit_watts for g in lib.gpus] == [300.0, 250.0]
    assert (await agent.read_now()).safe_cap
    # The controller speaks again: the flag clears, the caps stay until it sets them.
    await agent.on_command(command("heartbeat", id="h2", sent_at=agent._wall()))
    readings = await agent.read_now()
    assert not readings.safe_cap and [g.limit_watts for g in lib.gpus] == [300.0, 250.0]


def test_the_safe_cap_defaults_to_each_cards_lowest_limit(tmp_path: Path):
    config = AgentConfig.model_validate({"host": "gpu-a", "mqtt": {"host": "b"}})
    assert config.safe_cap_watts is None and config.controller_silence_seconds == 120


def test_the_shipped_agent_example_is_valid(tmp_path):
    example = Path(__file__).parents[2] / "deploy" / "agent.example.yaml"
    secrets = tmp_path / "secrets"
    secrets.write_text("broker: {username: gpu-01, password: example}\n")
    secrets.chmod(0o600)
    text = example.read_text().replace("/run/credentials/wattshift-agent.service/secrets", str(secrets))
    copy = tmp_path / "agent.yaml"
    copy.write_text(text)
    config = load_agent(copy, environ={})
    assert config.host == "gpu-01" and config.safe_cap_watts == 300 and config.login() is not None


async def test_without_a_job_runner_a_job_command_is_refused(agent):
    payload = command("job", id="j1", action="suspend", job_id="7", sent_at=agent._wall())
    reply = await agent.on_command(payload)
    assert reply is not None and reply.status == "refused" and "runs no jobs" in (reply.detail or "")
    assert (await agent.read_now()).jobs is None


async def test_a_job_runner_that_fails_is_reported_not_hidden(agent):
    failing = {a: "echo 'docker: permission denied' >&2; exit 1"
               for a in ("submit", "start", "suspend", "resume", "requeue", "stop", "status")}
    agent.runner = CommandRunner(failing, timeout_seconds=5)
    readings = await agent.read_now()
    assert readings.jobs is None and readings.jobs_error and "permission denied" in readings.jobs_error
    reply = await agent.on_command(command("job", id="j2", action="suspend", job_id="7", sent_at=agent._wall()))
    assert reply is not None and reply.status == "failed" and "permission denied" in (reply.detail or "")
