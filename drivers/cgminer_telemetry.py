"""Telemetry in one round trip: the firmware's own CGMiner-compatible API on TCP 4028, asked
one multicommand per poll, read into the numbers a poll needs and nothing else.

Why not pyasic's ``get_data`` (benchmarks/telemetry_cycle.py measures both, side by side): on
Braiins OS+ pyasic 0.79 opens a fresh HTTP/2 channel for each of four gRPC calls per poll and
spends most of its CPU building betterproto messages (``GetHashboards`` alone is half of it),
about 12 ms per miner; LuxOS's one multicommand costs about 1 ms, most of it in building
pyasic's pydantic ``MinerData``. The same numbers come over port 4028 in one multicommand
(``summary+devs+temps+fans+tunerstatus`` on BOSminer) for about a tenth of that.

This is telemetry only. Every command, and every read-back that confirms one, stays on pyasic
(drivers/pyasic_miner.py). Each parser reads the keys pyasic's own parsers of the same API read
(named at each parser), so a lean reading equals the one ``get_data`` gives for the same miner,
and tests/drivers/test_cgminer_telemetry.py compares the two over real sockets.

A firmware that answers but not as the parser expects (an error ``STATUS``, a multicommand it
refuses, a key missing, bytes that are not plain JSON) raises :class:`NotLean`; the driver then
reads that miner through pyasic's ``get_data`` from then on. Connection failures and timeouts
propagate as ``OSError``/``TimeoutError`` for the driver's own deadline and diagnosis.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .pyasic_failures import exchange

# A BOSminer answer to the five commands is about 4 KB; a firmware that sends more than this is
# not answering what was asked.
MAX_REPLY_BYTES = 256 * 1024
_OK = ("S", "I")  # CGMiner STATUS codes of a good answer (success, informational)
MHS_PER_THS = 1e6
GHS_PER_THS = 1e3

Sections = Mapping[str, Mapping[str, Any]]


class NotLean(Exception):
    """The firmware answered, but not in a way the lean path reads; pyasic's path will."""


@dataclass(frozen=True, slots=True)
class Telemetry:
    """One poll, in the driver's units. ``None`` means the firmware did not say."""

    watts: float | None
    limit_watts: float | None
    hashrate_ths: float | None
    temperatures_c: tuple[float, ...] = ()
    fans_rpm: tuple[int, ...] = ()
    errors: tuple[str, ...] = ()
    is_mining: bool | None = None


@dataclass(frozen=True, slots=True)
class LeanTelemetry:
    """The multicommand one firmware answers, and how its sections become :class:`Telemetry`."""

    name: str  # "BOSminer", for messages
    commands: tuple[str, ...]
    parse: Callable[[Sections], Telemetry]  # raises LookupError/TypeError/ValueError on a bad shape

    @property
    def request(self) -> bytes:
        return json.dumps({"command": "+".join(self.commands)}).encode()

    async def read(self, host: str, port: int) -> Telemetry:
        """One round trip; NotLean where the answer is not what :attr:`parse` reads."""
        raw = await exchange(host, port, self.request, max_bytes=MAX_REPLY_BYTES)
        return self.decode(raw)

    def decode(self, raw: bytes) -> Telemetry:
        sections = split_sections(raw, self.commands)
        try:
            return self.parse(sections)
        except (LookupError, TypeError, ValueError, AttributeError) as err:
            problem = f"{type(err).__name__}: {err}"
        raise NotLean(f"{self.name} telemetry lacks what it should hold ({problem})")


def split_sections(raw: bytes, commands: Sequence[str]) -> dict[str, Mapping[str, Any]]:
    """The answer of each command of a multicommand, each checked for a good ``STATUS``.

    CGMiner answers ``a+b`` as ``{"a": [{"STATUS": [...], ...}], "b": [...]}``; a firmware that
    does not take multicommands answers with one error ``STATUS`` instead.
    """
    if not raw:
        raise NotLean("the firmware closed the connection without a word")
    if len(raw) > MAX_REPLY_BYTES:
        raise NotLean(f"the answer is over {MAX_REPLY_BYTES} bytes")
    try:
        decoded = json.loads(raw.rstrip(b"\x00"))  # some CGMiner builds end with a NUL
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise NotLean(f"the answer is not plain JSON ({err})") from None
    if not isinstance(decoded, dict):
        raise NotLean(f"the answer is a JSON {type(decoded).__name__}, not an object")
    if "STATUS" in decoded:
        raise NotLean(f"the firmware refused the multicommand: {_status_text(decoded)}")
    sections: dict[str, Mapping[str, Any]] = {}
    for command in commands:
        answers = decoded.get(command)
        if not isinstance(answers, list) or not answers or not isinstance(answers[0], dict):
            raise NotLean(f"no answer to {command!r} in the multicommand")
        answer = answers[0]
        state = _status_of(answer)
        if state not in _OK:
            raise NotLean(f"{command!r} answered STATUS {state!r}: {_status_text(answer)}")
        sections[command] = answer
    return sections


def _status_of(answer: Mapping[str, Any]) -> object:
    status = answer.get("STATUS")
    if isinstance(status, list) and status and isinstance(status[0], dict):
        return status[0].get("STATUS")
    return None


def _status_text(answer: Mapping[str, Any]) -> str:
    status = answer.get("STATUS")
    first = status[0] if isinstance(status, list) and status and isinstance(status[0], dict) else {}
    return str(first.get("Msg", "no message"))[:120]


# -- Braiins OS+ (BOSminer's API) -----------------------------------------------------------------
# The keys pyasic reads from this API in pyasic.miners.backends.braiins_os.BOSMiner (_get_wattage,
# _get_wattage_limit, _get_hashboards, _get_fans, _get_errors) and BOSer._is_mining.

# TunerChainStatus states of a healthy chain (pyasic's BOSer/BOSMiner _get_errors).
_TUNER_HEALTHY = ("Stable", "Testing performance profile", "Tuning individual chips")


def parse_bosminer(sections: Sections) -> Telemetry:
    tuner = sections["tunerstatus"]["TUNERSTATUS"][0]
    devs = sections["devs"]["DEVS"]
    if devs:
        # Per chain, the 5 s window, as pyasic's gRPC path sums the boards' last5S.
        hashrate = sum(float(dev["MHS 5s"]) for dev in devs) / MHS_PER_THS
    else:
        hashrate = float(sections["summary"]["SUMMARY"][0]["MHS 1m"]) / MHS_PER_THS
    # Whole degrees, as pyasic's BOSer keeps them (int() of the chip's, else the board's).
    temps = tuple(
        float(int(t["Chip"] if t.get("Chip") is not None else t["Board"])) for t in sections["temps"]["TEMPS"]
    )
    return Telemetry(
        watts=_number(tuner.get("ApproximateMinerPowerConsumption")),
        limit_watts=_number(tuner.get("PowerLimit")),
        hashrate_ths=hashrate,
        temperatures_c=temps,
        fans_rpm=tuple(int(fan["RPM"]) for fan in sections["fans"]["FANS"]),
        errors=_tuner_errors(tuner.get("TunerChainStatus") or []),
        is_mining=any(float(dev["MHS 5s"]) > 0 for dev in devs),
    )


def _tuner_errors(chains: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """Chains the tuner reports as not healthy, worded as pyasic's BraiinsOSError words them."""
    if not chains:
        return ()
    # S9s number their chains 6-8; every later model from 0 (pyasic's offset rule).
    offset = 6 if int(chains[0]["HashchainIndex"]) in (6, 7, 8) else 0
    errors = []
    for chain in chains:
        state = str(chain["Status"])
        if state in _TUNER_HEALTHY:
            continue
        text = state.split(" {")[0]
        errors.append(f"Slot {int(chain['HashchainIndex']) - offset} {text[:1].lower()}{text[1:]}")
    return tuple(errors)


BOSMINER = LeanTelemetry("BOSminer", ("summary", "devs", "temps", "fans", "tunerstatus"), parse_bosminer)


# -- LuxOS -----------------------------------------------------------------------------------------
# The keys pyasic reads in pyasic.miners.backends.luxminer.LUXMiner (_get_wattage, _get_hashboards,
# _get_fans) and MiningModePreset.get_active_preset_from_luxos (the limit: the active profile's
# watts). pyasic's LUXMiner._get_hashrate returns None, so its hashrate is the boards' sum.


def parse_luxos(sections: Sections) -> Telemetry:
    chains = sections["stats"]["STATS"][1]
    boards = sorted(int(key.removeprefix("chain_rate")) for key in chains if key.startswith("chain_rate"))
    active = sections["config"]["CONFIG"][0]["Profile"]
    limit = None
    for profile in sections["profiles"]["PROFILES"]:
        if profile["Profile Name"] == active:
            limit = _number(profile.get("Watts"))
    temps = []
    for n in boards:
        chip = _sensors(chains.get(f"temp_chip{n}"))
        pcb = _sensors(chains.get(f"temp_pcb{n}"))
        # pyasic: the chips' first and fourth sensors, else the PCB's second and third.
        if len(chip) >= 4:
            temps.append((chip[0] + chip[3]) / 2)
        elif len(pcb) >= 3:
            temps.append((pcb[1] + pcb[2]) / 2)
    return Telemetry(
        watts=_number(sections["power"]["POWER"][0].get("Watts")),
        limit_watts=limit,
        hashrate_ths=sum(float(chains[f"chain_rate{n}"]) for n in boards) / GHS_PER_THS if boards else None,
        temperatures_c=tuple(temps),
        fans_rpm=tuple(int(fan["RPM"]) for fan in sections["fans"]["FANS"]),
    )


def _sensors(text: object) -> list[int]:
    """LuxOS prints a chain's four sensors as "58-61-61-64"; a 0 is a sensor that reads nothing."""
    if not isinstance(text, str):
        return []
    return [value for value in (int(part) for part in text.split("-")) if value != 0]


LUXOS = LeanTelemetry("LuxOS", ("power", "stats", "fans", "config", "profiles"), parse_luxos)


def _number(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"{value!r} is not a number")
    return float(value)
