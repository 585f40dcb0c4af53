"""How a command message was delivered, and what that allows (pure): where its answer goes, and
whether it may act at all.

The payload says what to do (:mod:`.commands`); the delivery says whether to listen: a broker
that lets anyone in makes every sender suspect, a retained message is replayed at every connect,
a command can be older than the site allows, and a reply topic (``reply_to`` or the MQTT 5
response topic, both the sender's input) may point anywhere. Each is refused with a reason, and
a refused message changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .commands import Rejection, check_age
from .topics import Topics

MAX_CORRELATION_BYTES = 256  # echoed on the reply: bounded like every other input
ANONYMOUS_REFUSAL = (
    "commands refused: the broker also lets clients in without credentials, so anyone on the "
    "network could have sent this; turn anonymous access off (Mosquitto: allow_anonymous false) "
    "or set mqtt.commands.allow_anonymous_broker: true in the site file"
)
RETAINED_REFUSAL = (
    "a retained message: a command acts once, when it is sent, not again at every restart; "
    "clear it with an empty retained message on the command topic"
)


@dataclass(frozen=True)
class ReplyTo:
    topic: str
    correlation: bytes | None


def reply_target(
    topics: Topics, request_id: str | None, reply_to: str | None, properties: Any
) -> tuple[ReplyTo, Rejection | None]:
    """Where the answer goes, and why the asked-for topic was refused (then the default
    ``<reply prefix>/<id>`` gets it). The MQTT 5 response topic wins over ``reply_to``."""
    response_topic = getattr(properties, "ResponseTopic", None) if properties is not None else None
    correlation = getattr(properties, "CorrelationData", None) if properties is not None else None
    default = topics.reply(request_id)
    if correlation is not None and (not isinstance(correlation, bytes) or len(correlation) > MAX_CORRELATION_BYTES):
        size = len(correlation) if isinstance(correlation, bytes | str) else None
        return ReplyTo(default, None), Rejection(f"over {MAX_CORRELATION_BYTES} bytes", "correlation_data", size)
    for field, topic in (("response_topic", response_topic), ("reply_to", reply_to)):
        if topic is None:
            continue
        problem = topics.reply_problem(topic) if isinstance(topic, str) else "not a string"
        if problem is not None:
            return ReplyTo(default, correlation), Rejection(problem, field, str(topic)[:200])
        return ReplyTo(topic, correlation), None
    return ReplyTo(default, correlation), None


def delivery_refusal(
    parsed: Any,
    *,
    retained: bool,
    misdirected: Rejection | None,
    now: datetime,
    anonymous_broker: bool,
    max_age_seconds: float,
    require_sent_at: bool,
) -> Rejection | None:
    """Why a message must not act, before the handler sees it: the broker's own openness first
    (``anonymous_broker``: open, and the site has not accepted that), then the delivery, then the
    content (``parsed``, a command or the parser's :class:`Rejection`)."""
    if anonymous_broker:
        return Rejection(ANONYMOUS_REFUSAL)
    if retained:
        return Rejection(RETAINED_REFUSAL, "retain", True)
    if isinstance(parsed, Rejection):
        return parsed
    if misdirected is not None:
        return misdirected
    return check_age(parsed, now, max_age_seconds=max_age_seconds, required=require_sent_at)
