"""The commands as an operator runs them: separate processes, a site file, simulators on
loopback in their own process."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "wattshift.daemon.cli"]


@pytest.fixture
def simulators() -> Iterator[list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "wattshift.simulators.serve", "--firmware", "luxos", "--count", "4",
         "--first-address", "127.0.14.1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    hosts = json.loads(proc.stdout.readline())["hosts"]
    try:
        yield hosts
    finally:
        proc.communicate(input="", timeout=30)


def site_file(tmp_path: Path, hosts: list[str], budget_kw: float) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(
        f"name: cli-test\nbudget_kw: {budget_kw}\ntick_seconds: 1\n"
        f"miners:\n  - addresses: {hosts[0]}-{hosts[-1]}\n"  # firmware auto: identified over the wire
        f"drivers: {{call_timeout_seconds: 2}}\nstate_dir: {tmp_path / 'state'}\n"
        "metrics_listen: 127.0.0.1:19465\n"
    )
    return path


def test_plan_prints_every_miner_with_its_target_and_reason(simulators, tmp_path):
    path = site_file(tmp_path, simulators, budget_kw=9)
    out = subprocess.run([*CLI, "plan", "--config", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:5] == ["CLASS", "DEVICE", "CIRCUIT", "NOW", "W"]
    for host in simulators:
        row = next(line for line in lines if line.startswith(f"miner  {host} "))
        assert "marginal $" in row or "no room" in row
    assert "4 controllable miners" in out.stdout or "/4 controllable miners on" in out.stdout
    as_json = subprocess.run([*CLI, "plan", "--config", str(path), "--json"],
                             capture_output=True, text=True, timeout=60)
    devices = json.loads(as_json.stdout)["devices"]
    assert {d["device"] for d in devices} == set(simulators)
    assert sum(d["target_watts"] for d in devices) <= 9_000
    assert all(d["now_watts"] == 3500 for d in devices)  # plan sent nothing


def test_run_acts_journals_and_stops_cleanly_on_sigterm(simulators, tmp_path):
    path = site_file(tmp_path, simulators, budget_kw=9)
    daemon = subprocess.Popen([*CLI, "run", "--config", str(path)], stderr=subprocess.PIPE, text=True)

    def journaled() -> list[dict]:
        journal = subprocess.run(
            [*CLI, "journal", "--state-dir", str(tmp_path / "state"), "--json", "--limit", "1000"],
            capture_output=True, text=True, timeout=30,
        )
        return [json.loads(line) for line in journal.stdout.splitlines()]

    try:
        # Until the daemon has acted (a loaded machine may take a while to start it), then stop it.
        deadline = time.monotonic() + 60
        while not any(e["kind"] == "result" for e in journaled()) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, err
    entries = journaled()
    kinds = [e["kind"] for e in entries]
    assert kinds[0] == "event" and entries[0]["summary"].startswith("started")
    assert entries[-1]["summary"].startswith("stopped")
    assert "decision" in kinds and "command" in kinds and "result" in kinds
    results = [e for e in entries if e["kind"] == "result"]
    assert all(e["data"]["ok"] for e in results), results


def test_validate_rejects_a_bad_file_with_exit_2(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text("name: Bad Name\nbudget_kw: 0\n")
    out = subprocess.run([*CLI, "validate", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert f"{path}:1: name: String should match pattern" in out.stderr
    assert f"{path}:2: budget_kw: Input should be greater than 0 (got 0)" in out.stderr


def test_plan_follows_the_site_policy_file_and_refuses_a_bad_one(simulators, tmp_path):
    path = site_file(tmp_path, simulators, budget_kw=9)
    (tmp_path / "policy.yaml").write_text("policy: strike-price\noptions:\n  strike_usd_per_mwh: 95\n")
    path.write_text(path.read_text() + "policy_file: policy.yaml\n")
    out = subprocess.run([*CLI, "plan", "--config", str(path), "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    devices = json.loads(out.stdout)["devices"]
    assert sum(d["target_watts"] for d in devices) <= 9_000
    assert any("strike" in d["reason"] for d in devices), devices[0]["reason"]

    (tmp_path / "policy.yaml").write_text("policy: strike-price\noptions:\n  strike_usd_per_mwh: lots\n")
    bad = subprocess.run([*CLI, "plan", "--config", str(path)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "policy.yaml:3: options.strike_usd_per_mwh" in bad.stderr, bad.stderr


def test_run_speaks_mqtt_when_the_site_file_has_an_mqtt_section(simulators, tmp_path):
    import aiomqtt
    from mosquitto import Broker

    async def talk(broker: Broker) -> tuple[bytes, dict]:
        async with aiomqtt.Client("127.0.21.40", broker.port, protocol=aiomqtt.ProtocolVersion.V5) as client:
            await client.subscribe("wattshift/cli-test/#")
            online = b""
            async with asyncio.timeout(20):
                async for message in client.messages:
                    if message.topic.matches("wattshift/cli-test/availability") and message.payload == b"online":
                        online = message.payload
                        break
                command = {"command": "budget", "id": "cut-1", "limit_kw": 8, "duration_seconds": 600}
                await client.publish("wattshift/cli-test/cmd", json.dumps(command).encode())
                async for message in client.messages:
                    if message.topic.matches("wattshift/cli-test/reply/cut-1"):
                        return online, json.loads(message.payload)
        raise AssertionError("no reply")

    with Broker(tmp_path / "broker", "127.0.21.40") as broker:
        path = site_file(tmp_path, simulators, budget_kw=9)
        path.write_text(path.read_text() + f"mqtt: {{host: 127.0.21.40, port: {broker.port}}}\n")
        daemon = subprocess.Popen([*CLI, "run", "--config", str(path)], stderr=subprocess.PIPE, text=True)
        try:
            online, reply = asyncio.run(talk(broker))
        finally:
            daemon.send_signal(signal.SIGTERM)
            _, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, err
    assert online == b"online"
    assert reply["status"] == "accepted", reply
