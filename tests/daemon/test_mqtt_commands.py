"""The command topic as hostile input, without a broker: strict types, payloads built to break
the parser, replies asked for on other people's topics, credentials, stale commands, and the
process's --dry-run. (tests/integration/test_mqtt.py runs the same paths through Mosquitto.)"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from mqtt_offline import MINERS, PREFIX, offline
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError

from wattshift.daemon.config.mqtt import MqttConfig
from wattshift.daemon.mqtt.commands import MAX_PAYLOAD_BYTES, Rejection, parse_command
from wattshift.daemon.runtime.policy_reload import PolicyReloader
from wattshift.policies.overrides import InnerPolicy


def cmd(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def response_topic(topic: str) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = topic
    return props


def now_iso(delta_seconds: float = 0.0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=delta_seconds)).isoformat().replace("+00:00", "Z")


# -- item 10: every field strictly typed -----------------------------------------------------


@pytest.mark.parametrize(("fields", "field"), [
    ({"limit_kw": True}, "limit_kw"),  # was a 1 kW cut
    ({"limit_kw": False}, "limit_kw"),  # was a 0 kW cut
    ({"limit_kw": "7"}, "limit_kw"),  # was 7 kW
    ({"limit_kw": 5, "priority": True}, "priority"),
    ({"limit_kw": 5, "priority": "7"}, "priority"),
    ({"limit_kw": 5, "priority": 7.0}, "priority"),
    ({"limit_kw": 5, "duration_seconds": "7"}, "duration_seconds"),
    ({"limit_kw": 5, "duration_seconds": True}, "duration_seconds"),
    ({"limit_kw": 5, "start": 0}, "start"),  # was 1970: in force at once
    ({"limit_kw": 5, "start": "1970-01-01T00:00:00Z"}, "start"),
    ({"limit_kw": 5, "end": 4_102_444_800}, "end"),
    ({"limit_kw": 5, "name": 7}, "name"),
    ({"limit_kw": 5, "id": 7}, "id"),
])
def test_budget_fields_are_never_coerced(fields, field):
    result = parse_command(cmd(command="budget", **fields))
    assert isinstance(result, Rejection), result
    assert result.field == field
    assert result.value == fields[field]


@pytest.mark.parametrize("payload", [
    cmd(command="force", device="10.0.0.1", state="off", until=0),
    cmd(command="force", device=1, state="off"),
    cmd(command="pause", reason=7),
    cmd(command="restore", name=True),
    cmd(command="policy", path=["a"]),
    cmd(command="pause", sent_at=1_700_000_000),
])
def test_other_commands_are_strict_too(payload):
    assert isinstance(parse_command(payload), Rejection)


def test_well_typed_numbers_still_parse():
    command = parse_command(cmd(command="budget", limit_kw=7, priority=7, duration_seconds=60,
                                start="2026-11-21T12:00:00Z"))
    assert not isinstance(command, Rejection), command
    assert (command.limit_kw, command.priority, command.duration_seconds) == (7.0, 7, 60.0)


# -- item 11: nothing escapes the parser -----------------------------------------------------


BREAKERS = {
    "1980 bytes of nested brackets": b"[" * 990 + b"]" * 990,
    "limit_kw nested 990 deep": b'{"command":"budget","limit_kw":' + b"[" * 990 + b"5" + b"]" * 990 + b"}",
    "over 16 KiB of [": b"[" * (MAX_PAYLOAD_BYTES + 1),
    "a 4301-digit integer": b'{"command":"budget","limit_kw":' + b"7" * 4301 + b"}",
    "a 4301-digit id": b'{"command":"pause","id":' + b"7" * 4301 + b"}",
    "a 4301-digit exponent": b'{"command":"budget","limit_kw":1e' + b"9" * 4301 + b"}",
    "NaN": b'{"command":"budget","limit_kw":NaN}',
    "1e999": b'{"command":"budget","limit_kw":1e999}',
    "not UTF-8": b'{"command":"pause","reason":"\xff\xfe"}',
    "a lone surrogate": b'{"command":"pause","reason":"\\ud800"}',
    "brackets in a string are no nesting": b'{"command":"pause","reason":"' + b"[" * 100 + b'"}',
}


@pytest.mark.parametrize("payload", BREAKERS.values(), ids=BREAKERS.keys())
async def test_payloads_that_broke_the_link_get_a_reply_and_a_journal_row(payload):
    site = offline()
    before = site.state()
    outcome, sent = await site.command(payload)
    assert [topic for topic, _, _ in sent] == [f"{PREFIX}/reply"] or payload.startswith(b'{"command":"pause"')
    if payload.startswith(b'{"command":"pause","reason":"' + b"["):
        assert outcome.accepted  # a bracket inside a string is text, not depth
        return
    assert not outcome.accepted, outcome
    [(_, reply, _)] = sent
    assert reply["status"] == "rejected" and reply["reason"]
    assert len(json.dumps(reply)) < 2_000  # never the payload echoed whole
    [(summary, data)] = site.journal.rows
    assert "rejected" in summary and data["accepted"] is False
    assert site.state() == before


async def test_a_start_at_the_end_of_time_is_refused_not_an_overflow():
    site = offline()
    outcome, [(_, reply, _)] = await site.command(
        {"command": "budget", "id": "b9", "limit_kw": 5, "start": "9999-12-31T00:00:00Z", "duration_seconds": 60})
    assert not outcome.accepted
    assert (reply["field"], reply["value"]) == ("start", "9999-12-31T00:00:00Z")
    assert "2100" in reply["reason"]
    assert site.controller.budget.events() == []


# -- item 12: replies only under the reply prefix --------------------------------------------


OTHER_PEOPLES_TOPICS = [
    f"{PREFIX}/availability", f"{PREFIX}/state/site", f"{PREFIX}/cmd", f"{PREFIX}/events",
    "site/meter", "homeassistant/sensor/x/config", "ops/answers", f"{PREFIX}/replyx",
]


@pytest.mark.parametrize("topic", OTHER_PEOPLES_TOPICS)
@pytest.mark.parametrize("how", ["reply_to", "response topic"])
async def test_a_reply_cannot_be_sent_to_another_topic(topic, how):
    site = offline(homeassistant={"enabled": True}, meter={"topic": "site/meter"})
    before = site.state()
    payload = {"command": "pause", "id": "p1"}
    props = None
    if how == "reply_to":
        payload["reply_to"] = topic
    else:
        props = response_topic(topic)
    outcome, sent = await site.command(payload, props)
    assert not outcome.accepted
    assert [t for t, _, _ in sent] == [f"{PREFIX}/reply/p1"]  # the default reply topic, nothing else
    assert sent[0][1]["field"] == ("reply_to" if how == "reply_to" else "response_topic")
    assert site.state() == before
    assert len(site.journal.rows) == 1


async def test_a_wildcard_response_topic_is_refused_and_the_outbox_keeps_going():
    site = offline()
    outcome, sent = await site.command({"command": "pause", "id": "p2"}, response_topic("a/#"))
    assert not outcome.accepted and [t for t, _, _ in sent] == [f"{PREFIX}/reply/p2"]
    assert "wildcard" in sent[0][1]["reason"]
    assert site.controller.paused is False


async def test_replies_under_the_reply_prefix_are_allowed_and_the_prefix_is_configurable():
    site = offline()
    outcome, sent = await site.command({"command": "pause", "id": "p3", "reply_to": f"{PREFIX}/reply/console/7"})
    assert outcome.accepted and [t for t, _, _ in sent] == [f"{PREFIX}/reply/console/7"]
    moved = offline(commands={"reply_prefix": "ops/wattshift"})
    outcome, sent = await moved.command({"command": "resume", "id": "r1"}, response_topic("ops/wattshift/console"))
    assert outcome.accepted and [t for t, _, _ in sent] == ["ops/wattshift/console"]
    outcome, sent = await moved.command({"command": "resume", "id": "r2", "reply_to": f"{PREFIX}/reply/x"})
    assert not outcome.accepted and [t for t, _, _ in sent] == ["ops/wattshift/r2"]


def test_a_reply_prefix_over_someone_elses_topics_is_a_config_error():
    for block in ({"prefix": "w/north", "commands": {"reply_prefix": "w"}},
                  {"prefix": "w/north", "commands": {"reply_prefix": "w/north/state"}},
                  {"homeassistant": {"enabled": True}, "commands": {"reply_prefix": "homeassistant/x"}},
                  {"meter": {"topic": "tele/meter"}, "commands": {"reply_prefix": "tele"}},
                  {"commands": {"reply_prefix": "a/#"}}):
        with pytest.raises(ValidationError, match="reply_prefix"):
            MqttConfig.model_validate({"host": "b", **block})


# -- item 13: credentials hidden, and still journaled ----------------------------------------


SECRET = "hunter2-s3cret"


@pytest.mark.parametrize("payload", [
    cmd(command="pause", id="s1", password=SECRET),
    cmd(command="budget", id="s2", limit_kw={"token": SECRET}),
    cmd(command="budget", id="s3", limit_kw=5, auth={"user": "x", "pass": SECRET}),
    json.dumps([{"api_key": SECRET}]).encode(),
    b'{"command": "pause", "id": "s5", "password": "' + SECRET.encode() + b'"',  # cut short: not JSON
    cmd(command="force", id="s6", device={"apiKey": SECRET}, state="off"),
])
async def test_a_credential_is_hidden_in_the_reply_and_the_command_is_journaled(payload):
    site = offline()
    outcome, sent = await site.command(payload)
    assert not outcome.accepted
    [(_, reply, _)] = sent
    assert SECRET not in json.dumps(reply)
    assert site.journal.refused == []
    [(summary, data)] = site.journal.rows  # a row for every one, with the value hidden
    assert SECRET not in summary and SECRET not in json.dumps(data)
    assert "(hidden)" in json.dumps(data) + summary


# -- item 3: a command acts once -------------------------------------------------------------


async def test_a_retained_command_is_refused_with_its_reason():
    site = offline()
    outcome, [(_, reply, _)] = await site.command({"command": "pause", "id": "h1"}, retained=True)
    assert not outcome.accepted and "retained" in reply["reason"]
    assert site.controller.paused is False
    [(summary, data)] = site.journal.rows
    assert "retained" in summary and data["retained"] is True


async def test_a_command_older_than_the_max_age_is_refused():
    site = offline(commands={"max_age_seconds": 30})
    outcome, [(_, reply, _)] = await site.command({"command": "pause", "id": "a1", "sent_at": now_iso(-31)})
    assert not outcome.accepted and reply["field"] == "sent_at" and "max_age_seconds" in reply["reason"]
    outcome, [(_, reply, _)] = await site.command({"command": "pause", "id": "a2", "sent_at": now_iso(+600)})
    assert not outcome.accepted and "ahead" in reply["reason"]
    assert site.controller.paused is False
    assert [d["accepted"] for _, d in site.journal.rows] == [False, False]
    outcome, _ = await site.command({"command": "pause", "id": "a3", "sent_at": now_iso(-5)})
    assert outcome.accepted and site.controller.paused is True


async def test_the_site_may_require_sent_at():
    site = offline(commands={"require_sent_at": True})
    outcome, [(_, reply, _)] = await site.command({"command": "pause", "id": "q1"})
    assert not outcome.accepted and reply["field"] == "sent_at" and "require_sent_at" in reply["reason"]
    assert site.controller.paused is False
    assert (await site.command({"command": "pause", "id": "q2", "sent_at": now_iso()}))[0].accepted


# -- item 14: --dry-run belongs to the process -----------------------------------------------


async def test_resume_does_not_end_dry_run():
    site = offline(dry_run=True)
    for name in ("pause", "resume", "resume"):
        outcome, [(_, reply, _)] = await site.command({"command": name, "id": name})
        assert outcome.accepted and site.controller.dry_run is True
    assert "--dry-run" in reply["data"]["summary"]
    assert site.bridge.context().mode == "dry-run"


async def test_pause_and_resume_are_manual_mode_only():
    site = offline()
    await site.command({"command": "pause"})
    assert (site.controller.paused, site.controller.dry_run, site.bridge.context().mode) == (True, False, "manual")
    await site.command({"command": "resume"})
    assert (site.controller.paused, site.bridge.context().mode) == (False, "auto")


# -- item 8: a refused policy file is never quoted -------------------------------------------


@pytest.mark.parametrize("text", [
    f"policy: {SECRET}\n",
    f"policy: merit-order\noptions:\n  step_watts: {SECRET}\n",
    f"root:{SECRET}:0:0:root:/root:/bin/bash\n",
    f"policy: merit-order\n{SECRET}: [1, 2\n",
])
async def test_a_refused_policy_file_is_never_quoted_in_the_reply_or_the_journal(tmp_path, text):
    (tmp_path / "live.yaml").write_text("policy: merit-order\n")
    (tmp_path / "bad.yaml").write_text(text)
    site = offline()
    reloader = PolicyReloader(InnerPolicy(site.controller), tmp_path / "live.yaml")
    site.bridge.handler.policy_switcher = lambda path: reloader.switch_policy(path, reason="mqtt command")
    before = site.controller.policy.inner
    outcome, [(_, reply, _)] = await site.command({"command": "policy", "id": "p", "path": "bad.yaml"})
    assert not outcome.accepted and reply["field"] == "path" and reply["reason"]
    assert SECRET not in json.dumps(reply)
    [(summary, data)] = [(s, d) for s, d in site.journal.rows if s.startswith("mqtt command")]
    assert SECRET not in summary + json.dumps(data)
    assert site.controller.policy.inner is before


async def test_a_policy_switcher_that_raises_is_not_quoted_either():
    def explode(path):
        raise ValueError(f"bad line: root:{SECRET}:0:0")

    site = offline(policy_switcher=explode)
    outcome, [(_, reply, _)] = await site.command({"command": "policy", "id": "p", "path": "x.yaml"})
    assert not outcome.accepted and "ValueError" in reply["reason"]
    assert SECRET not in json.dumps(reply)
    [(summary, data)] = site.journal.rows
    assert SECRET not in summary + json.dumps(data)


# -- the anonymous-broker verdict (item 15; the check itself runs against Mosquitto) ---------


async def test_an_open_broker_refuses_every_command_unless_the_site_says_so():
    site = offline()
    site.bridge.anonymous_broker = True
    outcome, [(_, reply, _)] = await site.command({"command": "budget", "id": "c1", "limit_kw": 0})
    assert not outcome.accepted and "anonymous" in reply["reason"] and "allow_anonymous_broker" in reply["reason"]
    assert site.controller.budget.events() == []
    allowed = offline(commands={"allow_anonymous_broker": True})
    allowed.bridge.anonymous_broker = True
    assert (await allowed.command({"command": "force", "device": MINERS[0], "state": "off"}))[0].accepted
