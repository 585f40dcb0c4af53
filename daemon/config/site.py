"""The site file: budget, circuit tree, miners, prices, policy. Validated by pydantic.

Operators write power in kW (the unit on their contracts and breakers); inside the code every
power is in watts, converted here once. Credentials never live in the site file: it names an
entry of the secrets file (or the environment), and the value is held as a ``SecretStr`` so it is
never logged, journaled or exported.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
)

from wattshift.model.fields import SITE_CIRCUIT, Kilowatts, Name, Strict, one_or_many
from wattshift.policies.catalog import module_name

from .gpu import GpuNodeConfig, JobsConfig
from .mqtt import MqttConfig
from .price import PricesConfig
from .switching import SwitchingOverride
from .yamlfile import (
    FileInvalid,
    Location,
    Problem,
    ProblemsAt,
    dotted,
    read_document,
    validate,
)

MAX_MINERS_PER_RANGE = 65_536
MAX_MINERS = 100_000  # per site: counted before any range is expanded
SECRET_ENV_PREFIX = "WATTSHIFT_SECRET_"

log = logging.getLogger("wattshift.config")

class CircuitConfig(Strict):
    """A feeder, transformer, container or PDU: a limit that its devices share."""

    name: Name
    limit_kw: Kilowatts
    circuits: list[CircuitConfig] = Field(default_factory=list)

    @property
    def limit_watts(self) -> float:
        return self.limit_kw * 1000.0

    @field_validator("circuits")
    @classmethod
    def _within_parent(cls, value: list[CircuitConfig], info: ValidationInfo) -> list[CircuitConfig]:
        """A circuit carries no more than the one feeding it: a 90 kW PDU under a 60 kW feeder is
        a typo (the breaker upstream trips first). Children adding up to more is normal: see
        :meth:`SiteLimits.notices`."""
        limit = info.data.get("limit_kw")
        if limit is None:
            return value
        above = [(("circuits", index, "limit_kw"),
                  f"{child.limit_kw:g} kW is above the {limit:g} kW of {info.data.get('name', 'its parent')}"
                  ) for index, child in enumerate(value) if child.limit_kw > limit]
        if above:
            raise ProblemsAt(above, field="circuits")
        return value

    def walk(self, parent: str) -> Iterator[tuple[CircuitConfig, str]]:
        yield self, parent
        for child in self.circuits:
            yield from child.walk(self.name)

    def located(self, loc: Location) -> Iterator[tuple[Location, CircuitConfig]]:
        """This circuit and those below it, each with its key path in the file."""
        yield loc, self
        for index, child in enumerate(self.circuits):
            yield from child.located((*loc, "circuits", index))


Firmware = Literal["auto", "braiins", "luxos", "whatsminer", "vnish", "antminer"]


class MinerGroup(Strict):
    """Miners on one circuit, by address, address range (a-b) or network (CIDR)."""

    circuit: Name = SITE_CIRCUIT
    addresses: list[str] = Field(min_length=1)
    firmware: Firmware = "auto"
    model: str | None = None
    credentials: str | None = None
    max_kw: Kilowatts | None = None  # nameplate worst case, where the model table has none
    switching: SwitchingOverride | None = None  # boot, wear, min up/down: the model table's otherwise

    @field_validator("addresses", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return one_or_many(value)

    @field_validator("addresses")
    @classmethod
    def _parseable(cls, value: list[str]) -> list[str]:
        bad = []
        for index, entry in enumerate(value):
            try:
                address_count(entry)
            except ValueError as err:  # names the entry
                bad.append(((index,), str(err)))
        if bad:
            raise ProblemsAt(bad)
        return value

    def count(self) -> int:
        return sum(address_count(entry) for entry in self.addresses)

    def hosts(self) -> Iterator[str]:
        for entry in self.addresses:
            yield from expand_addresses(entry)


class PolicyChoice(Strict):
    name: str = "merit-order"
    options: dict[str, Any] = Field(default_factory=dict)


class DriverSettings(Strict):
    """How hard the daemon may push the network and how long it waits (DESIGN.md, pitfalls)."""

    call_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    concurrency: int = Field(default=100, ge=1, le=2000)
    confirm_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    # Telemetry polls split over this many worker processes, each owning every n-th miner
    # (drivers/telemetry_shards.py); 0 polls in the daemon's own process. Control stays in the
    # daemon either way. A whole number (not "2", not true): each is a Python process of its own.
    telemetry_workers: int = Field(default=0, ge=0, le=16, strict=True)


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
    circuits: list[CircuitConfig] = Field(default_factory=list)

    @property
    def budget_watts(self) -> float:
        return self.budget_kw * 1000.0

    @property
    def reserve_watts(self) -> float:
        return self.reserve_kw * 1000.0

    @field_validator("reserve_kw")
    @classmethod
    def _below_budget(cls, value: float, info: ValidationInfo) -> float:
        budget = info.data.get("budget_kw")
        if budget is not None and value >= budget:
            raise ValueError(f"must be below budget_kw ({budget:g})")
        return value

    @field_validator("circuits")
    @classmethod
    def _unique_names(cls, value: list[CircuitConfig]) -> list[CircuitConfig]:
        first: dict[str, str] = {SITE_CIRCUIT: "the root"}
        twice: list[tuple[Location, str]] = []
        for index, top in enumerate(value):
            for loc, circuit in top.located((index,)):
                if circuit.name in first:
                    reason = f"circuit names must be unique ('site' is the root): {circuit.name!r} is already "
                    twice.append(((*loc, "name"), reason + first[circuit.name]))
                else:
                    first[circuit.name] = dotted(("circuits", *loc))
        if twice:
            raise ProblemsAt(twice)
        return value

    def notices(self) -> Iterator[tuple[Location, str]]:
        """Circuits whose children add up to more than they carry: normal oversubscription (the
        daemon keeps the children's sum under the parent), worth knowing. The site itself is not
        checked: a contract below the sum of its transformers is the usual case."""
        for index, top in enumerate(self.circuits):
            for loc, circuit in top.located(("circuits", index)):
                total = sum(child.limit_kw for child in circuit.circuits)
                if total > circuit.limit_kw:
                    limit = f"{circuit.limit_kw:g} kW"
                    reason = (f"the circuits under {circuit.name} add up to {total:g} kW, above its {limit}: "
                              f"oversubscribed, so the daemon holds their sum to {limit}")
                    yield (*loc, "circuits"), reason

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
    miners: list[MinerGroup] = Field(default_factory=list)
    gpu_nodes: list[GpuNodeConfig] = Field(default_factory=list)
    prices: PricesConfig = PricesConfig()  # before jobs, whose markets it prices
    jobs: JobsConfig = JobsConfig()
    policy: PolicyChoice = PolicyChoice()
    # A policy file (relative to the site file) replaces ``policy``; it reloads on change and on
    # SIGHUP. A shadow policy file runs beside the live one and only says what it would do.
    policy_file: Path | None = None
    shadow_policy_file: Path | None = None
    # The MQTT ``policy`` command picks a file by name from here only (default: the folder of
    # policy_file); policy_modules are the only modules ``package.module:factory`` may import.
    policy_dir: Path | None = None
    policy_modules: list[Annotated[str, AfterValidator(module_name)]] = Field(default_factory=list)
    drivers: DriverSettings = DriverSettings()
    mqtt: MqttConfig | None = None
    state_dir: Path = Path("/var/lib/wattshift")
    metrics_listen: str = "127.0.0.1:9464"
    secrets_file: Path | None = None
    # Filled from the secrets file, never from the site file itself.
    credentials: dict[str, Credentials] = Field(default={}, exclude=True, repr=False, validate_default=True)

    @field_validator("metrics_listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            raise ValueError("expected HOST:PORT, for example 127.0.0.1:9464")
        return value

    @field_validator("miners")
    @classmethod
    def _not_too_many(cls, value: list[MinerGroup]) -> list[MinerGroup]:
        """Counted before any range is expanded (the cross-checks below list every address)."""
        total = sum(group.count() for group in value)
        if total > MAX_MINERS:
            raise ValueError(f"{total:,} miners: more than {MAX_MINERS:,} on one site")
        return value

    @field_validator("credentials")
    @classmethod
    def _consistent(cls, value: dict[str, Credentials], info: ValidationInfo) -> dict[str, Credentials]:
        """Keys checked against each other, each problem at its own key. It runs on the last field
        (always: ``validate_default``), so it sees every other field that is valid itself, and
        one wrong key does not hide the problems of another."""
        data = info.data
        problems: list[tuple[Location, str]] = []
        if "circuits" in data:
            problems += _off_the_tree("miners", data.get("miners", []), data["circuits"])
            problems += _off_the_tree("gpu_nodes", data.get("gpu_nodes", []), data["circuits"])
        problems += _listed_twice(data.get("miners", []), data.get("gpu_nodes", []))
        if "jobs" in data and "prices" in data:
            problems += _unpriced(data["jobs"], data["prices"])
        if data.get("policy_file") is not None and data.get("policy", PolicyChoice()) != PolicyChoice():
            problems.append((("policy_file",), "give either policy (inline) or policy_file, not both"))
        problems += _missing_secrets(data, value)
        problems += _agents_without_broker(data)
        if problems:
            raise ProblemsAt(problems[:MAX_LISTED], field="credentials")
        return value


MAX_LISTED = 100  # problems one check reports (a /16 listed twice is 65,536 of the same mistake)


def _off_the_tree(key: str, devices: list[Any], tops: list[CircuitConfig]) -> list[tuple[Location, str]]:
    """Devices whose ``circuit`` the tree does not have."""
    names = [SITE_CIRCUIT, *(c.name for top in tops for c, _ in top.walk(SITE_CIRCUIT))]
    return [((key, index, "circuit"), f"{device.circuit!r} is not a circuit (known: {names})")
            for index, device in enumerate(devices) if device.circuit not in names]


def _listed_twice(miners: list[MinerGroup], gpu_nodes: list[GpuNodeConfig]) -> list[tuple[Location, str]]:
    """Every device listed once, under a name nothing else has."""
    seen: dict[str, str] = {}
    twice: list[tuple[Location, str]] = []
    devices = [(("miners", i, "addresses"), host) for i, group in enumerate(miners) for host in group.hosts()]
    devices += [(("gpu_nodes", i, "name"), node.name) for i, node in enumerate(gpu_nodes)]
    for loc, name in devices:
        if name in seen:
            twice.append((loc, f"{name} is already listed as {seen[name]}"))
        else:
            seen[name] = dotted(loc[:2])
    return twice


def _unpriced(jobs: JobsConfig, prices: PricesConfig) -> list[tuple[Location, str]]:
    rates = prices.gpu_rates_usd_per_gpu_hour
    return [(("jobs", "classes", index, "market"),
             f"{job_class.market!r} has no rate in prices.gpu_rates_usd_per_gpu_hour "
             f"(known: {sorted(rates) or 'none'})")
            for index, job_class in enumerate(jobs.classes)
            if job_class.market is not None and job_class.market not in rates]


def _agents_without_broker(data: Mapping[str, Any]) -> list[tuple[Location, str]]:
    """A node driven through its host's agent needs the broker the agents talk on, and one agent
    host drives one node."""
    problems: list[tuple[Location, str]] = []
    hosts: dict[str, str] = {}
    for i, node in enumerate(data.get("gpu_nodes", [])):
        if node.driver != "agent":
            continue
        if data.get("mqtt") is None:
            problems.append((("gpu_nodes", i, "driver"), "driver: agent needs the mqtt block (the agents' broker)"))
        if node.agent_host in hosts:
            problems.append((("gpu_nodes", i, "host"), f"{node.agent_host!r} already drives node "
                                                       f"{hosts[node.agent_host]!r}"))
        hosts[node.agent_host] = node.name
    return problems


def _missing_secrets(data: Mapping[str, Any], credentials: Mapping[str, Credentials]) -> list[tuple[Location, str]]:
    """Every credential named is in the secrets file (or the environment)."""
    named: dict[Location, str] = {("miners", i, "credentials"): g.credentials
                                  for i, g in enumerate(data.get("miners", [])) if g.credentials}
    mqtt = data.get("mqtt")
    if mqtt is not None and mqtt.credentials:
        named["mqtt", "credentials"] = mqtt.credentials
    if "prices" in data:
        named |= {tuple(key.split(".")): name for key, name in data["prices"].secret_names().items()}
    where = data.get("secrets_file") or "none given"
    return [(key, f"{name!r} is not in the secrets file ({where})") for key, name in named.items()
            if name not in credentials]


def expand_addresses(entry: str) -> Iterator[str]:
    """``10.0.0.5``, ``10.0.0.5-10.0.0.40`` or ``10.0.0.0/28`` (hosts only) as addresses.

    An IPv4 range skips the network (.0) and broadcast (.255) address of every /24 it crosses:
    no miner sits there, and a phantom miner is counted at its maximum. Its own first and last
    address are kept whatever they are: the operator wrote them.
    """
    first, count = _span(entry)
    if count == 1:
        return iter([str(first)])
    if "/" in entry and count > 2:  # a network's hosts: neither its network nor broadcast address
        first, count = first + 1, count - 2
    elif "-" in entry and first.version == 4:
        last = count - 1
        return (str(first + n) for n in range(count)
                if n in (0, last) or (int(first) + n) % 256 not in (0, 255))
    return (str(first + n) for n in range(count))


def address_count(entry: str) -> int:
    """How many addresses ``entry`` names, without listing them; ValueError if it is not one."""
    first, count = _span(entry)
    if "/" in entry:
        return count - 2 if count > 2 else count
    if "-" in entry and first.version == 4 and count > 2:
        inside = (int(first) + 1, int(first) + count - 2)  # what the operator did not write
        return count - sum(_every(inside, r) for r in (0, 255))
    return count


def _every(span: tuple[int, int], remainder: int) -> int:
    """How many integers in ``span`` (inclusive) leave ``remainder`` divided by 256."""
    low, high = span
    return (high - remainder) // 256 - (low - 1 - remainder) // 256


def _span(entry: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """The first address and how many follow, at most :data:`MAX_MINERS_PER_RANGE`."""
    try:
        if "/" in entry:
            network = ipaddress.ip_network(entry.strip(), strict=False)
            first, count = network.network_address, network.num_addresses
        elif "-" in entry:
            first_text, last_text = (part.strip() for part in entry.split("-", 1))
            first, last = ipaddress.ip_address(first_text), ipaddress.ip_address(last_text)
            if first.version != last.version:
                raise ValueError("the range mixes IPv4 and IPv6")
            if int(last) < int(first):
                raise ValueError("the range ends before it starts")
            count = int(last) - int(first) + 1
        else:
            first, count = ipaddress.ip_address(entry.strip()), 1
        if count > MAX_MINERS_PER_RANGE:
            raise ValueError(f"{count:,} addresses, more than {MAX_MINERS_PER_RANGE:,} in one entry")
    except ValueError as err:
        raise ValueError(f"address {entry!r}: {err}") from None
    return first, count


def load_secrets(path: Path | None, environ: Mapping[str, str]) -> dict[str, Credentials]:
    """Credentials by name: the secrets file ``{name: {username, password}}``, then the
    environment, where ``WATTSHIFT_SECRET_<NAME>=password`` adds or overrides one."""
    secrets: dict[str, Credentials] = {}
    if path is not None:
        # Errors name the file, the line and the key, never a value: it may be the secret itself.
        data = read_document(path).data or {}
        _warn_if_exposed(path)
        if not isinstance(data, dict):
            raise FileInvalid([Problem(str(path), 1, "", "expected a mapping of credential names")])
        for name, entry in data.items():
            if not isinstance(entry, dict) or "password" not in entry:
                raise FileInvalid([Problem(str(path), None, str(name), "expected {username, password}")])
            secrets[str(name)] = Credentials(username=str(entry.get("username", "root")),
                                             password=SecretStr(str(entry["password"])))
    for key, value in environ.items():
        if key.startswith(SECRET_ENV_PREFIX):
            name = key.removeprefix(SECRET_ENV_PREFIX).lower()
            username = secrets[name].username if name in secrets else "root"
            secrets[name] = Credentials(username=username, password=SecretStr(value))
    return secrets


def _warn_if_exposed(path: Path) -> None:
    """Say so when others may read the passwords, as ssh does of a private key (it refuses one;
    a site controller that stops over a mode would strand the site, so this only warns)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return  # it was just read; a file gone since is not this check's business
    if mode & 0o077:
        log.warning("%s: the secrets file is readable by group or others (mode %04o): "
                    "chmod 600 %s (or pass it with systemd's LoadCredential=)", path, mode, path)


def load_site(path: Path, environ: Mapping[str, str] | None = None) -> SiteConfig:
    """Load and validate a site file with the secrets it names; raises :class:`FileInvalid`.

    The file is read and parsed once; nothing is started or written, whatever its content."""
    environ = os.environ if environ is None else environ
    document = read_document(path)
    raw = document.data if isinstance(document.data, dict) else {}
    if "credentials" in raw:
        raise FileInvalid([Problem(str(path), document.lines.get(("credentials",)), "credentials",
                                   "passwords go in the secrets file (secrets_file) or WATTSHIFT_SECRET_<NAME>, "
                                   "never in the site file")])
    secrets_file = raw.get("secrets_file")
    if isinstance(secrets_file, str) and not Path(secrets_file).is_absolute():
        secrets_file = str(path.parent / secrets_file)
    secrets = load_secrets(Path(secrets_file) if isinstance(secrets_file, str) else None, environ)
    return validate(document, SiteConfig, overrides={"credentials": secrets})
