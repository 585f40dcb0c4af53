"""The stock Antminer simulator on the wire: digest auth, the CGI, bmminer's restart, the faults.

Plain httpx and sockets here (pyasic's use of the same wire is in
tests/drivers/test_pyasic_new_firmwares.py). Each test owns addresses in 127.0.144.x.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from privileged_ports import needs_port_80

from wattshift.model.specs import SPECS
from wattshift.simulators.antminer import AntminerMiner
from wattshift.simulators.miner import Fault

S21 = SPECS["Antminer S21"]


pytestmark = needs_port_80

async def cgi(
    host: str, name: str, password: str = "root", **body: object
) -> httpx.Response:
    auth = httpx.DigestAuth("root", password)
    async with httpx.AsyncClient(timeout=2.0) as client:
        url = f"http://{host}/cgi-bin/{name}.cgi"
        if body:
            return await client.post(url, auth=auth, json=body)
        return await client.get(url, auth=auth)


async def cgminer(host: str, command: str) -> bytes:
    reader, writer = await asyncio.open_connection(host, 4028)
    writer.write(json.dumps({"command": command}).encode())
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 2.0)
    finally:
        writer.close()


async def test_the_web_api_wants_the_digest_of_the_right_password() -> None:
    async with AntminerMiner("127.0.144.1", S21, password="secret") as sim:
        async with httpx.AsyncClient(timeout=2.0) as client:
            anonymous = await client.get(f"http://{sim.host}/")
        assert anonymous.status_code == 401
        assert (
            'realm="antMiner Configuration"' in anonymous.headers["www-authenticate"]
        )  # what pyasic looks for
        assert (
            await cgi(sim.host, "get_system_info", password="root")
        ).status_code == 401
        info = (await cgi(sim.host, "get_system_info", password="secret")).json()
        assert info["minertype"] == "Antminer S21" and info["serinum"] == sim.serial


async def test_a_mode_change_restarts_bmminer_while_the_web_answers() -> None:
    async with AntminerMiner("127.0.144.2", S21, restart_s=0.4, wake_boot_s=0.0) as sim:
        assert (await cgi(sim.host, "set_miner_conf", **{"miner-mode": 1})).json()[
            "code"
        ] == "M000"
        assert sim.physics.sleeping and sim.restarts == 1
        assert await cgminer(sim.host, "summary") == b""  # bmminer is away
        conf = (await cgi(sim.host, "get_miner_conf")).json()
        assert conf["bitmain-work-mode"] == "1"
        await asyncio.sleep(0.5)
        summary = json.loads(await cgminer(sim.host, "summary"))
        assert float(summary["SUMMARY"][0]["GHS 5s"]) == 0.0
        # The same mode again changes nothing and restarts nothing.
        await cgi(sim.host, "set_miner_conf", **{"miner-mode": 1})
        assert sim.restarts == 1


async def test_a_bad_mode_is_refused_and_changes_nothing() -> None:
    async with AntminerMiner("127.0.144.3", S21) as sim:
        reply = (await cgi(sim.host, "set_miner_conf", **{"miner-mode": 7})).json()
        assert reply["code"] == "M001" and "miner-mode" in reply["msg"]
        assert not sim.physics.sleeping and sim.restarts == 0


@pytest.mark.parametrize(
    ("fault", "code"), [(Fault.REFUSE, "M002"), (Fault.IGNORE, "M000")]
)
async def test_refuse_and_ignore_leave_the_mode(fault: Fault, code: str) -> None:
    async with AntminerMiner("127.0.144.4", S21) as sim:
        sim.set_fault(fault)
        assert (await cgi(sim.host, "set_miner_conf", **{"miner-mode": 1})).json()[
            "code"
        ] == code
        assert not sim.physics.sleeping and sim.work_mode == 0


async def test_a_reboot_keeps_a_sleeping_miner_asleep() -> None:
    async with AntminerMiner("127.0.144.5", S21, reboot_s=0.2, restart_s=0.0) as sim:
        await cgi(sim.host, "set_miner_conf", **{"miner-mode": 1})
        assert (await cgi(sim.host, "reboot")).json() == {"code": "R000"}
        with pytest.raises(httpx.TransportError):
            await cgi(sim.host, "get_miner_conf")  # gone while it boots
        await asyncio.sleep(0.3)
        assert (await cgi(sim.host, "get_miner_conf")).json()[
            "bitmain-work-mode"
        ] == "1"


@pytest.mark.parametrize("fault", [Fault.NO_ANSWER, Fault.HANG, Fault.GARBAGE])
async def test_the_web_port_plays_the_transport_faults(fault: Fault) -> None:
    async with AntminerMiner("127.0.144.6", S21) as sim:
        sim.set_fault(fault)
        with pytest.raises(httpx.TransportError):
            async with httpx.AsyncClient(timeout=0.5) as client:
                await client.get(f"http://{sim.host}/cgi-bin/get_system_info.cgi")


async def test_an_oversized_request_is_turned_away() -> None:
    async with AntminerMiner("127.0.144.7", S21) as sim:
        async with httpx.AsyncClient(timeout=2.0) as client:
            reply = await client.post(
                f"http://{sim.host}/cgi-bin/set_miner_conf.cgi", content=b"x" * 300_000
            )
        assert reply.status_code == 400
        assert not sim.physics.sleeping


# Field names and types of replies recorded from real stock firmware (asic-rs test data:
# antminer/src/test/json/v2023_07, an S21 XP Hyd. over 4028 and an S23 Hyd. over the web), for
# the fields pyasic reads. The simulator must answer with the same names and the same types.
RECORDED_RPC_STATS = {
    "Elapsed": int,
    "rate_unit": str,
    "total_rateideal": float,
    "fan_num": int,
    "fan1": int,
    "chain_acn1": int,
    "chain_acs1": str,
    "chain_rate1": str,
    "temp1": int,
    "temp2_1": int,
    "temp_pcb1": str,
    "temp_chip1": str,
    "GHS 5s": float,
    "miner_count": int,
}
RECORDED_WEB_CHAIN = {
    "index": int,
    "asic_num": int,
    "rate_real": float,
    "rate_ideal": float,
    "freq_avg": int,
    "sn": str,
    "temp_pcb": list,
    "temp_chip": list,
    "temp_pic": list,
}
RECORDED_WEB_SUMMARY = {
    "elapsed": int,
    "rate_5s": float,
    "rate_ideal": float,
    "rate_unit": str,
    "status": list,
}


def assert_shaped_like(recorded: dict[str, type], reply: dict[str, object]) -> None:
    for name, kind in recorded.items():
        assert name in reply, f"missing {name!r}"
        assert isinstance(reply[name], kind), (
            f"{name!r} is {type(reply[name]).__name__}, recorded {kind.__name__}"
        )


async def test_replies_have_the_names_and_types_recorded_from_real_firmware() -> None:
    async with AntminerMiner("127.0.144.8", S21) as sim:
        stats = json.loads(await cgminer(sim.host, "stats"))
        assert stats["STATS"][0]["Type"] == "Antminer S21"
        assert_shaped_like(RECORDED_RPC_STATS, stats["STATS"][1])
        web_stats = (await cgi(sim.host, "stats")).json()["STATS"][0]
        assert len(web_stats["chain"]) == S21.hashboards
        assert_shaped_like(RECORDED_WEB_CHAIN, web_stats["chain"][0])
        assert all(
            len(web_stats["chain"][0][t]) == 4
            for t in ("temp_pcb", "temp_chip", "temp_pic")
        )
        summary = (await cgi(sim.host, "summary")).json()["SUMMARY"][0]
        assert_shaped_like(RECORDED_WEB_SUMMARY, summary)
        assert {light["type"] for light in summary["status"]} == {
            "rate",
            "network",
            "fans",
            "temp",
        }
