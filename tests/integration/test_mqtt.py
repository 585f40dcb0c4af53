"""The MQTT bridge on a real Mosquitto, driving a simulated site through real pyasic drivers.

Brokers listen on 127.0.21.x (free ports); simulated miners on 127.0.24.x-127.0.25.x."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest
from mosquitto import Broker, make_tls, site_acl
from mqtt_harness import PREFIX, operator, settled, site_with_bridge
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import CollectorRegistry
from simsite import assert_never_over

from wattshift.daemon.config.mqtt import Login
from wattshift.daemon.journal.entries import EntryKind
from wattshift.daemon.mqtt.metrics import MqttCollector
from wattshift.daemon.runtime.policy_reload import PolicyReloader
from wattshift.model.budget import BudgetEvent
from wattshift.policies.overrides import InnerPolicy
from wattshift.simulators.site import MinerBatch

HERE = Path(__file__).resolve().parent


@pytest.fixture
def broker(tmp_path):
    with Broker(tmp_path / "broker", "127.0.21.1") as running:
        yield running


async def journaled(setup, text: str) -> list:
    return [e for e in await setup.daemon.journal.query(kind=EntryKind.EVENT) if text in e.summary]


async def test_state_is_retained_for_a_fresh_subscriber(tmp_path, broker):
    async with site_with_bridge(tmp_path, broker, "127.0.24.1", homeassistant={"enabled": True},
                                with_meter=True) as setup:
        async with operator(broker, "site/meter") as meter_feed:
            await meter_feed.send({"power": {"total": 7.4}}, topic="site/meter")
            async with asyncio.timeout(5):
                while setup.bridge.meter.latest() is None:
                    await asyncio.sleep(0.02)
        report = await setup.controller.run_once()
        await asyncio.sleep(0.5)  # the bridge publishes in its own time
        # A subscriber that arrives afterwards gets the state from the broker's retained copies.
        async with operator(broker, f"{PREFIX}/state/#", f"{PREFIX}/availability", "homeassistant/#") as fresh:
            site = await fresh.wait_for(f"{PREFIX}/state/site")
            miners = [m.host for m in setup.sim.miners]
            for host in miners:
                await fresh.wait_for(f"{PREFIX}/state/device/{host}")
            await fresh.wait_raw(f"{PREFIX}/availability", b"online")
            await fresh.wait_for("homeassistant/sensor/+/headroom/config")
        assert all(m.retain for m in fresh.messages)
        worst = sum(m.worst_case_watts for m in report.snapshot.miners)
        assert site["budget_watts"] == 10_000 and site["worst_case_watts"] == pytest.approx(worst, abs=0.1)
        assert site["mode"] == "auto" and site["devices"] == 2
        assert site["meter"]["watts"] == 7400 and not site["meter"]["stale"]
        devices = {d["device"]: d for d in fresh.replies(f"{PREFIX}/state/device/+")}
        for miner in report.snapshot.miners:
            assert devices[miner.device_id]["measured_watts"] == pytest.approx(miner.measured_watts, abs=0.1)
        assert fresh.replies(f"{PREFIX}/state/circuit/site")[0]["limit_watts"] == 10_000
        assert fresh.replies(f"{PREFIX}/state/class/miner")[0]["devices"] == 2
        discovery = fresh.replies("homeassistant/sensor/+/budget/config")[0]
        assert discovery["state_topic"] == f"{PREFIX}/state/site"
        assert discovery["availability_topic"] == f"{PREFIX}/availability"


async def test_state_is_rate_limited_per_topic_and_the_latest_value_goes_out(tmp_path, broker):
    now = [1000.0]
    async with site_with_bridge(tmp_path, broker, "127.0.24.71", clock=lambda: now[0],
                                publish_min_interval_seconds=60) as setup:
        async with operator(broker, f"{PREFIX}/state/site", f"{PREFIX}/events") as watcher:
            await setup.controller.run_once()
            await settled(setup.bridge, watcher)
            assert [s["budget_watts"] for s in watcher.replies(f"{PREFIX}/state/site")] == [10_000]
            setup.budget.add(BudgetEvent("cut", 6_000, datetime.now(UTC)))
            await setup.controller.run_once()
            await setup.controller.run_once()
            await settled(setup.bridge, watcher)
            assert len(watcher.replies(f"{PREFIX}/state/site")) == 1  # held back: the interval is not over
            now[0] += 61
            await setup.controller.run_once()
            latest = await watcher.wait_for(f"{PREFIX}/state/site", lambda s: s["budget_watts"] == 6_000)
            assert [e["name"] for e in latest["events"]] == ["cut"]
            await settled(setup.bridge, watcher)
            assert len(watcher.replies(f"{PREFIX}/state/site")) == 2


async def test_a_clean_stop_says_offline(tmp_path, broker):
    async with site_with_bridge(tmp_path, broker, "127.0.24.11") as setup:
        async with operator(broker, f"{PREFIX}/availability") as watcher:
            await watcher.wait_raw(f"{PREFIX}/availability", b"online")
            await setup.bridge.aclose()
            await watcher.wait_raw(f"{PREFIX}/availability", b"offline")


def start_mqtt_child(broker: Broker, state_dir: Path) -> subprocess.Popen[bytes]:
    """The daemon in a child process; a plain function, so the fork happens outside the async test."""
    return subprocess.Popen(
        [sys.executable, str(HERE / "mqtt_child.py"), broker.host, str(broker.port), str(state_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(HERE.parent)},
    )


async def test_a_killed_daemon_goes_offline_by_its_last_will(tmp_path, broker):
    child = start_mqtt_child(broker, tmp_path / "child")
    try:
        async with operator(broker, f"{PREFIX}/availability") as watcher:
            await watcher.wait_raw(f"{PREFIX}/availability", b"online", timeout=30)
            child.send_signal(signal.SIGKILL)  # no chance to say goodbye: only the broker can
            child.wait(timeout=10)
            await watcher.wait_raw(f"{PREFIX}/availability", b"offline")
        async with operator(broker, f"{PREFIX}/availability") as late:
            assert (await late.wait_raw(f"{PREFIX}/availability", b"offline")).retain
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=10)
        for stream in (child.stdout, child.stderr):
            if stream:
                stream.close()


async def test_every_command_is_applied_answered_and_journaled(tmp_path, broker):
    live = tmp_path / "live.yaml"
    live.write_text("policy: merit-order\noptions:\n  min_dwell_seconds: 0\n")
    policy_file = tmp_path / "other.yaml"
    policy_file.write_text("policy: merit-order\noptions:\n  min_dwell_seconds: 0\n  step_watts: 200\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("policy: merit-order\noptions:\n  step_watts: -1\n")
    async with site_with_bridge(tmp_path, broker, "127.0.24.21", budget_kw=10) as setup:
        controller = setup.controller
        # What `wattshift run` wires: the policy reloader swaps the policy inside the overrides.
        reloader = PolicyReloader(InnerPolicy(controller), live)
        setup.bridge.handler.policy_switcher = lambda path: reloader.switch_policy(path, reason="mqtt command")
        await controller.run_once()
        device = setup.sim.miners[0].host
        start = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
        async with operator(broker) as op:
            await op.send({"command": "budget", "id": "b1", "limit_kw": 6, "start": start, "duration_seconds": 600,
                           "priority": 3, "name": "dr-event"})
            reply = await op.wait_for(f"{PREFIX}/reply/b1")
            assert reply["status"] == "accepted", reply
            [event] = controller.budget.events()
            assert (event.name, event.limit_watts, event.priority) == ("dr-event", 6000, 3)
            assert event.end - event.start == timedelta(seconds=600)

            await op.send({"command": "restore", "id": "r1", "name": "dr-event"})
            assert (await op.wait_for(f"{PREFIX}/reply/r1"))["status"] == "accepted"
            assert controller.budget.events() == []

            await op.send({"command": "force", "id": "f1", "device": device, "state": "off"})
            assert (await op.wait_for(f"{PREFIX}/reply/f1"))["status"] == "accepted"
            report = await controller.run_once()
            assert report.allocation[device].watts == 0 and "forced off" in report.allocation[device].reason
            await op.send({"command": "force", "id": "f2", "class": "miner", "state": "auto"})
            await op.send({"command": "force", "id": "f3", "device": device, "state": "auto"})
            assert (await op.wait_for(f"{PREFIX}/reply/f3"))["status"] == "accepted"
            assert not setup.overrides

            wrapper, inner = controller.policy, controller.policy.inner
            await op.send({"command": "policy", "id": "p0", "path": "broken.yaml"})
            refused = await op.wait_for(f"{PREFIX}/reply/p0")
            assert refused["status"] == "rejected" and refused["field"] == "path" and "step_watts" in refused["reason"]
            assert reloader.path == live
            # A name inside the policy directory (the folder of the live file) or nothing.
            await op.send({"command": "policy", "id": "p2", "path": "/etc/shadow"})
            refused = await op.wait_for(f"{PREFIX}/reply/p2")
            assert refused["status"] == "rejected" and "an absolute path is not allowed" in refused["reason"]
            assert "root:" not in str(refused) and reloader.path == live
            await op.send({"command": "policy", "id": "p1", "path": "other.yaml"})
            assert (await op.wait_for(f"{PREFIX}/reply/p1"))["status"] == "accepted"
            assert reloader.path == policy_file
            assert controller.policy is wrapper and controller.policy.overrides is setup.overrides
            assert controller.policy.inner is not inner

            await op.send({"command": "pause", "id": "m1", "reason": "electrician on site"})
            assert (await op.wait_for(f"{PREFIX}/reply/m1"))["status"] == "accepted"
            assert controller.paused is True and controller.dry_run is False
            paused = await controller.run_once()
            assert paused.dry_run and paused.results == ()
            await op.send({"command": "resume", "id": "m2"})
            assert (await op.wait_for(f"{PREFIX}/reply/m2"))["status"] == "accepted"
            assert controller.paused is False

            # MQTT 5: the response topic and correlation data of the request win.
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = f"{PREFIX}/reply/console"
            props.CorrelationData = b"corr-42"
            await op.send({"command": "pause"}, properties=props)
            await op.wait_for(f"{PREFIX}/reply/console", lambda body: body["status"] == "accepted")
            answer = op.on(f"{PREFIX}/reply/console")[0]
            assert answer.properties.CorrelationData == b"corr-42"
        for name in ("budget", "restore", "force", "policy", "pause", "resume"):
            assert await journaled(setup, f"mqtt command {name} accepted"), name


async def test_bad_commands_are_refused_with_reasons_and_change_nothing(tmp_path, broker):
    async with site_with_bridge(tmp_path, broker, "127.0.24.31", budget_kw=10) as setup:
        controller = setup.controller
        await controller.run_once()
        policy_before = controller.policy.inner
        bad = [
            (b"{this is not json", "payload"),
            ({"command": "self-destruct", "id": "x1"}, "command"),
            ({"command": "budget", "id": "x2", "limit_kw": -3}, "limit_kw"),
            ({"command": "budget", "id": "x3", "limit_kw": 50}, "limit_kw"),  # above the 10 kW contract
            ({"command": "budget", "id": "x4", "limit_kw": 5, "duration_seconds": 1e9}, "duration_seconds"),
            ({"command": "budget", "id": "x5", "limit_kw": 5, "end": "2020-01-01T00:00:00Z"}, "end"),
            ({"command": "budget", "id": "x6", "limit_kw": 5, "surprise": True}, "surprise"),
            ({"command": "restore", "id": "x7", "name": "never-was"}, "name"),
            ({"command": "force", "id": "x8", "device": "10.9.9.9", "state": "off"}, "device"),
            ({"command": "force", "id": "x9", "class": "gpu", "state": "on"}, "class"),
            ({"command": "force", "id": "x10", "device": setup.sim.miners[0].host, "state": "maybe"}, "state"),
            ({"command": "policy", "id": "x11", "path": "/etc/wattshift/ai-first.yaml"}, "path"),
            ({"command": "pause", "id": "x12", "reason": "x" * 600}, "reason"),
        ]
        async with operator(broker) as op:
            for payload, _ in bad:
                await op.send(payload)
            first = await op.wait_for(f"{PREFIX}/reply")
            assert first["status"] == "rejected" and first["field"] == "payload" and "not JSON" in first["reason"]
            for index, (payload, field) in enumerate(bad[1:], start=1):
                reply = await op.wait_for(f"{PREFIX}/reply/x{index}")
                assert reply["status"] == "rejected", reply
                assert reply["field"] == field, reply
                assert reply["reason"]
                if isinstance(payload, dict) and field in payload:
                    sent = payload[field]
                    # Echoed as sent; a long value only by its first 97 characters.
                    assert reply["value"] == (sent if len(str(sent)) <= 200 else sent[:97] + "...")
            assert "policy switching not available" in op.replies(f"{PREFIX}/reply/x11")[0]["reason"]
        assert controller.budget.events() == []
        assert controller.paused is False
        assert not setup.overrides
        assert controller.policy.inner is policy_before
        assert len(await journaled(setup, "rejected")) == len(bad)


async def test_an_unauthorised_command_is_dropped_by_the_broker(tmp_path):
    users = {"wattshift": "daemon-secret", "ops": "ops-secret", "viewer": "viewer-secret"}
    acl = site_acl(PREFIX, daemon="wattshift", operator="ops", viewer="viewer")
    with Broker(tmp_path / "broker", "127.0.21.2", users=users, acl=acl) as broker:
        login = Login(username="wattshift", password="daemon-secret")
        async with site_with_bridge(tmp_path, broker, "127.0.24.41", login=login) as setup:
            controller = setup.controller
            with pytest.raises(aiomqtt.MqttError):
                async with operator(broker, username="ops", password="wrong"):
                    pass
            async with operator(broker, f"{PREFIX}/#", username="viewer", password="viewer-secret") as viewer:
                await viewer.send({"command": "budget", "id": "v1", "limit_kw": 1})
                await viewer.send({"command": "pause", "id": "v2"})
                # The operator's command goes through the same broker afterwards: once its answer is
                # in, the viewer's (sent earlier, same broker, same daemon) would have been answered too.
                async with operator(broker, username="ops", password="ops-secret") as ops:
                    await ops.send({"command": "budget", "id": "o1", "limit_kw": 8})
                    assert (await ops.wait_for(f"{PREFIX}/reply/o1"))["status"] == "accepted"
                    assert ops.on(f"{PREFIX}/reply/v1") == [] and ops.on(f"{PREFIX}/reply/v2") == []
            assert [e.name for e in controller.budget.events()] == ["mqtt-o1"]
            assert controller.paused is False
            assert setup.bridge.verdicts.total() == 1


# paho leaves the socket of a refused TLS handshake for the garbage collector (upstream
# behaviour); only the deliberately refused client below makes one.
@pytest.mark.filterwarnings("ignore:Exception ignored in.*SSLSocket:pytest.PytestUnraisableExceptionWarning")
async def test_tls_and_password(tmp_path):
    tls = make_tls(tmp_path / "tls", "127.0.21.3")
    with Broker(tmp_path / "broker", "127.0.21.3", users={"wattshift": "s3cret", "ops": "ops"},
                tls_files=tls) as broker:
        async with site_with_bridge(tmp_path, broker, "127.0.24.51",
                                    login=Login(username="wattshift", password="s3cret")) as setup:
            await setup.controller.run_once()
            async with operator(broker, f"{PREFIX}/state/site", username="ops", password="ops") as op:
                site = await op.wait_for(f"{PREFIX}/state/site")
                assert site["site"] == "test"
            assert setup.bridge.connections == 1
        # Without the CA the daemon's own check refuses the broker: no silent plain-text fallback.
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client(broker.host, broker.port, username="ops", password="ops",
                                      tls_params=aiomqtt.TLSParameters()):
                pass


async def test_a_budget_command_brings_the_true_draw_under_it_and_the_broker_may_come_and_go(tmp_path, broker):
    batches = [MinerBatch("luxos", 2, "site", "Antminer S21"), MinerBatch("whatsminer", 2, "site", "Whatsminer M60S")]
    async with site_with_bridge(tmp_path, broker, "127.0.25.1", batches=batches, budget_kw=20,
                                tick_seconds=1.0) as setup:
        controller, sim = setup.controller, setup.sim
        ticks: list[float] = []
        stop = asyncio.Event()
        loop = asyncio.create_task(controller.run(stop))
        try:
            while controller.last_report is None:
                await asyncio.sleep(0.05)
            assert sim.true_watts() > 9_000, "the site should start above the budget to come"
            start = datetime.now(UTC) + timedelta(seconds=6)  # a grid event with notice
            async with operator(broker) as op:
                await op.send({"command": "budget", "id": "dr1", "limit_kw": 9, "start": start.isoformat(),
                               "name": "grid-dr"})
                assert (await op.wait_for(f"{PREFIX}/reply/dr1"))["status"] == "accepted"
                reached = await op.wait_for(f"{PREFIX}/reply/dr1", lambda b: b["status"] == "reached", timeout=20)
                assert reached["data"]["worst_case_watts"] <= 9_000
                assert reached["data"]["seconds"] > 0
                assert sim.true_watts() <= 9_000  # the true draw, not the model's belief

            # The broker dies mid-run; the loop keeps controlling the site.
            registry = CollectorRegistry()
            registry.register(MqttCollector(setup.bridge))
            assert registry.get_sample_value("wattshift_mqtt_connected") == 1
            assert registry.get_sample_value("wattshift_mqtt_commands_total", {"verdict": "accepted"}) == 1
            connections = setup.bridge.connections
            broker.stop()
            last = controller.last_report
            for _ in range(3):
                async with asyncio.timeout(10):
                    while controller.last_report is last:
                        await asyncio.sleep(0.05)
                last = controller.last_report
                ticks.append(last.seconds)
            assert not setup.bridge.connected.is_set()
            assert registry.get_sample_value("wattshift_mqtt_connected") == 0  # what the alert rule watches
            assert last.snapshot.budget_watts == 9_000
            broker.start()  # same port, empty: persistence is off, every retained message is gone
            async with asyncio.timeout(15):
                while setup.bridge.connections == connections:
                    await asyncio.sleep(0.05)
            assert registry.get_sample_value("wattshift_mqtt_connected") == 1
            assert registry.get_sample_value("wattshift_mqtt_connections_total") == connections + 1
            async with operator(broker, f"{PREFIX}/state/site", f"{PREFIX}/availability") as fresh:
                await fresh.wait_raw(f"{PREFIX}/availability", b"online")
                site = await fresh.wait_for(f"{PREFIX}/state/site")
                assert site["budget_watts"] == 9_000
                assert [e["name"] for e in site["events"]] == ["grid-dr"]
        finally:
            stop.set()
            await loop
        assert len(ticks) == 3
        assert sim.true_watts() <= 9_000
    assert_never_over(setup.truth)


# -- the command topic as hostile input, through the broker (docs/mqtt.md, "Who may command") --


async def test_a_retained_command_acts_once_not_again_at_every_restart(tmp_path, broker):
    async with site_with_bridge(tmp_path / "first", broker, "127.0.24.81") as first:
        async with operator(broker) as op:
            await op.send({"command": "pause", "id": "k1"}, retain=True)  # delivered live: obeyed
            assert (await op.wait_for(f"{PREFIX}/reply/k1"))["status"] == "accepted"
        assert first.controller.paused is True
    # The daemon restarts; the broker hands the new connection its retained copy of the pause.
    async with site_with_bridge(tmp_path / "second", broker, "127.0.24.91") as second:
        async with operator(broker) as op:
            refused = await op.wait_for(f"{PREFIX}/reply/k1")
        assert refused["status"] == "rejected" and "retained" in refused["reason"], refused
        assert second.controller.paused is False
        [row] = await journaled(second, "mqtt command pause rejected")
        assert row.data["retained"] is True and "retained" in row.summary


async def test_a_wildcard_response_topic_gets_a_refusal_and_the_link_stays_up(tmp_path, broker):
    async with site_with_bridge(tmp_path, broker, "127.0.24.101") as setup:
        async with operator(broker) as op:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = "a/#"
            await op.send({"command": "pause", "id": "w1"}, properties=props)
            refused = await op.wait_for(f"{PREFIX}/reply/w1")
            assert refused["status"] == "rejected" and refused["field"] == "response_topic", refused
            await op.send({"command": "budget", "id": "w2", "limit_kw": 8})
            assert (await op.wait_for(f"{PREFIX}/reply/w2"))["status"] == "accepted"
        assert setup.controller.paused is False
        assert setup.bridge.connections == 1  # it was 47 reconnects in 25 s


async def test_a_reply_cannot_be_aimed_at_the_daemons_own_topics(tmp_path, broker):
    async with site_with_bridge(tmp_path, broker, "127.0.24.111", homeassistant={"enabled": True}) as setup:
        await setup.controller.run_once()
        targets = [f"{PREFIX}/cmd", f"{PREFIX}/availability", f"{PREFIX}/state/site", "homeassistant/sensor/x"]
        async with operator(broker, f"{PREFIX}/#", "homeassistant/#") as op:
            await op.wait_for(f"{PREFIX}/state/site")
            for n, topic in enumerate(targets):
                await op.send({"command": "pause", "id": f"t{n}", "reply_to": topic})
            for n, _topic in enumerate(targets):
                reply = await op.wait_for(f"{PREFIX}/reply/t{n}")
                assert reply["status"] == "rejected" and reply["field"] == "reply_to", reply
            await settled(setup.bridge, op)
            assert len(op.on(f"{PREFIX}/cmd")) == len(targets)  # only ours: the daemon answered none there
            assert [m.payload for m in op.on(f"{PREFIX}/availability")] == [b"online"]
            assert all(json.loads(m.payload).get("site") == "test" for m in op.on(f"{PREFIX}/state/site"))
            assert not [m for m in op.on("homeassistant/#") if b"rejected" in m.payload]
        assert setup.bridge.verdicts == {"rejected": len(targets)}  # it never read its own reply as a command
        assert setup.controller.paused is False


async def test_resume_does_not_make_a_dry_run_daemon_live(tmp_path, broker):
    async with site_with_bridge(tmp_path, broker, "127.0.24.121", dry_run=True) as setup:
        controller = setup.controller
        before = [(m.physics.target_watts, m.physics.sleeping) for m in setup.sim.miners]
        async with operator(broker) as op:
            await op.send({"command": "budget", "id": "d1", "limit_kw": 2})  # would shed both miners
            await op.send({"command": "resume", "id": "d2"})
            reply = await op.wait_for(f"{PREFIX}/reply/d2")
        assert reply["status"] == "accepted" and "--dry-run" in reply["data"]["summary"]
        report = await controller.run_once()
        assert controller.dry_run is True and report.dry_run and report.results == ()
        assert report.plans[0].sheds  # there was something to send, and nothing went
        assert controller.commands_sent == 0
        assert [(m.physics.target_watts, m.physics.sleeping) for m in setup.sim.miners] == before


async def test_commands_are_refused_on_a_broker_that_lets_anonymous_clients_in(tmp_path):
    users = {"wattshift": "daemon-secret", "ops": "ops-secret"}
    login = Login(username="wattshift", password="daemon-secret")
    with Broker(tmp_path / "broker", "127.0.21.4", users=users, anonymous=True) as broker:
        async with site_with_bridge(tmp_path / "closed", broker, "127.0.24.131", login=login) as setup:
            assert setup.bridge.anonymous_broker is True
            async with operator(broker) as anyone:  # no password at all
                await anyone.send({"command": "budget", "id": "a1", "limit_kw": 0})
                refused = await anyone.wait_for(f"{PREFIX}/reply/a1")
            assert refused["status"] == "rejected" and "anonymous" in refused["reason"]
            assert "allow_anonymous_broker" in refused["reason"]
            assert setup.controller.budget.events() == []
            assert await journaled(setup, "broker accepts anonymous clients")
            assert await journaled(setup, "mqtt command budget rejected")
        # The operator may accept the risk, explicitly.
        async with site_with_bridge(tmp_path / "open", broker, "127.0.24.141", login=login,
                                    commands={"allow_anonymous_broker": True}) as setup:
            async with operator(broker, username="ops", password="ops-secret") as ops:
                await ops.send({"command": "budget", "id": "a2", "limit_kw": 8})
                assert (await ops.wait_for(f"{PREFIX}/reply/a2"))["status"] == "accepted"
