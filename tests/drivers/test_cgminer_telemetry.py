"""The lean telemetry path (drivers/cgminer_telemetry.py): one CGMiner multicommand per poll.

Over real sockets against the simulators, its reading must equal the one pyasic's own
``get_data`` gives for the same miner at the same instant (a frozen clock keeps the physics
still between the two reads), and what it cannot read must send the miner back to pyasic's
path, never to a wrong reading. Its parsers also read replies recorded from real firmware
(tests/fixtures/captures) the way pyasic's parsers of the same API read them.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from simulated_miners import FAST_PHYSICS, SIM_KINDS, TEST_DEADLINES, SimKind, collect_pyasic_leftovers

from wattshift.drivers.base import DeviceError
from wattshift.drivers.cgminer_telemetry import (
    BMMINER,
    BOSMINER,
    BTMINER,
    LUXOS,
    MAX_REPLY_BYTES,
    NotLean,
    parse_bosminer,
    parse_btminer,
    split_http,
    split_sections,
)
from wattshift.drivers.pyasic_backends import identify, import_pyasic, traits_for
from wattshift.drivers.pyasic_miner import PyasicMiner
from wattshift.model.miner import Failure, PowerControl
from wattshift.simulators.antminer import AntminerMiner
from wattshift.simulators.braiins import BosminerApi, BraiinsMiner
from wattshift.simulators.miner import Fault, SimulatedMiner
from wattshift.simulators.vnish import VNishMiner

CAPTURES = Path(__file__).parent.parent / "fixtures" / "captures"
ANTMINER = SimKind("antminer", AntminerMiner, "Antminer S21", "127.0.31", PowerControl.ON_OFF)
VNISH = SimKind("vnish", VNishMiner, "Antminer S21", "127.0.32", PowerControl.ON_OFF)
# Every firmware whose polls take the lean path, and the requests one poll sends.
LEAN_KINDS = [*SIM_KINDS, ANTMINER, VNISH]
POLL_COMMANDS = {
    "braiins": BOSMINER.commands,
    "luxos": LUXOS.commands,
    "whatsminer": BTMINER.commands,
    "antminer": BMMINER.commands,
    "vnish": ("stats", "GET /api/v1/summary", "GET /api/v1/settings"),
}
BRAIINS = next(kind for kind in SIM_KINDS if kind.firmware == "braiins")


class FrozenClock:
    """Physics that stands still between two reads, so both paths see the same miner."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=LEAN_KINDS, ids=lambda kind: kind.firmware)
def lean_kind(request: pytest.FixtureRequest) -> SimKind:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def frozen_sim(lean_kind: SimKind) -> AsyncIterator[tuple[SimulatedMiner, FrozenClock]]:
    clock = FrozenClock()
    sim = lean_kind.simulator(lean_kind.host(20), lean_kind.spec, seed=20, clock=clock, **FAST_PHYSICS)
    await sim.start()
    try:
        yield sim, clock
    finally:
        await sim.stop()
        await collect_pyasic_leftovers()


async def both_paths(sim: SimulatedMiner) -> tuple[PyasicMiner, PyasicMiner]:
    """The same miner behind the lean path and behind pyasic's get_data alone."""
    lean = await PyasicMiner.open(await identify(sim.host), deadlines=TEST_DEADLINES)
    miner = await identify(sim.host)
    plain = PyasicMiner(
        miner, lean.capability, traits=dataclasses.replace(traits_for(miner), lean=None), deadlines=TEST_DEADLINES
    )
    assert lean.polls_lean and not plain.polls_lean
    return lean, plain


# -- the lean reading equals pyasic's ------------------------------------------------------------


async def test_the_lean_reading_equals_pyasics_get_data(frozen_sim: tuple[SimulatedMiner, FrozenClock]) -> None:
    sim, clock = frozen_sim
    clock.now += 600.0  # temperatures settled, boards hashing
    lean, plain = await both_paths(sim)
    by_lean, by_pyasic = await lean.read(), await plain.read()
    assert by_lean.hashrate_ths == pytest.approx(by_pyasic.hashrate_ths, rel=1e-9)
    assert by_lean.hashrate_ths > 0
    assert dataclasses.replace(by_lean, hashrate_ths=None) == dataclasses.replace(by_pyasic, hashrate_ths=None)
    assert by_lean.temperatures_c and by_lean.fans_rpm and by_lean.mining is True
    assert (by_lean.watts is None) is isinstance(sim, AntminerMiner)  # stock firmware reports no power


async def test_the_lean_reading_equals_pyasics_while_asleep(frozen_sim: tuple[SimulatedMiner, FrozenClock]) -> None:
    sim, clock = frozen_sim
    sim.physics.sleep(settled=True)
    clock.now += 600.0
    lean, plain = await both_paths(sim)
    by_lean, by_pyasic = await lean.read(), await plain.read()
    assert by_lean == by_pyasic
    assert by_lean.hashrate_ths == 0.0 and by_lean.booting is False


async def test_a_booting_miner_reads_as_booting_on_both_paths(
    frozen_sim: tuple[SimulatedMiner, FrozenClock],
) -> None:
    """Woken, its boards booting, it hashes nothing: the lean path asks the firmware's own word
    (pyasic's) whether it mines, as get_data does."""
    sim, clock = frozen_sim
    sim.physics.sleep(settled=True)
    clock.now += 600.0
    sim.physics.wake_boot_s = 300.0
    sim.physics.wake()
    clock.now += 1.0
    lean, plain = await both_paths(sim)
    by_lean, by_pyasic = await lean.read(), await plain.read()
    if isinstance(sim, AntminerMiner):
        # Stock firmware's status lights are on its web CGI only, which the lean path does not
        # read: its "rate" light warns of boards that hash nothing, which booting already says.
        assert by_pyasic.errors and by_lean.errors == ()
        by_pyasic = dataclasses.replace(by_pyasic, errors=())
    assert by_lean == by_pyasic
    assert by_lean.hashrate_ths == 0.0
    assert by_lean.booting is (sim.firmware != "luxos")  # LuxOS tells nothing of its boards


async def test_a_poll_is_one_round_trip_per_api(frozen_sim: tuple[SimulatedMiner, FrozenClock]) -> None:
    sim, _ = frozen_sim
    lean, _plain = await both_paths(sim)
    await lean.read()  # the first may log on (VNish: pyasic's unlock for a web token)
    sim.commands_received.clear()
    await lean.read()
    assert sorted(sim.commands_received) == sorted(POLL_COMMANDS[sim.firmware])


# -- what the lean path cannot read goes to pyasic -----------------------------------------------


@pytest.fixture
async def braiins_sim() -> AsyncIterator[BraiinsMiner]:
    sim = BraiinsMiner(BRAIINS.host(21), BRAIINS.spec, seed=21, **FAST_PHYSICS)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()
        await collect_pyasic_leftovers()


async def open_lean(sim: SimulatedMiner) -> PyasicMiner:
    return await PyasicMiner.open(await import_pyasic().get_miner(sim.host), deadlines=TEST_DEADLINES)


async def test_a_firmware_that_refuses_multicommands_is_read_through_pyasic(braiins_sim: BraiinsMiner) -> None:
    driver = await open_lean(braiins_sim)
    braiins_sim.accepts_multicommand = False
    reading = await driver.read()
    assert not driver.polls_lean
    assert reading.watts == pytest.approx(braiins_sim.physics.power_watts(), abs=1.0)
    assert reading.hashrate_ths == pytest.approx(braiins_sim.physics.hashrate_ths(), rel=0.01)
    braiins_sim.commands_received.clear()
    await driver.read()
    # From then on only pyasic's own commands (it splits its multicommand when refused).
    assert "temps" not in braiins_sim.commands_received and "fans" not in braiins_sim.commands_received


async def test_a_firmware_without_one_of_the_commands_is_read_through_pyasic(
    braiins_sim: BraiinsMiner, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = await open_lean(braiins_sim)
    # An older BOSminer: "temps" answers "Invalid command" inside the multicommand.
    monkeypatch.delattr(BosminerApi, "api_temps")
    reading = await driver.read()
    assert not driver.polls_lean
    assert reading.temperatures_c  # pyasic's path reads them over gRPC


@pytest.mark.parametrize(
    ("fault", "failure"),
    [(Fault.GARBAGE, Failure.GARBAGE), (Fault.NO_ANSWER, Failure.NO_ANSWER), (Fault.HANG, Failure.TIMEOUT)],
)
async def test_a_sick_miner_is_that_failure_and_stays_on_the_lean_path(
    braiins_sim: BraiinsMiner, fault: Fault, failure: Failure
) -> None:
    driver = await open_lean(braiins_sim)
    braiins_sim.set_fault(fault)
    with pytest.raises(DeviceError) as caught:
        await driver.read()
    assert caught.value.failure is failure
    assert driver.polls_lean  # a sick miner is no reason to pay pyasic's price once it is well
    braiins_sim.set_fault(Fault.NONE)
    assert (await driver.read()).watts is not None


# -- the parsers, on what real firmware sends ----------------------------------------------------


def luxos_capture() -> dict[str, Any]:
    return json.loads((CAPTURES / "luxos_2025.4.8_multicommand.json").read_text())  # type: ignore[no-any-return]


async def test_luxos_parser_reads_a_real_reply_as_pyasic_does() -> None:
    """A LuxOS 2025.4.8 reply (S19k Pro; three boards, a fourth chain empty) read by our parser
    and by pyasic's own LUXMiner parsers of the same sections."""
    reply = luxos_capture()
    telemetry = LUXOS.decode(json.dumps(reply).encode())
    pyasic = import_pyasic()
    factory = pyasic.miners.factory
    miner = factory.MINER_CLASSES[factory.MinerTypes.LUX_OS]["ANTMINER S19K PRO"]("127.0.0.1")
    boards = await miner._get_hashboards(rpc_stats=reply["stats"][0])
    fans = await miner._get_fans(rpc_fans=reply["fans"][0])
    assert telemetry.watts == await miner._get_wattage(rpc_power=reply["power"][0]) == 1051
    assert telemetry.limit_watts == await miner._get_wattage_limit(
        rpc_config=reply["config"][0], rpc_profiles=reply["profiles"][0]
    ) == 1188
    assert telemetry.hashrate_ths == pytest.approx(sum(float(b.hashrate) for b in boards))
    assert telemetry.temperatures_c == tuple(float(b.chip_temp) for b in boards)
    assert telemetry.fans_rpm == tuple(int(f.speed) for f in fans) == (1920, 1920, 2340, 2340)


def bosminer_reply(**tuner: Any) -> dict[str, Any]:
    ok = [{"STATUS": "S", "When": 0, "Code": 1, "Msg": "", "Description": "BOSer boser-buildroot 0.1.0"}]
    return {
        "summary": [{"STATUS": ok, "SUMMARY": [{"MHS 1m": 1.0e8}], "id": 1}],
        "devs": [{"STATUS": ok, "DEVS": [{"ID": 1, "MHS 5s": 5.0e7}, {"ID": 2, "MHS 5s": 5.0e7}], "id": 1}],
        "temps": [{"STATUS": ok, "TEMPS": [{"ID": 1, "Board": 60.2, "Chip": 71.9}, {"ID": 2, "Board": 61.0}], "id": 1}],
        "fans": [{"STATUS": ok, "FANS": [{"ID": 0, "RPM": 3700, "Speed": 40}], "id": 1}],
        "tunerstatus": [
            {
                "STATUS": ok,
                "TUNERSTATUS": [
                    {
                        "PowerLimit": 3000,
                        "ApproximateMinerPowerConsumption": 2950,
                        "TunerChainStatus": [
                            {"HashchainIndex": 0, "Status": "Stable"},
                            {"HashchainIndex": 1, "Status": "Failing {chip 12}"},
                        ],
                        **tuner,
                    }
                ],
                "id": 1,
            }
        ],
        "id": 1,
    }


def test_bosminer_parser_reads_every_field() -> None:
    telemetry = parse_bosminer(split_sections(json.dumps(bosminer_reply()).encode(), BOSMINER.commands))
    assert telemetry.watts == 2950 and telemetry.limit_watts == 3000
    assert telemetry.hashrate_ths == pytest.approx(100.0)
    assert telemetry.temperatures_c == (71.0, 61.0)  # the chips where told, else the board; whole degrees
    assert telemetry.fans_rpm == (3700,)
    assert telemetry.errors == ("Slot 1 failing",)  # pyasic's wording of a sick chain
    assert telemetry.is_mining is True


def test_a_reply_ending_in_nul_is_read() -> None:
    assert BOSMINER.decode(json.dumps(bosminer_reply()).encode() + b"\x00").watts == 2950


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"", "without a word"),
        (b"\xff{not json", "not plain JSON"),
        (b"[1, 2]", "JSON list"),
        (b'{"STATUS":[{"STATUS":"E","Code":14,"Msg":"Invalid command"}],"id":1}', "refused the multicommand"),
        (b"{" + b" " * MAX_REPLY_BYTES + b"}", "over"),
    ],
    ids=["empty", "not-json", "not-object", "refused", "too-big"],
)
def test_an_answer_that_is_not_a_multicommand_reply_is_not_lean(raw: bytes, says: str) -> None:
    with pytest.raises(NotLean, match=says):
        BOSMINER.decode(raw)


def test_an_error_status_in_one_section_is_not_lean() -> None:
    reply = bosminer_reply()
    reply["temps"][0]["STATUS"] = [{"STATUS": "E", "Code": 14, "Msg": "Invalid command"}]
    with pytest.raises(NotLean, match="'temps' answered STATUS 'E': Invalid command"):
        BOSMINER.decode(json.dumps(reply).encode())


def test_a_section_missing_from_the_reply_is_not_lean() -> None:
    reply = bosminer_reply()
    del reply["fans"]
    with pytest.raises(NotLean, match="no answer to 'fans'"):
        BOSMINER.decode(json.dumps(reply).encode())


@pytest.mark.parametrize(
    ("section", "drop"),
    [("tunerstatus", "TUNERSTATUS"), ("devs", "DEVS"), ("temps", "TEMPS"), ("fans", "FANS")],
)
def test_a_key_missing_from_a_section_is_not_lean(section: str, drop: str) -> None:
    reply = bosminer_reply()
    del reply[section][0][drop]
    with pytest.raises(NotLean, match="lacks what it should hold"):
        BOSMINER.decode(json.dumps(reply).encode())


def test_a_number_that_is_not_a_number_is_not_lean() -> None:
    with pytest.raises(NotLean):
        BOSMINER.decode(json.dumps(bosminer_reply(PowerLimit={"watt": 3000})).encode())


def test_a_luxos_reply_without_the_active_profile_has_no_limit() -> None:
    reply = luxos_capture()
    reply["config"][0]["CONFIG"][0]["Profile"] = "gone"
    assert LUXOS.decode(json.dumps(reply).encode()).limit_watts is None


def capture(name: str) -> dict[str, Any]:
    return json.loads((CAPTURES / name).read_text())  # type: ignore[no-any-return]


def pyasic_miner(miner_type: str, model: str) -> Any:
    factory = import_pyasic().miners.factory
    return factory.MINER_CLASSES[factory.MinerTypes[miner_type]][model]("127.0.0.1")


async def test_bmminer_parser_reads_a_real_stock_s19_pro() -> None:
    """Stock firmware on an S19 Pro: three boards and an empty fourth chain (``chain_rate4``
    is ""), fans 1-4; all from ``stats`` (one command: S19s refuse multicommands)."""
    summary, stats = capture("bmminer_s19pro_summary.json"), capture("bmminer_s19pro_stats.json")
    telemetry = BMMINER.decode(json.dumps(stats).encode())
    miner = pyasic_miner("ANTMINER", "ANTMINER S19 PRO")
    bmminer = import_pyasic().miners.backends.bmminer.BMMiner
    boards = await bmminer._get_hashboards(miner, rpc_stats=stats)  # pyasic's parser of this API
    assert telemetry.hashrate_ths == pytest.approx(sum(float(b.hashrate) for b in boards if b.hashrate is not None))
    assert telemetry.hashrate_ths == pytest.approx((37603.30 + 35536.22 + 37427.38) / 1000)
    assert telemetry.fans_rpm == tuple(int(f.speed) for f in await miner._get_fans(rpc_stats=stats))
    assert telemetry.temperatures_c == (78.0, 71.0, 69.0)  # temp2_<n>: the chips
    assert telemetry.watts is None and telemetry.is_mining is True
    # With no chain rates, the total: stats repeats the summary's "GHS 5s" (pyasic's raw hashrate).
    for n in range(1, 5):
        stats["STATS"][1][f"chain_rate{n}"] = ""
    bare = BMMINER.decode(json.dumps(stats).encode())
    assert bare.hashrate_ths == pytest.approx(float(summary["SUMMARY"][0]["GHS 5s"]) / 1000)


async def test_btminer_parser_reads_a_real_whatsminer_v2() -> None:
    summary, devs = capture("btminer_v2_summary.json"), capture("btminer_v2_devs.json")
    reply = json.dumps({"summary": [summary], "devs": [devs], "id": 1}).encode()
    telemetry = BTMINER.decode(reply)
    miner = pyasic_miner("WHATSMINER", "M30S++VE40")
    assert telemetry.watts == await miner._get_wattage(rpc_summary=summary) == 3200
    assert telemetry.limit_watts == await miner._get_wattage_limit(rpc_summary=summary) == 3300
    assert telemetry.fans_rpm == tuple(int(f.speed) for f in await miner._get_fans(rpc_summary=summary))
    # This firmware sends "MHS av" and no "MHS 1m": pyasic reads no hashrate, the lean path does.
    assert await miner._get_hashrate(rpc_summary=summary) is None
    assert telemetry.hashrate_ths == pytest.approx(41.5 + 41.8 + 41.7)
    assert telemetry.temperatures_c == (72.0, 72.0, 74.0)  # the chips' average, rounded as pyasic does


def test_whatsminer_error_codes_are_worded_as_pyasic_words_them() -> None:
    summary = capture("btminer_v2_summary.json")
    summary["SUMMARY"][0].update({"Error Code Count": 2, "Error Code 0": 110, "Error Code 1": 0})
    sections = {"summary": summary, "devs": capture("btminer_v2_devs.json")}
    import_pyasic()
    errors = importlib.import_module("pyasic.data.error_codes").WhatsminerError
    assert parse_btminer(sections).errors == (errors(error_code=110).error_message,)
    assert parse_btminer(sections).errors[0]  # a text, not an empty message


def test_the_mining_state_query_is_pyasics_own_data_function() -> None:
    """The lean path asks a miner that hashes nothing pyasic's ``_is_mining`` (private, stable
    through 0.79.x: each backend's DataLocations names it); fail here the day it goes."""
    for miner_type, model in (("WHATSMINER", "M60SVK10"), ("ANTMINER", "ANTMINER S21")):
        miner = pyasic_miner(miner_type, model)
        assert traits_for(miner).lean_state is not None
        assert miner.data_locations.is_mining.cmd == "_is_mining"
        assert callable(miner._is_mining)


async def test_vnish_logs_on_again_through_pyasic_when_its_token_is_forgotten() -> None:
    sim = VNISH.build(22)
    async with sim:
        driver = await PyasicMiner.open(await identify(sim.host), deadlines=TEST_DEADLINES)
        await driver.read()
        assert isinstance(sim, VNishMiner)
        sim._tokens.clear()  # what a reboot of the controller does to them
        sim.commands_received.clear()
        reading = await driver.read()
        assert "POST /api/v1/unlock" in sim.commands_received and driver.polls_lean
        assert reading.watts == pytest.approx(sim.physics.power_watts(), abs=1.0)
    await collect_pyasic_leftovers()


@pytest.mark.parametrize(
    "raw",
    [b"", b"garbage", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{}"],
    ids=["empty", "not-http", "chunked"],
)
def test_an_answer_that_is_not_plain_http_is_not_lean(raw: bytes) -> None:
    with pytest.raises(NotLean):
        split_http(raw)
