"""The Whatsminer API v3 simulator on the wire: framing, salted tokens, errors, the mute 4028.

Raw sockets here, with the token computed as pyasic computes it (pyasic's own use is in
tests/drivers/). Addresses 127.0.146.x.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from typing import Any

import pytest

from wattshift.model.specs import SPECS
from wattshift.simulators.miner import Fault
from wattshift.simulators.whatsminer_v3 import (
    CODE_INVALID_COMMAND,
    CODE_PERMISSION_DENIED,
    WhatsminerV3Miner,
    v3_token,
)

M60S = SPECS["Whatsminer M60S"]


async def send(host: str, request: dict[str, Any]) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection(host, 4433)
    body = json.dumps(request).encode()
    writer.write(struct.pack("<I", len(body)) + body)
    await writer.drain()
    try:
        (length,) = struct.unpack(
            "<I", await asyncio.wait_for(reader.readexactly(4), 2.0)
        )
        reply: dict[str, Any] = json.loads(await reader.readexactly(length))
        return reply
    finally:
        writer.close()


async def signed(
    host: str, cmd: str, param: Any, password: str = "super"
) -> dict[str, Any]:
    salt = (await send(host, {"cmd": "get.device.info", "param": "salt"}))["msg"][
        "salt"
    ]
    ts = int(time.time())
    token = v3_token(cmd, password, salt, ts)
    return await send(
        host, {"cmd": cmd, "param": param, "ts": ts, "account": "super", "token": token}
    )


def test_the_token_is_what_pyasic_computes() -> None:
    # pyasic's BTMinerV3RPCAPI.send_command, redone by hand for one known input.
    import base64
    import hashlib

    raw = bytearray(
        base64.b64encode(
            hashlib.sha256(
                b"set.miner.service" + b"super" + b"abc" + b"1700000000"
            ).digest()
        )
    )
    raw[8] = 0
    assert (
        v3_token("set.miner.service", "super", "abc", 1_700_000_000)
        == raw.split(b"\x00")[0].decode()
    )


async def test_a_signed_power_limit_applies_and_reads_back() -> None:
    async with WhatsminerV3Miner("127.0.146.1", M60S) as sim:
        assert (await signed(sim.host, "set.miner.power_limit", 3000))["msg"] == "ok"
        summary = (
            await send(sim.host, {"cmd": "get.miner.status", "param": "summary"})
        )["msg"]["summary"]
        assert summary["power-limit"] == 3000 and sim.physics.target_watts == 3000


async def test_a_wrong_password_or_an_old_ts_is_denied() -> None:
    async with WhatsminerV3Miner("127.0.146.2", M60S, password="mine") as sim:
        assert (await signed(sim.host, "set.miner.service", "stop"))[
            "code"
        ] == CODE_PERMISSION_DENIED
        salt = (await send(sim.host, {"cmd": "get.device.info", "param": "salt"}))[
            "msg"
        ]["salt"]
        old = int(time.time()) - 3600
        stale = {
            "cmd": "set.miner.service",
            "param": "stop",
            "ts": old,
            "account": "super",
            "token": v3_token("set.miner.service", "mine", salt, old),
        }
        assert (await send(sim.host, stale))["code"] == CODE_PERMISSION_DENIED
        assert not sim.physics.sleeping
        assert (await signed(sim.host, "set.miner.service", "stop", password="mine"))[
            "msg"
        ] == "ok"
        assert sim.physics.sleeping


async def test_unknown_commands_and_bad_values_are_errors() -> None:
    async with WhatsminerV3Miner("127.0.146.3", M60S) as sim:
        assert (await send(sim.host, {"cmd": "get.no.such"}))[
            "code"
        ] == CODE_INVALID_COMMAND
        reply = await signed(sim.host, "set.miner.power_limit", "lots")
        assert reply["code"] == -1 and "whole watts" in reply["msg"]
        assert sim.physics.target_watts == M60S.nominal_watts


async def test_a_reboot_changes_the_salt() -> None:
    async with WhatsminerV3Miner("127.0.146.4", M60S, reboot_s=0.0) as sim:
        before = sim.salt
        assert (await signed(sim.host, "set.system.reboot", None))["msg"] == "ok"
        assert sim.salt != before


@pytest.mark.parametrize(
    ("legacy", "expected"), [("silent", b""), ("closed", ConnectionRefusedError)]
)
async def test_port_4028_says_nothing_or_is_closed(
    legacy: str, expected: object
) -> None:
    async with WhatsminerV3Miner("127.0.146.5", M60S, legacy_port=legacy) as sim:  # type: ignore[arg-type]
        if expected is ConnectionRefusedError:
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection(sim.host, 4028)
            return
        reader, writer = await asyncio.open_connection(sim.host, 4028)
        writer.write(b'{"command":"version"}')
        assert await asyncio.wait_for(reader.read(), 2.0) == expected
        writer.close()


async def test_garbage_is_not_a_frame_and_a_hang_never_answers() -> None:
    async with WhatsminerV3Miner("127.0.146.6", M60S) as sim:
        sim.set_fault(Fault.GARBAGE)
        reader, writer = await asyncio.open_connection(sim.host, 4433)
        writer.write(struct.pack("<I", 2) + b"{}")
        raw = await asyncio.wait_for(reader.read(), 2.0)
        writer.close()
        assert struct.unpack("<I", raw[:4])[0] != len(raw) - 4
        sim.set_fault(Fault.HANG)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(send(sim.host, {"cmd": "get.device.info"}), 0.3)


def test_it_runs_on_whatsminers_only() -> None:
    with pytest.raises(ValueError, match="no Whatsminer model"):
        WhatsminerV3Miner("127.0.146.7", SPECS["Antminer S21"])
