"""The ``mqtt:`` block of the site file: broker, identity, topics, the site meter.

Like the miners' credentials, the broker's username and password are never written here: the
block names an entry of the secrets file (``credentials: broker``), resolved by
:func:`broker_login` from ``SiteConfig.credentials``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from wattshift.model.fields import Strict

# A topic we publish to or subscribe to literally: MQTT wildcards would make a publish fail
# and a subscription mean something else than the operator wrote.
_WILDCARDS = ("+", "#")


def check_topic(value: str, *, what: str = "topic") -> str:
    if not value or value.startswith("/") or value.endswith("/") or "//" in value:
        raise ValueError(f"{what} {value!r}: must be non-empty, without leading, trailing or double '/'")
    if any(w in value for w in _WILDCARDS) or "\x00" in value:
        raise ValueError(f"{what} {value!r}: must not contain the wildcards '+' or '#'")
    if len(value.encode()) > 1024:
        raise ValueError(f"{what}: longer than 1024 bytes")
    return value


Topic = Annotated[str, Field(min_length=1, max_length=1024)]


class TlsConfig(Strict):
    """TLS to the broker. ``ca_file`` is the CA that signed the broker's certificate (the
    system store if absent); ``cert_file`` + ``key_file`` for client-certificate auth."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (client certificate and its key)")
        return self


class HomeAssistantConfig(Strict):
    """MQTT discovery for the site-level entities (budget, draw, headroom, mode)."""

    enabled: bool = False
    prefix: Topic = "homeassistant"

    @field_validator("prefix")
    @classmethod
    def _topic(cls, value: str) -> str:
        return check_topic(value, what="prefix")


class MeterConfig(Strict):
    """The site's revenue meter or PDU readings, published by someone else to ``topic``.

    ``field`` is a dotted path into the JSON payload (``ENERGY.Power``, ``total.p``); a payload
    that is a bare number is read as is when ``field`` is empty.
    """

    topic: Topic
    field: str = Field(default="", max_length=200, pattern=r"^([A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*)?$")
    units: Literal["W", "kW"] = "W"
    stale_after_seconds: float = Field(default=30.0, gt=0, le=3600)

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        return check_topic(value, what="topic")


def _under(topic: str, prefix: str) -> bool:
    return topic == prefix or topic.startswith(prefix + "/")


class CommandsConfig(Strict):
    """Who may be answered, and which commands are too old or too suspect to obey.

    ``reply_prefix`` (default ``<prefix>/reply``) bounds where replies may go: a ``reply_to`` or
    an MQTT 5 response topic outside it is refused, so a command cannot make the daemon publish
    on its own topics, the meter's or Home Assistant's. ``max_age_seconds`` refuses a command
    whose ``sent_at`` is older (or further ahead, for a console whose clock runs fast);
    ``require_sent_at`` refuses one without it. ``allow_anonymous_broker`` obeys commands even
    though the broker lets clients in without a password (checked at every connect when the
    daemon has credentials)."""

    reply_prefix: Topic | None = None
    max_age_seconds: float = Field(default=120.0, gt=0, le=86_400)
    require_sent_at: bool = False
    allow_anonymous_broker: bool = False

    @field_validator("reply_prefix")
    @classmethod
    def _topic(cls, value: str | None) -> str | None:
        return None if value is None else check_topic(value, what="reply_prefix")


class AgentLinkConfig(Strict):
    """How the controller hears the ``wattshift agent`` of each GPU host (``driver: agent``
    nodes): the agents' topic prefix, when a silent agent's node counts at its maximum, how far
    an agent's clock may be from ours, and how often the loop tells each agent it is alive.
    ``allow_anonymous_broker`` believes the agents' readings even on a broker that lets anyone
    in (by default their nodes then count at their maximum)."""

    prefix: Topic = "wattshift/agents"
    stale_after_seconds: float = Field(default=15.0, gt=0, le=3600)
    max_skew_seconds: float = Field(default=30.0, gt=0, le=3600)
    heartbeat_seconds: float = Field(default=10.0, gt=0, le=3600)
    allow_anonymous_broker: bool = False

    @field_validator("prefix")
    @classmethod
    def _topic(cls, value: str) -> str:
        return check_topic(value, what="prefix")


class BrokerConfig(Strict):
    """How to reach the broker: the part of the site file's ``mqtt`` block that a GPU host's
    agent file repeats (daemon/config/agent.py)."""

    host: str = Field(min_length=1, max_length=253)
    port: int | None = Field(default=None, ge=1, le=65535)  # None: 1883, or 8883 with TLS
    tls: TlsConfig | None = None
    credentials: str | None = None  # an entry of the secrets file: {username, password}
    client_id: str | None = Field(default=None, min_length=1, max_length=128)
    keepalive: int = Field(default=30, ge=5, le=3600)
    reconnect_min_seconds: float = Field(default=1.0, gt=0, le=600)
    reconnect_max_seconds: float = Field(default=60.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _backoff(self) -> BrokerConfig:
        if self.reconnect_max_seconds < self.reconnect_min_seconds:
            raise ValueError(f"reconnect_max_seconds ({self.reconnect_max_seconds}) must be at least "
                             f"reconnect_min_seconds ({self.reconnect_min_seconds})")
        return self

    def broker_port(self) -> int:
        return self.port or (8883 if self.tls is not None else 1883)


class MqttConfig(BrokerConfig):
    """The site file's ``mqtt`` block: the broker (``client_id`` defaults to wattshift-<site>),
    the daemon's topics, the site meter, commands and the GPU hosts' agents."""

    prefix: Topic | None = None  # None: wattshift/<site name>
    qos: Literal[0, 1, 2] = 1
    retain: bool = True  # state topics (site, circuits, classes, devices, availability)
    publish_min_interval_seconds: float = Field(default=5.0, ge=0, le=3600)
    queue_limit: int = Field(default=1000, ge=10, le=1_000_000)  # decisions/events kept while offline
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()
    meter: MeterConfig | None = None
    commands: CommandsConfig = CommandsConfig()
    agents: AgentLinkConfig = AgentLinkConfig()

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        return None if value is None else check_topic(value, what="prefix")

    @model_validator(mode="after")
    def _replies_apart(self) -> MqttConfig:
        # Replies are published where a command asks: under the reply prefix only, and that
        # prefix must not hold a topic someone else reads as data or as a command.
        replies = self.commands.reply_prefix
        if replies is None:
            return self
        others = {"homeassistant.prefix": self.homeassistant.prefix,
                  "meter.topic": self.meter.topic if self.meter else None}
        for name, topic in others.items():
            if topic is not None and (_under(topic, replies) or _under(replies, topic)):
                raise ValueError(f"commands.reply_prefix {replies!r} overlaps {name} {topic!r}: "
                                 "replies must go under a prefix of their own")
        # Under the daemon's own prefix only in <prefix>/reply: the rest is its state and commands.
        if self.prefix is not None and _under(replies, self.prefix) and not _under(replies, f"{self.prefix}/reply"):
            raise ValueError(f"commands.reply_prefix {replies!r}: under prefix {self.prefix!r} only as "
                             f"{self.prefix}/reply/...")
        if self.prefix is not None and _under(self.prefix, replies):
            raise ValueError(f"commands.reply_prefix {replies!r} holds prefix {self.prefix!r}: "
                             "replies must go under a prefix of their own")
        return self

    def topic_prefix(self, site_name: str) -> str:
        return self.prefix or f"wattshift/{site_name}"

    def identifier(self, site_name: str) -> str:
        return self.client_id or f"wattshift-{site_name}"


class Login(Strict):
    username: str
    password: SecretStr


def broker_login(config: MqttConfig, credentials: Mapping[str, Any]) -> Login | None:
    """The username and password named by ``config.credentials``; ValueError if missing.

    ``credentials`` is ``SiteConfig.credentials`` (name -> object with ``username`` and
    ``password: SecretStr``)."""
    if config.credentials is None:
        return None
    entry = credentials.get(config.credentials)
    if entry is None:
        raise ValueError(f"mqtt.credentials {config.credentials!r} is not in the secrets file")
    return Login(username=entry.username, password=entry.password)
