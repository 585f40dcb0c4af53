"""Telemetry in one round trip per API: the firmware's own CGMiner-compatible API on TCP 4028
(one multicommand, or one command), read into the numbers a poll needs and nothing else.

Why not pyasic's ``get_data`` (benchmarks/telemetry_cycle.py measures both in the same run): on
Braiins OS+ pyasic 0.79 opens a fresh HTTP/2 channel for each of four gRPC calls per poll and
spends most of its CPU building betterproto messages (``GetHashboards`` alone is half of it);
on stock Antminer and VNish it builds a new httpx client (digest authentication on the former)
for each web request; on LuxOS and Whatsminer most of its CPU goes to pyasic's own command
checks (``dir()`` of the API class per multicommand) and pydantic's ``MinerData``. The numbers
a poll needs come over port 4028 for a fraction of that:

- Braiins OS+: ``summary+devs+temps+fans+tunerstatus`` (BOSminer);
- LuxOS: ``power+stats+fans+config+profiles``;
- Whatsminer API v2: ``summary+devs`` (btminer takes no ``get_*`` or ``status`` in one);
- stock Antminer: ``stats`` (bmminer; S19s refuse multicommands);
- VNish: bmminer's ``stats``, with its web API's ``summary`` and ``settings`` (its draw, state
  and preset are there only), at once over plain sockets on pyasic's own login token.

This is telemetry only. Every command, and every read-back that confirms one, stays on pyasic
(drivers/pyasic_miner.py), and so does everything a lean poll cannot tell (whether a miner that
hashes nothing is booting: the driver's ``state_query``/``lean_state``). Each parser reads the
keys pyasic's own parsers of the same API read (named at each parser), so a lean reading equals
the one ``get_data`` gives for the same miner; tests/drivers/test_cgminer_telemetry.py compares
the two over real sockets and runs the parsers on replies recorded from real firmware.

A firmware that answers but not as the parser expects (an error ``STATUS``, a multicommand it
refuses, a key missing, bytes that are not plain JSON) raises :class:`NotLean`; the driver then
reads that miner through pyasic's ``get_data``. Connection failures and timeouts propagate as
``OSError``/``TimeoutError`` for the driver's own deadline and diagnosis.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .pyasic_failures import exchange, probe_port

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


class LeanReader(Protocol):
    """What the driver asks of a lean path: one poll of a pyasic miner object."""

    @property
    def name(self) -> str: ...

    async def read(self, miner: Any) -> Telemetry: ...


@dataclass(frozen=True, slots=True)
class LeanTelemetry:
    """The multicommand one firmware answers, and how its sections become :class:`Telemetry`."""

    name: str  # "BOSminer", for messages
    commands: tuple[str, ...]
    parse: Callable[[Sections], Telemetry]  # raises LookupError/TypeError/ValueError on a bad shape

    @property
    def request(self) -> bytes:
        return _request(self.commands)

    async def read(self, miner: Any) -> Telemetry:
        """One round trip to the pyasic ``miner``'s CGMiner port; NotLean where the answer is
        not what :attr:`parse` reads."""
        raw = await exchange(str(miner.ip), probe_port(miner), self.request, max_bytes=MAX_REPLY_BYTES)
        return self.decode(raw)

    def decode(self, raw: bytes) -> Telemetry:
        return self._parsed(split_sections(raw, self.commands))

    def _parsed(self, sections: Sections) -> Telemetry:
        try:
            return self.parse(sections)
        except (LookupError, TypeError, ValueError, AttributeError) as err:
            problem = f"{type(err).__name__}: {err}"
        raise NotLean(f"{self.name} telemetry lacks what it should hold ({problem})")


async def _all(*calls: Awaitable[Any]) -> list[Any]:
    """Every call at once; the first failure is raised once all have ended, so no request is
    left running unwatched (plain gather would leave the others to finish on their own)."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def _request(commands: Sequence[str]) -> bytes:
    return json.dumps({"command": "+".join(commands)}).encode()


def split_sections(raw: bytes, commands: Sequence[str]) -> dict[str, Mapping[str, Any]]:
    """The answer of each command of a multicommand, each checked for a good ``STATUS``.

    CGMiner answers ``a+b`` as ``{"a": [{"STATUS": [...], ...}], "b": [...]}``; a firmware that
    does not take multicommands answers with one error ``STATUS`` instead. A single command is
    answered as that command's own object.
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
    if len(commands) == 1 and "STATUS" in decoded:
        decoded = {commands[0]: [decoded]}
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


# -- Whatsminer, API v2 (btminer's CGMiner API) ----------------------------------------------------
# The keys pyasic reads in pyasic.miners.backends.btminer.BTMiner (_get_wattage, _get_wattage_limit,
# _get_hashboards, _get_fans, _get_errors from the summary). "summary+devs" is the multicommand
# btminer takes (pyasic sends the get_* commands and status apart). Whether the miner is
# switched off (``status``) is asked only of a miner that hashes nothing (the driver's
# ``lean_state``): a miner that hashes is mining.


def parse_btminer(sections: Sections) -> Telemetry:
    summary = sections["summary"]["SUMMARY"][0]
    devs = sections["devs"]["DEVS"]
    # pyasic reads "MHS 1m"; some firmware sends only "MHS av" (asic-rs's capture of API v2),
    # where pyasic reads no hashrate at all.
    if devs:
        hashrate = sum(float(_mhs(dev)) for dev in devs) / MHS_PER_THS
    else:
        hashrate = float(_mhs(summary)) / MHS_PER_THS
    watts = _number(summary.get("Power"))
    codes = [summary.get(f"Error Code {i}") for i in range(int(summary.get("Error Code Count") or 0))]
    return Telemetry(
        watts=None if watts == -1 else watts,
        limit_watts=_number(summary.get("Power Limit")),
        hashrate_ths=hashrate,
        # pyasic rounds the chips' average, else the board's sensor.
        temperatures_c=tuple(
            float(round(dev["Chip Temp Avg"] if dev.get("Chip Temp Avg") is not None else dev["Temperature"]))
            for dev in devs
        ),
        fans_rpm=(int(summary.get("Fan Speed In", 0)), int(summary.get("Fan Speed Out", 0))),
        errors=tuple(whatsminer_error_text(int(code)) for code in codes if code),
        is_mining=hashrate > 0,
    )


def _mhs(row: Mapping[str, Any]) -> Any:
    return row["MHS 1m"] if "MHS 1m" in row else row["MHS av"]


def whatsminer_error_text(code: int) -> str:
    """The text pyasic gives a Whatsminer error code (its own table; imported only when a miner
    reports one, since importing pyasic configures logging: see pyasic_import)."""
    from .pyasic_import import import_pyasic

    import_pyasic()
    from pyasic.data.error_codes import WhatsminerError

    error = WhatsminerError(error_code=code)
    return str(error.error_message or error)


BTMINER = LeanTelemetry("btminer", ("summary", "devs"), parse_btminer)


# -- stock Antminer (bmminer's CGMiner API) --------------------------------------------------------
# pyasic's AntminerModern reads the boards from the web CGI's stats (digest authentication, about
# 4 ms of CPU a call); bmminer's own ``stats`` on 4028 holds the same boards (pyasic's BMMiner
# parser reads them there): ``chain_rate<n>`` in GH/s, ``temp2_<n>`` the chips and ``temp<n>``
# the PCB (as recorded from an S21 XP, asic-rs test data), ``fan<n>`` (pyasic's BMMiner._get_fans
# offset rule). Stock firmware reports no power. Its status lights (pyasic's errors) are on the
# web only and are not read here; its work mode (asleep or not) is asked of a miner that hashes
# nothing (the driver's ``lean_state``). One command, so no multicommand (which S19s refuse).


def parse_bmminer(sections: Sections) -> Telemetry:
    stats = sections["stats"]["STATS"][1]
    boards = _bmminer_boards(stats)
    rates = [float(stats[f"chain_rate{n}"] or 0) for n in boards]
    # Where the chains tell no rate, the total (the summary's "GHS 5s", which stats repeats).
    hashrate = (sum(rates) if any(rates) else float(stats.get("GHS 5s") or 0)) / GHS_PER_THS
    temps = []
    for n in boards:
        chip, pcb = stats.get(f"temp2_{n}"), stats.get(f"temp{n}")
        if chip:
            temps.append(float(chip))
        elif pcb:
            temps.append(float(pcb))
    return Telemetry(
        watts=None,
        limit_watts=None,
        hashrate_ths=hashrate,
        temperatures_c=tuple(temps),
        fans_rpm=_bmminer_fans(stats),
        is_mining=hashrate > 0,
    )


def _bmminer_boards(stats: Mapping[str, Any]) -> list[int]:
    return sorted(int(key.removeprefix("chain_rate")) for key in stats if key.startswith("chain_rate"))


def _bmminer_fans(stats: Mapping[str, Any]) -> tuple[int, ...]:
    """fan1-4, or fan5-8 where only those turn (pyasic's BMMiner._get_fans offset rule)."""
    low = any(stats.get(f"fan{n}") for n in range(1, 5))
    offset = 5 if not low and any(stats.get(f"fan{n}") for n in range(5, 9)) else 1
    return tuple(int(stats.get(f"fan{offset + i}", 0)) for i in range(int(stats.get("fan_num", 4))))


BMMINER = LeanTelemetry("bmminer", ("stats",), parse_bmminer)


# -- VNish: bmminer's stats on 4028 and its web API's summary and settings -------------------------
# pyasic's VNish backend reads the boards from bmminer's stats with its BMMiner parser (the
# chips' temperature it reports is ``temp<n>``), the draw, the state and failing chains from the
# web API's ``summary``, and the preset in force (the limit) from its ``settings``; it builds a
# new httpx client for each request (about 2.5 ms of CPU for one summary). Here the same three
# answers come at once over plain sockets. The login stays pyasic's: the token is the one its
# ``web.auth()`` obtained, asked again once when the miner no longer takes it.

MAX_HTTP_BYTES = 256 * 1024
_VNISH_STOPPED = ("stopped", "shutting-down", "failure")  # pyasic's VNish._is_mining


@dataclass(frozen=True, slots=True)
class VNishTelemetry:
    name: str = "VNish"

    async def read(self, miner: Any) -> Telemetry:
        host = str(miner.ip)
        if not miner.web.token:
            await _vnish_log_on(miner.web)
        stats_raw, summary, settings = await _all(
            exchange(host, probe_port(miner), _request(("stats",)), max_bytes=MAX_REPLY_BYTES),
            _vnish_get(miner, "summary"),
            _vnish_get(miner, "settings"),
        )
        sections = split_sections(stats_raw, ("stats",))
        try:
            return parse_vnish(sections["stats"], summary, settings)
        except (LookupError, TypeError, ValueError, AttributeError) as err:
            problem = f"{type(err).__name__}: {err}"
        raise NotLean(f"VNish telemetry lacks what it should hold ({problem})")


async def _vnish_get(miner: Any, command: str) -> Any:
    web = miner.web
    for attempt in range(2):
        request = (
            f"GET /api/v1/{command} HTTP/1.1\r\nHost: {miner.ip}\r\nAuthorization: {web.token}\r\n"
            "Accept: application/json\r\nConnection: close\r\n\r\n"
        ).encode()
        status, body = split_http(await exchange(str(miner.ip), int(web.port), request, max_bytes=MAX_HTTP_BYTES))
        if status == 401 and attempt == 0:
            await _vnish_log_on(web)  # the miner rebooted or forgot the token
            continue
        if status != 200:
            raise NotLean(f"VNish answered {command} with HTTP {status}")
        try:
            return json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise NotLean(f"VNish's {command} is not JSON ({err})") from None
    raise NotLean(f"VNish refused pyasic's web token for {command}")


async def _vnish_log_on(web: Any) -> None:
    """pyasic's own login (``POST unlock``); it warns and gives None where the miner refuses."""
    try:
        token = await web.auth()
    except Exception as err:  # httpx's errors of a miner gone or garbling, a warning made an error
        raise NotLean(f"pyasic could not log on to VNish's web API ({type(err).__name__})") from None
    if not token:
        raise NotLean("VNish gave pyasic no web token")


def split_http(raw: bytes) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.x answer (the server closes after it: Connection: close)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    line = head.split(b"\r\n", 1)[0].split()
    if not sep or len(line) < 2 or not line[0].startswith(b"HTTP/1.") or not line[1].isdigit():
        raise NotLean(f"the web API answered {raw[:40]!r}, not HTTP")
    if b"transfer-encoding: chunked" in head.lower():
        raise NotLean("the web API answered in chunks")
    return int(line[1]), body


def parse_vnish(stats_section: Mapping[str, Any], summary: Mapping[str, Any], settings: Mapping[str, Any]) -> Telemetry:
    stats = stats_section["STATS"][1]
    boards = _bmminer_boards(stats)
    rates = [float(stats[f"chain_rate{n}"] or 0) for n in boards]
    miner = summary["miner"]
    preset = settings["miner"]["overclock"]["preset"]
    return Telemetry(
        watts=float(round(miner["power_usage"])),
        limit_watts=None if preset == "disabled" else float(int(preset)),
        hashrate_ths=sum(rates) / GHS_PER_THS,
        # pyasic's BMMiner parser takes temp<n> for the chips, else temp2_<n>; whole degrees.
        temperatures_c=tuple(
            float(round(stats.get(f"temp{n}") or stats[f"temp2_{n}"]))
            for n in boards
            if stats.get(f"temp{n}") or stats.get(f"temp2_{n}")
        ),
        fans_rpm=_bmminer_fans(stats),
        errors=tuple(
            str(chain.get("status", {}).get("description", ""))
            for chain in miner.get("chains", [])
            if chain.get("status", {}).get("state") == "failure"
        ),
        is_mining=miner["miner_status"]["miner_state"] not in _VNISH_STOPPED,
    )


VNISH = VNishTelemetry()


def _number(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"{value!r} is not a number")
    return float(value)
