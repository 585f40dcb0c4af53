"""The file of a ``wattshift agent`` (``/etc/wattshift/agent.yaml`` on each GPU host).

An agent has no site file: it knows its own host name (its topics), the broker (as the site
file's ``mqtt`` block: host, port, TLS, a credentials name looked up in its own secrets file),
which of its cards to manage, what to do when the controller goes silent, and optionally the
commands that run this host's own jobs. Validated like
every operator file: unknown keys refused, each problem at its line, passwords never here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator

from wattshift.model.fields import Name, Strict

from .gpu import MAX_GPU_INDEX, CommandRunnerConfig
from .mqtt import BrokerConfig, Login, Topic, check_topic
from .site import Credentials, load_secrets
from .yamlfile import FileInvalid, Problem, read_document, validate


class AgentMqttConfig(BrokerConfig):
    """The broker, as the site file's ``mqtt`` block names it (the agent needs no more of it);
    ``credentials`` names an entry of the agent's own secrets file, ``client_id`` defaults to
    wattshift-agent-<host>."""

    prefix: Topic = "wattshift/agents"  # the site file's mqtt.agents.prefix
    reconnect_max_seconds: float = Field(default=30.0, gt=0, le=3600)
    # Obey commands even on a broker that lets anyone in (by default every command is then
    # refused, and the cards fall to the safe cap once the controller has been silent).
    allow_anonymous_broker: bool = False

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return check_topic(value, what="prefix")


class AgentConfig(Strict):
    host: Name  # this host's name on the site: the node's ``host`` (or ``name``) in the site file
    mqtt: AgentMqttConfig
    # "all", or the indices or UUIDs of the cards this agent manages.
    gpus: str | Annotated[list[str], Field(min_length=1, max_length=MAX_GPU_INDEX + 1)] = "all"
    read_interval_seconds: float = Field(default=2.0, ge=0.1, le=600)
    # Readings go out at most this often (retained); a cap's confirming reading is never delayed more.
    publish_min_interval_seconds: float = Field(default=1.0, ge=0.05, le=600)
    # No command or heartbeat from the controller for this long: the cards move to ``safe_cap_watts``
    # (per card; None: each card's lowest limit), never up. Until then they keep their last cap.
    controller_silence_seconds: float = Field(default=120.0, ge=1, le=86_400)
    safe_cap_watts: float | None = Field(default=None, gt=0, le=5000)
    # A command whose sent_at is further than this from our clock is refused (old, replayed, skewed).
    max_command_age_seconds: float = Field(default=60.0, gt=0, le=3600)
    call_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    # This host's own jobs (docker, systemd units, ...), as the site file's ``jobs.runner: command``:
    # the agent reports them with its readings and moves them when the controller says.
    jobs: CommandRunnerConfig | None = None
    secrets_file: Path | None = None
    credentials: dict[str, Credentials] = Field(default={}, exclude=True, repr=False, validate_default=True)

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, str) and value != "all":
            raise ValueError(f"expected 'all' or a list of indices or UUIDs (got {value!r})")
        return value

    @field_validator("credentials")
    @classmethod
    def _named(cls, value: dict[str, Credentials], info: object) -> dict[str, Credentials]:
        mqtt = getattr(info, "data", {}).get("mqtt")
        if mqtt is not None and mqtt.credentials is not None and mqtt.credentials not in value:
            where = getattr(info, "data", {}).get("secrets_file") or "none given"
            raise ValueError(f"mqtt.credentials {mqtt.credentials!r} is not in the secrets file ({where})")
        return value

    def selection(self) -> str | list[int | str]:
        if isinstance(self.gpus, list):
            return [int(g) if g.isdigit() else g for g in self.gpus]
        return "all"

    def login(self) -> Login | None:
        name = self.mqtt.credentials
        if name is None:
            return None
        entry = self.credentials[name]
        return Login(username=entry.username, password=SecretStr(entry.password.get_secret_value()))

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"wattshift-agent-{self.host}"


def load_agent(path: Path, environ: Mapping[str, str] | None = None) -> AgentConfig:
    """The agent's file with the secrets it names; :class:`FileInvalid` names every problem."""
    environ = os.environ if environ is None else environ
    document = read_document(path)
    raw = document.data if isinstance(document.data, dict) else {}
    if "credentials" in raw:
        raise FileInvalid([Problem(str(path), document.lines.get(("credentials",)), "credentials",
                                   "passwords go in the secrets file (secrets_file), never in the agent file")])
    secrets_file = raw.get("secrets_file")
    if isinstance(secrets_file, str) and not Path(secrets_file).is_absolute():
        secrets_file = str(path.parent / secrets_file)
    secrets = load_secrets(Path(secrets_file) if isinstance(secrets_file, str) else None, environ)
    return validate(document, AgentConfig, overrides={"credentials": secrets})
