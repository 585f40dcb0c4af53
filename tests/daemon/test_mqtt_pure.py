"""The pure parts of the MQTT integration: command validation, budget priorities, overrides,
the site meter's parsing and the meter checks. No broker here (see tests/integration/test_mqtt*.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from factories import miner, snapshot
from pydantic import ValidationError

from wattshift.daemon.config.mqtt import MqttConfig, broker_login
from wattshift.daemon.control.meter_checks import (
    MeterRoom,
    OverheadEstimate,
    hold_increases,
    increases_allowed,
    shed_confirmed,
)
from wattshift.daemon.control.sequencer import plan_transition
from wattshift.daemon.mqtt.commands import (
    BudgetCommand,
    ForceCommand,
    Rejection,
    parse_command,
)
from wattshift.drivers.mqtt_meter import MeterError, MeterReading, SiteMeter, extract
from wattshift.model.budget import BudgetEvent, BudgetSchedule
from wattshift.model.snapshot import DeviceClass
from wattshift.policies.base import Allocation, Target
from wattshift.policies.overrides import Forced, Override, OverridePolicy, Overrides

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def cmd(**fields: object) -> bytes:
    return json.dumps(fields).encode()


# -- commands ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("payload", "field", "value"), [
    (b"{not json", "payload", "{not json"),
    (b"[1, 2]", "payload", [1, 2]),
    (cmd(id="r1"), "command", None),
    (cmd(command="reboot", id="r1"), "command", "reboot"),
    (cmd(command="budget", limit_kw=-5), "limit_kw", -5),
    (cmd(command="budget", limit_kw="lots"), "limit_kw", "lots"),
    (cmd(command="budget", limit_kw=5, priority=101), "priority", 101),
    (cmd(command="budget", limit_kw=5, duration_seconds=0), "duration_seconds", 0),
    (cmd(command="budget", limit_kw=5, start="2026-11-21T12:00:00"), "start", "2026-11-21T12:00:00"),
    (cmd(command="budget", limit_kw=5, end="2026-11-21T12:00:00Z", duration_seconds=60), "end",
     "2026-11-21T12:00:00Z"),
    (cmd(command="budget", limit_kw=5, start="2026-11-21T13:00:00Z", end="2026-11-21T12:00:00Z"), "end",
     "2026-11-21T12:00:00Z"),
    (cmd(command="budget", limit_kw=5, name="has space"), "name", "has space"),
    (cmd(command="budget", limit_kw=5, colour="red"), "colour", "red"),
    (cmd(command="budget", limit_kw=5, reply_to="a/#"), "reply_to", "a/#"),
    (cmd(command="restore"), "name", None),
    (cmd(command="force", state="off"), "device", None),
    (cmd(command="force", device="10.0.0.1", state="sideways"), "state", "sideways"),
    (cmd(command="force", device="10.0.0.1", **{"class": "miner"}, state="off"), "device", "10.0.0.1"),
    (cmd(command="force", **{"class": "toaster"}, state="off"), "class", "toaster"),
    (cmd(command="policy"), "path", None),
])
def test_bad_commands_are_refused_naming_the_field_and_value(payload, field, value):
    result = parse_command(payload)
    assert isinstance(result, Rejection), result
    assert result.field == field
    assert result.value == value
    assert field in result.message()


def test_a_refusal_keeps_the_request_id_and_reply_topic_when_they_are_well_formed():
    result = parse_command(cmd(command="budget", id="req-7", reply_to="ops/answers", limit_kw=-1))
    assert isinstance(result, Rejection)
    assert (result.request_id, result.reply_to, result.command) == ("req-7", "ops/answers", "budget")
    bad_id = parse_command(cmd(command="budget", id="a/b", limit_kw=5))
    assert isinstance(bad_id, Rejection) and bad_id.field == "id" and bad_id.request_id is None


def test_a_refused_credential_is_not_echoed():
    result = parse_command(cmd(command="pause", password="hunter2"))
    assert isinstance(result, Rejection) and result.field == "password"
    assert "hunter2" not in result.message() and result.value == "(hidden)"


def test_good_commands_parse_to_their_models():
    budget = parse_command(cmd(command="budget", id="r1", limit_kw=12.5, duration_seconds=600, priority=3, name="dr"))
    assert isinstance(budget, BudgetCommand)
    start, end = budget.window(T0)
    assert (start, end) == (T0, T0 + timedelta(seconds=600))
    force = parse_command(cmd(command="force", **{"class": "gpu"}, state="on"))
    assert isinstance(force, ForceCommand) and force.device_class == "gpu"
    for name in ("pause", "resume"):
        assert parse_command(cmd(command=name)).command == name


def test_mqtt_config_is_strict_and_names_credentials():
    with pytest.raises(ValidationError, match="prefix"):
        MqttConfig(host="broker", prefix="wattshift/#")
    with pytest.raises(ValidationError, match="extra"):
        MqttConfig.model_validate({"host": "broker", "password": "x"})
    with pytest.raises(ValidationError, match="reconnect_max_seconds"):
        MqttConfig(host="broker", reconnect_min_seconds=10, reconnect_max_seconds=5)
    config = MqttConfig(host="broker", credentials="mqtt")
    assert config.topic_prefix("north") == "wattshift/north" and config.broker_port() == 1883
    with pytest.raises(ValueError, match="'mqtt' is not in the secrets file"):
        broker_login(config, {})


# -- budget priorities -------------------------------------------------------------------------


def test_overlapping_events_resolve_by_priority_then_lowest_limit():
    budget = BudgetSchedule(100_000, lead_seconds=60)
    budget.add(BudgetEvent("grid", 40_000, T0, T0 + timedelta(hours=2)))
    budget.add(BudgetEvent("grid-2", 50_000, T0, T0 + timedelta(hours=2)))
    assert budget.at(T0) == 40_000  # same priority: the lowest limit
    budget.add(BudgetEvent("operator", 70_000, T0 + timedelta(minutes=30), T0 + timedelta(minutes=40), priority=5))
    assert budget.at(T0 + timedelta(minutes=35)) == 70_000  # the higher priority decides while it lasts
    assert budget.at(T0 + timedelta(minutes=41)) == 40_000
    budget.add(BudgetEvent("over", 200_000, T0, None, priority=9))
    assert budget.at(T0 + timedelta(minutes=35)) == 100_000  # never above the contract


def test_planning_looks_at_every_change_within_the_lead():
    budget = BudgetSchedule(100_000, lead_seconds=600)
    budget.add(BudgetEvent("override", 90_000, T0, T0 + timedelta(minutes=5), priority=5))
    budget.add(BudgetEvent("cut", 30_000, T0, None))
    assert budget.at(T0) == 90_000
    assert budget.in_force(T0) == 30_000  # the override ends within the lead: plan for the cut


# -- overrides ---------------------------------------------------------------------------------


class _Everyone:
    name = "everyone"

    def __init__(self, watts: float) -> None:
        self.watts = watts

    def decide(self, snap):
        return Allocation(tuple(Target(m.device_id, self.watts, "policy") for m in snap.loads), "all")


def test_overrides_force_devices_and_classes_and_expire():
    snap = snapshot([miner("a"), miner("b"), miner("c", watts=10, mining=False)], budget=20_000)
    overrides = Overrides()
    policy = OverridePolicy(_Everyone(0.0), overrides)
    assert [t.watts for t in policy.decide(snap)] == [0.0, 0.0, 0.0]
    overrides.set_device("c", Override(Forced.ON))
    overrides.set_class(DeviceClass.MINER, Override(Forced.OFF, until=snap.at + timedelta(minutes=1)))
    allocation = policy.decide(snap)
    assert allocation["c"].watts == miner("c").capability.min_watts  # the device's own override wins
    assert allocation["a"].watts == 0.0 and "forced off" in allocation["a"].reason
    assert allocation.targets[0].device_id in {"a", "b", "c"}
    later = snapshot([miner("a")], budget=20_000)
    overrides.set_class(DeviceClass.MINER, Override(Forced.OFF, until=later.at - timedelta(seconds=1)))
    assert OverridePolicy(_Everyone(3000.0), overrides).decide(later)["a"].watts == 3000.0


def test_forced_on_still_waits_for_headroom():
    snap = snapshot([miner("on", watts=3500), miner("off", watts=10, mining=False)], budget=4000)
    overrides = Overrides()
    overrides.set_device("off", Override(Forced.ON))
    plan = plan_transition(snap, OverridePolicy(_Everyone(0.0), overrides).decide(snap))
    assert [s.device_id for s in plan.deferred] == ["off"]  # needs the other one's power first
    assert [s.device_id for s in plan.sheds] == ["on"]


# -- the site meter ----------------------------------------------------------------------------


def test_meter_extracts_a_nested_field_in_kw():
    assert extract(b'{"ENERGY": {"Power": 12.5}}', "ENERGY.Power", "kW") == 12_500
    assert extract(b"830", "", "W") == 830
    assert extract(b'{"phases": [{"p": 1}, {"p": 2}]}', "phases.1.p", "W") == 2
    for payload, field, match in [(b"{}", "p", "no 'p'"), (b'{"p": "x"}', "p", "not a number"),
                                  (b'{"p": -1}', "p", ">= 0"), (b'{"p": true}', "p", "not a number"),
                                  (b"NaN", "", "not a finite number")]:
        with pytest.raises(MeterError, match=match):
            extract(payload, field, "W")


def test_meter_keeps_the_last_good_reading_and_goes_stale():
    now = [100.0]
    meter = SiteMeter("site/meter", "w", stale_after_seconds=10, clock=lambda: now[0])
    assert meter.latest() is None and meter.stale
    assert meter.feed(b'{"w": 5000}') == 5000
    now[0] += 4
    assert meter.feed(b"garbage") is None
    reading = meter.latest()
    assert reading is not None and reading.watts == 5000 and reading.age_seconds == 4 and not reading.stale
    assert meter.errors == 1 and "not JSON" in (meter.last_error or "")
    now[0] += 7
    assert meter.stale


def test_meter_checks():
    # 4 kW of grants wait on the sheds; the site may draw 20 kW on the meter.
    room = MeterRoom(MeterReading(19_000, 1.0, 0.0, False), grants_watts=4000, limit_watts=20_000)
    assert shed_confirmed(room, MeterReading(16_000, 2.0, 0.0, False))  # exactly room for them
    assert not shed_confirmed(room, MeterReading(16_001, 2.0, 0.0, False))  # a watt short: wait
    assert not shed_confirmed(room, MeterReading(10_000, 1.0, 0.0, False))  # not newer than the sheds
    assert not shed_confirmed(room, MeterReading(10_000, 2.0, 30.0, True))  # stale
    assert not shed_confirmed(room, None)
    assert shed_confirmed(MeterRoom(None, 4000, 20_000), MeterReading(15_000, 2.0, 0.0, False))
    estimate = OverheadEstimate(alpha=0.5)
    assert not estimate.known  # nothing measured: the unmetered load could be anything
    # A device unread: its draw counts as overhead, an upper bound to plan with until a full sample.
    estimate.update(MeterReading(14_000, 0.5, 0, False), 10_000, all_devices_read=False)
    assert estimate.known and estimate.watts == 4_000 and estimate.samples == 0
    estimate.update(MeterReading(11_000, 1.0, 0, False), 10_000, all_devices_read=True)
    assert estimate.watts == 1_000  # the first full sample replaces the bound
    estimate.update(MeterReading(12_000, 2.0, 0, False), 10_000, all_devices_read=True)
    assert estimate.watts == 1500
    assert estimate.update(MeterReading(30_000, 3.0, 0, False), 10_000, all_devices_read=False) == 1500
    assert not increases_allowed(None) and not increases_allowed(MeterReading(1, 1, 99, True))
    snap = snapshot([miner("a", watts=10, mining=False), miner("b")], budget=20_000)
    plan = plan_transition(snap, Allocation((Target("a", 3500, "grant"), Target("b", 0, "shed"))))
    held = hold_increases(plan)
    assert plan.grants and held.grants == () and held.sheds == plan.sheds
