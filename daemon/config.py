"""The site file: budget, circuit tree, miners, prices, policy. Validated by pydantic.

Operators write power in kW (the unit on their contracts and breakers); inside the code every
power is in watts, converted here once. Credentials never live in the site file: it names an
entry of the secrets file (or the environment), and the value is held as a ``SecretStr`` so it is
never logged, journaled or exported.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from wattshift.policies.base import module_name

from .config_types import SITE_CIRCUIT, Kilowatts, Name, Strict, one_or_many
from .gpu_config import GpuNodeConfig, JobsConfig
from .mqtt_config import MqttConfig
from .price_config import PricesConfig
from .yamlfile import FileInvalid, Problem, load_model

MAX_MINERS_PER_RANGE = 65_536
SECRET_ENV_PREFIX = "WATTSHIFT_SECRET_"

class CircuitConfig(Strict):
    """A feeder, transformer, container or PDU: a limit that its devices share."""

    name: Name
    limit_kw: Kilowatts
    circuits: list[CircuitConfig] = []

    @property
    def limit_watts(self) -> float:
        return self.limit_kw * 1000.0

    def walk(self, parent: str) -> Iterator[tuple[CircuitConfig, str]]:
        yield self, parent
        for child in self.circuits:
            yield from child.walk(self.name)


Firmware = Literal["auto", "braiins", "luxos", "whatsminer", "vnish", "antminer"]


class MinerGroup(Strict):
    """Miners on one circuit, by address, address range (a-b) or network (CIDR)."""

    circuit: Name = SITE_CIRCUIT
    addresses: list[str] = Field(min_length=1)
    firmware: Firmware = "auto"
    model: str | None = None
    credentials: str | None = None
    max_kw: Kilowatts | None = None  # nameplate worst case, where the model table has none

    @field_validator("addresses", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return one_or_many(value)

    @field_validator("addresses")
    @classmethod
    def _parseable(cls, value: list[str]) -> list[str]:
        for entry in value:
            expand_addresses(entry)  # raises ValueError with the entry in the message
        return value

    def hosts(self) -> Iterator[str]:
        for entry in self.addresses:
            yield from expand_addresses(entry)


class PolicyChoice(Strict):
    name: str = "merit-order"
    options: dict[str, Any] = {}


class DriverSettings(Strict):
    """How hard the daemon may push the network and how long it waits (DESIGN.md, pitfalls)."""

    call_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    concurrency: int = Field(default=100, ge=1, le=2000)
    confirm_timeout_seconds: float = Field(default=30.0, gt=0, le=600)


class Credentials(Strict):
    username: str = "root"
    password: SecretStr


class SiteLimits(Strict):
    """What any description of a site has: its name, its contract, its tick and its circuit tree.
    The site file extends it with devices; the back-test's compact site file with device counts."""

    name: Name
    budget_kw: Kilowatts
    reserve_kw: float = Field(default=0.0, ge=0)
    tick_seconds: float = Field(default=15.0, ge=1, le=3600)
    circuits: list[CircuitConfig] = []

    @property
    def budget_watts(self) -> float:
        return self.budget_kw * 1000.0

    @property
    def reserve_watts(self) -> float:
        return self.reserve_kw * 1000.0

    @model_validator(mode="after")
    def _tree(self) -> SiteLimits:
        if self.reserve_kw >= self.budget_kw:
            raise ValueError(f"reserve_kw ({self.reserve_kw}) must be below budget_kw ({self.budget_kw})")
        names = [SITE_CIRCUIT]
        for top in self.circuits:
            names += [c.name for c, _ in top.walk(SITE_CIRCUIT)]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"circuit names must be unique ('site' is the root): {duplicates}")
        return self

    def on_a_circuit(self, key: str, circuit: str) -> None:
        """Refuse a device placed on a circuit the tree does not have."""
        names = list(self.circuit_parents())
        if circuit not in names:
            raise ValueError(f"{key}.circuit {circuit!r} is not a circuit (known: {names})")

    def circuit_parents(self) -> dict[str, str | None]:
        """Every circuit's parent; the site is the root."""
        parents: dict[str, str | None] = {SITE_CIRCUIT: None}
        for top in self.circuits:
            parents.update({c.name: parent for c, parent in top.walk(SITE_CIRCUIT)})
        return parents

    def circuit_limits(self) -> dict[str, float]:
        limits = {SITE_CIRCUIT: self.budget_watts}
        for top in self.circuits:
            limits.update({c.name: c.limit_watts for c, _ in top.walk(SITE_CIRCUIT)})
        return limits


class SiteConfig(SiteLimits):
    miners: list[MinerGroup] = []
    gpu_nodes: list[GpuNodeConfig] = []
    jobs: JobsConfig = JobsConfig()
    prices: PricesConfig = PricesConfig()
    policy: PolicyChoice = PolicyChoice()
    # A policy file (relative to the site file) replaces ``policy``; it reloads on change and on
    # SIGHUP. A shadow policy file runs beside the live one and only says what it would do.
    policy_file: Path | None = None
    shadow_policy_file: Path | None = None
    # The MQTT ``policy`` command picks a file by name from here only (default: the folder of
    # policy_file); policy_modules are the only modules ``package.module:factory`` may import.
    policy_dir: Path | None = None
    policy_modules: list[Annotated[str, AfterValidator(module_name)]] = []
    drivers: DriverSettings = DriverSettings()
    mqtt: MqttConfig | None = None
    state_dir: Path = Path("/var/lib/wattshift")
    metrics_listen: str = "127.0.0.1:9464"
    secrets_file: Path | None = None
    # Filled from the secrets file, never from the site file itself.
    credentials: dict[str, Credentials] = Field(default={}, exclude=True, repr=False)

    @field_validator("metrics_listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("expected HOST:PORT, for example 127.0.0.1:9464")
        return value

    @model_validator(mode="after")
    def _devices(self) -> SiteConfig:
        """Every device on a known circuit, listed once, under a name nothing else has."""
        seen: dict[str, str] = {}

        def once(name: str, key: str) -> None:
            if name in seen:
                raise ValueError(f"{key}: {name} is already listed as {seen[name]}")
            seen[name] = key

        for index, group in enumerate(self.miners):
            self.on_a_circuit(f"miners[{index}]", group.circuit)
            for host in group.hosts():
                once(host, f"miners[{index}]")
        for index, node in enumerate(self.gpu_nodes):
            self.on_a_circuit(f"gpu_nodes[{index}]", node.circuit)
            once(node.name, f"gpu_nodes[{index}]")
        if self.policy_file is not None and self.policy != PolicyChoice():
            raise ValueError("give either policy (inline) or policy_file, not both")
        for index, job_class in enumerate(self.jobs.classes):
            if job_class.market is not None and job_class.market not in self.prices.gpu_rates_usd_per_gpu_hour:
                known = sorted(self.prices.gpu_rates_usd_per_gpu_hour) or "none"
                raise ValueError(f"jobs.classes[{index}].market {job_class.market!r} has no rate in "
                                 f"prices.gpu_rates_usd_per_gpu_hour (known: {known})")
        return self

    @model_validator(mode="after")
    def _secrets(self) -> SiteConfig:
        """Every credential named is in the secrets file (or the environment)."""
        named = {f"miners[{i}].credentials": g.credentials for i, g in enumerate(self.miners) if g.credentials}
        if self.mqtt is not None and self.mqtt.credentials:
            named["mqtt.credentials"] = self.mqtt.credentials
        named |= self.prices.secret_names()
        for key, name in named.items():
            if name not in self.credentials:
                raise ValueError(f"{key} {name!r} is not in the secrets file ({self.secrets_file or 'none given'})")
        return self


def expand_addresses(entry: str) -> Iterator[str]:
    """``10.0.0.5``, ``10.0.0.5-10.0.0.40`` or ``10.0.0.0/28`` (hosts only) as addresses."""
    try:
        if "/" in entry:
            network = ipaddress.ip_network(entry, strict=False)
            hosts = list(network.hosts()) or [network.network_address]
        elif "-" in entry:
            first_text, last_text = (part.strip() for part in entry.split("-", 1))
            first, last = ipaddress.ip_address(first_text), ipaddress.ip_address(last_text)
            if int(last) < int(first):
                raise ValueError("the range ends before it starts")
            if int(last) - int(first) >= MAX_MINERS_PER_RANGE:
                raise ValueError(f"more than {MAX_MINERS_PER_RANGE} addresses")
            hosts = [ipaddress.ip_address(n) for n in range(int(first), int(last) + 1)]
        else:
            hosts = [ipaddress.ip_address(entry.strip())]
    except ValueError as err:
        raise ValueError(f"address {entry!r}: {err}") from None
    return (str(h) for h in hosts)


def load_secrets(path: Path | None, environ: Mapping[str, str]) -> dict[str, Credentials]:
    """Credentials by name: the secrets file ``{name: {username, password}}``, then the
    environment, where ``WATTSHIFT_SECRET_<NAME>=password`` adds or overrides one."""
    secrets: dict[str, Credentials] = {}
    if path is not None:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as err:
            raise FileInvalid([Problem(str(path), None, "", f"cannot read secrets: {err}")]) from None
        if not isinstance(data, dict):
            raise FileInvalid([Problem(str(path), 1, "", "expected a mapping of credential names")])
        for name, entry in data.items():
            if not isinstance(entry, dict) or "password" not in entry:
                # Never echo the entry: it may hold the secret itself.
                raise FileInvalid([Problem(str(path), None, str(name), "expected {username, password}")])
            secrets[str(name)] = Credentials(username=str(entry.get("username", "root")),
                                             password=SecretStr(str(entry["password"])))
    for key, value in environ.items():
        if key.startswith(SECRET_ENV_PREFIX):
            name = key.removeprefix(SECRET_ENV_PREFIX).lower()
            username = secrets[name].username if name in secrets else "root"
            secrets[name] = Credentials(username=username, password=SecretStr(value))
    return secrets


def load_site(path: Path, environ: Mapping[str, str] | None = None) -> SiteConfig:
    """Load and validate a site file with the secrets it names; raises :class:`FileInvalid`."""
    environ = os.environ if environ is None else environ
    raw = _peek(path)
    if "credentials" in raw:
        raise FileInvalid([Problem(str(path), None, "credentials", "passwords go in the secrets file "
                                   "(secrets_file) or WATTSHIFT_SECRET_<NAME>, never in the site file")])
    secrets_file = raw.get("secrets_file")
    if isinstance(secrets_file, str) and not Path(secrets_file).is_absolute():
        secrets_file = str(path.parent / secrets_file)
    secrets = load_secrets(Path(secrets_file) if isinstance(secrets_file, str) else None, environ)
    return load_model(path, SiteConfig, overrides={"credentials": secrets})


def _peek(path: Path) -> dict[str, Any]:
    """The raw mapping, to find the secrets file first; real errors come from load_model."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}
