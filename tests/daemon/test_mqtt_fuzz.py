"""Property-based fuzzing of the command path: parser, admission checks and handler, against a
real Controller and real overrides in memory (no broker, no tick).

For every message, whatever its bytes, its delivery (retained or not) and its MQTT 5 response
topic: no exception escapes, exactly one reply goes out, under the reply prefix, exactly one
journal row is written (and the journal's own checks accept it), and a refused command leaves
every piece of state as it was. The seed is fixed, so a CI run repeats exactly.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import string
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from mqtt_offline import MINERS, PREFIX, offline
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from wattshift.daemon.mqtt.commands import COMMANDS
from wattshift.daemon.runtime.policy_reload import ReloadResult
from wattshift.model.budget import BudgetEvent

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "2000"))
ID_CHARS = string.ascii_letters + string.digits + "_.:-"

# JSON of every shape, small and large, with the values that broke it before.
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**60), max_value=10**60),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
    st.sampled_from(["7", "0", "", "a/#", "+", f"{PREFIX}/cmd", "2026-11-21T12:00:00Z", "9999-12-31T00:00:00Z",
                     "1970-01-01T00:00:00Z", "2026-11-21T12:00:00", *MINERS, "miner", "gpu", "on", "off", "auto"]),
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=8)

FIELDS = ["id", "reply_to", "sent_at", "limit_kw", "start", "end", "duration_seconds", "priority", "name",
          "device", "class", "state", "until", "path", "reason", "password", "token", "apiKey", "extra"]


def _near(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


plausible = {
    "id": st.text(alphabet=ID_CHARS, min_size=1, max_size=70) | json_values,
    "reply_to": st.sampled_from([f"{PREFIX}/reply/x", f"{PREFIX}/cmd", "a/#", "elsewhere", f"{PREFIX}/state/site"])
    | json_values,
    "sent_at": st.sampled_from([_near(timedelta()), _near(timedelta(hours=-1)), _near(timedelta(days=3)), 0])
    | json_values,
    "limit_kw": st.floats(min_value=-5, max_value=50) | st.integers(-5, 50) | json_values,
    "start": st.sampled_from([_near(timedelta(minutes=5)), _near(timedelta(minutes=-5))]) | json_values,
    "end": st.sampled_from([_near(timedelta(minutes=30)), _near(timedelta(minutes=-30))]) | json_values,
    "duration_seconds": st.floats(min_value=-10, max_value=4e6) | json_values,
    "priority": st.integers(-5, 120) | json_values,
    "name": st.text(alphabet=ID_CHARS, min_size=1, max_size=10) | json_values,
    "device": st.sampled_from([*MINERS, "10.9.9.9"]) | json_values,
    "class": st.sampled_from(["miner", "gpu", "toaster"]) | json_values,
    "state": st.sampled_from(["on", "off", "auto", "maybe"]) | json_values,
    "until": st.sampled_from([_near(timedelta(hours=1)), _near(timedelta(hours=-1))]) | json_values,
}


def _valid(command: str) -> st.SearchStrategy[dict[str, object]]:
    """Well-formed commands, most of which the site accepts."""
    optional = {
        "budget": {"start": st.sampled_from([_near(timedelta(minutes=5)), _near(timedelta(minutes=-5))]),
                   "duration_seconds": st.floats(min_value=1, max_value=86_400),
                   "priority": st.integers(0, 100), "name": st.sampled_from(["dr", "cut", "x.1"])},
        "force": {"until": st.sampled_from([_near(timedelta(hours=1))])},
        "pause": {"reason": st.text(max_size=20)},
        "resume": {"reason": st.text(max_size=20)},
    }.get(command, {})
    required = {
        "budget": {"limit_kw": st.floats(min_value=0, max_value=10) | st.integers(0, 10)},
        "restore": {"name": st.sampled_from(["dr", "cut"])},
        "force": {"state": st.sampled_from(["on", "off", "auto"])},
        "policy": {"path": st.sampled_from(["good.yaml", "broken.yaml"])},
    }.get(command, {})
    common = {"id": st.text(alphabet=ID_CHARS, min_size=1, max_size=20),
              "reply_to": st.just(f"{PREFIX}/reply/console"), "sent_at": st.just(_near(timedelta()))}

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, object]:
        body: dict[str, object] = {"command": command}
        body.update({k: draw(v) for k, v in required.items()})
        if command == "force":
            body.update(draw(st.sampled_from([{"device": MINERS[0]}, {"device": MINERS[1]}, {"class": "miner"}])))
        for key, value in {**optional, **common}.items():
            if draw(st.booleans()):
                body[key] = draw(value)
        return body

    return build()


valid_commands = st.one_of(*(_valid(name) for name in COMMANDS))


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, object]:
    """A well-formed command with one field replaced, or one added, by anything at all."""
    body = draw(valid_commands)
    key = draw(st.sampled_from([*FIELDS, "command"]))
    body[key] = draw(plausible.get(key, json_values) if draw(st.booleans()) else json_values)
    return body


@st.composite
def command_objects(draw: st.DrawFn) -> dict[str, object]:
    body: dict[str, object] = {"command": draw(st.sampled_from([*COMMANDS, "reboot"]) | json_values)}
    for key in draw(st.lists(st.sampled_from(FIELDS), max_size=6, unique=True)):
        body[key] = draw(plausible.get(key, json_values))
    return body


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def _brackets(n: int) -> bytes:
    return b"[" * n + b"]" * n


def _long_number(n: int) -> bytes:
    return b'{"command":"budget","limit_kw":' + b"9" * n + b"}"


payloads = st.one_of(
    valid_commands.map(_json),
    mutated().map(_json),
    command_objects().map(_json),
    json_values.map(_json),
    st.binary(max_size=200),
    st.text(alphabet=string.printable, max_size=200).map(str.encode),
    st.integers(1, 3000).map(_brackets),
    st.integers(1, 5000).map(_long_number),
)
response_topics = st.none() | st.none() | st.none() | st.sampled_from(
    [f"{PREFIX}/reply/console", "a/#", "+", f"{PREFIX}/cmd", "", "x" * 2000, f"{PREFIX}/reply/../cmd"]
) | st.text(max_size=30)


def _properties(topic: str | None, correlation: bytes | None) -> Properties | None:
    if topic is None and correlation is None:
        return None
    props = Properties(PacketTypes.PUBLISH)
    if topic is not None:
        props.ResponseTopic = topic
    if correlation is not None:
        props.CorrelationData = correlation
    return props


def test_every_command_is_answered_journaled_and_a_refusal_changes_nothing():
    with asyncio.Runner() as runner:  # one loop for every example: thousands of them, in seconds

        @seed(20261121)
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow])
        @given(payload=payloads, topic=response_topics, correlation=st.none() | st.binary(max_size=400),
               retained=st.sampled_from([False] * 9 + [True]))  # now and then a retained one
        def one(payload: bytes, topic: str | None, correlation: bytes | None, retained: bool) -> None:
            verdicts[runner.run(_one(payload, _properties(topic, correlation), retained))] += 1

        verdicts: collections.Counter[str] = collections.Counter()
        one()
    # The fuzzing reached the handler, not only the parser's first refusals.
    accepted = sum(n for verdict, n in verdicts.items() if verdict.startswith("accepted"))
    assert accepted >= EXAMPLES // 10, verdicts
    assert len({v for v in verdicts if v.startswith("accepted")}) == len(COMMANDS), verdicts
    assert len(verdicts) >= 20, verdicts  # refused for many different reasons


def _switch(path: Path) -> ReloadResult:
    if path.name == "good.yaml":
        return ReloadResult(True, f"policy file {path} accepted")
    return ReloadResult(False, f"policy file {path} refused: 1 problem(s)", ("line 1: (got 'hunter2')",))


async def _one(payload: bytes, properties: Properties | None, retained: bool) -> str:
    site = offline(homeassistant={"enabled": True}, meter={"topic": "site/meter"}, policy_switcher=_switch)
    site.controller.budget.add(BudgetEvent("dr", 8_000, datetime.now(UTC) - timedelta(minutes=1), None))
    before = site.state()
    outcome, sent = await site.command(payload, properties, retained=retained)  # nothing may raise
    assert len(sent) == 1, sent
    topic, reply, _ = sent[0]
    assert topic == f"{PREFIX}/reply" or topic.startswith(f"{PREFIX}/reply/"), topic
    assert not topic.startswith((f"{PREFIX}/cmd", f"{PREFIX}/state", "homeassistant", "site/meter"))
    assert reply["status"] == ("accepted" if outcome.accepted else "rejected")
    assert site.journal.refused == [], site.journal.refused
    # One row for the command (an accepted budget command adds the controller's own budget row).
    commands = [summary for summary, _ in site.journal.rows if summary.startswith("mqtt command")]
    assert len(commands) == 1 and len(site.journal.rows) == 1 + (outcome.watch is not None)
    if not outcome.accepted:
        assert reply["reason"]
        assert site.state() == before
    if retained:
        assert not outcome.accepted
    if outcome.accepted:
        return f"accepted {reply['command']}"
    return f"rejected {outcome.rejection.field if outcome.rejection else None}"
