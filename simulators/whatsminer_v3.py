"""A Whatsminer on firmware since late 2024 (API v3 on TCP 4433), as pyasic 0.79.0's ``BTMinerV3``
drives it.

The wire (``pyasic/rpc/btminer.py``, ``BTMinerV3RPCAPI``): one request per connection, framed as a
4-byte little-endian length and then JSON, ``{"cmd": "get.miner.status", "param": "summary"}``;
the answer comes back framed the same way, ``{"code": 0, "when": ..., "msg": ..., "desc": cmd}``.
Writes (``set.*``) carry ``ts``, ``account`` ("super") and ``token``: the first 8 characters of
``base64(sha256(cmd + password + salt + ts))``, the salt being what ``get.device.info`` with
``param "salt"`` answers. A bad token is answered code -4, an unknown command -2, a failed one -1
(the codes of MicroBT's API v3 manual as we understand it; pyasic reads none of them).

What pyasic reads and sends:

- identification: the socket probe finds nothing on 4028 and asks 4433 ``get.device.info``;
  ``msg.miner.type`` ("M60S_VK10") is the model and ``msg.system.fwversion`` (after 2024.11)
  picks ``BTMinerV3``. That works only while 4028 *accepts and closes* without a word: pyasic
  asks 4433 for the version only after 4028 gave an answer it could not read, so with 4028
  closed (``legacy_port="closed"``) pyasic 0.79.0 builds its API v2 class instead;
- ``get_data``: ``get.miner.status`` ``summary`` (``power-realtime``, ``power-limit``,
  ``hash-realtime`` in TH/s, ``fan-speed-in/out``, ``elapsed``), ``edevs`` (per board), and
  ``get.device.info`` (boards, serials, PSU fan). There is no mining flag: pyasic says
  ``is_mining=True`` whatever the miner does;
- ``set_power_limit(W)``: ``set.miner.power_limit`` with the watts; pyasic returns True unless the
  connection fails, whatever the answer, so a refusal shows only in the limit read back;
- ``stop_mining()`` / ``resume_mining()``: ``set.miner.service`` ``stop`` / ``start``, True when
  ``msg == "ok"``; ``reboot()``: ``set.system.reboot``.

Waking boots the hashboards (``wake_boot_s`` of the physics): draw climbs, hashrate comes later.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import struct
import time
from collections.abc import Callable
from typing import Any, ClassVar, Literal

from wattshift.model.specs import MinerSpec

from . import whatsminer_replies as replies
from .cgminer import GARBAGE, CgminerServer, Reply, _reset
from .listener import TcpListener
from .miner import CommandRefused, Fault, SimulatedMiner
from .physics import Clock
from .whatsminer_replies import Identity, Readings

API_PORT = 4433
LEGACY_PORT = 4028
FIRMWARE_VERSION = "20250321.14.Rel"  # after 2024.11: pyasic picks its API v3 backend
API_VERSION = "3.0.1"
ACCOUNT = "super"
TOKEN_WINDOW_S = 60.0  # how far a request's ts may be from the miner's clock
MAX_FRAME_BYTES = 64 * 1024
DEFAULT_WAKE_BOOT_S = 60.0
CODE_OK = 0
CODE_FAILED = -1
CODE_INVALID_COMMAND = -2
CODE_INVALID_JSON = -3
CODE_PERMISSION_DENIED = -4
BOARD_SHARE_SPREAD = 0.02

LegacyPort = Literal["silent", "closed"]
Command = Callable[[Any], dict[str, Any]]


def v3_token(command: str, password: str, salt: str, ts: int) -> str:
    """The token of a ``set.*`` command, computed the way pyasic computes it."""
    digest = base64.b64encode(
        hashlib.sha256(f"{command}{password}{salt}{ts}".encode()).digest()
    )
    return digest[:8].decode()


class WhatsminerV3Miner(SimulatedMiner):
    """One Whatsminer with API v3 on ``host``:4433 (and a mute 4028), answering from its physics."""

    firmware: ClassVar[str] = "whatsminer_v3"

    def __init__(
        self,
        host: str,
        spec: MinerSpec,
        *,
        clock: Clock | None = None,
        seed: int = 0,
        password: str = "super",
        legacy_port: LegacyPort = "silent",
        **physics_options: float,
    ) -> None:
        model = replies.WHATSMINER_MODELS.get(spec.model)
        if model is None:
            known = ", ".join(sorted(replies.WHATSMINER_MODELS))
            raise ValueError(
                f"{host}: no Whatsminer model table entry for spec {spec.model!r} (known: {known})"
            )
        if legacy_port not in ("silent", "closed"):
            raise ValueError(
                f"{host}: legacy_port must be 'silent' or 'closed', not {legacy_port!r}"
            )
        physics_options.setdefault("wake_boot_s", DEFAULT_WAKE_BOOT_S)
        super().__init__(host, spec, clock=clock, seed=seed, **physics_options)
        weights = [
            1.0 + self.rng.uniform(-BOARD_SHARE_SPREAD, BOARD_SHARE_SPREAD)
            for _ in range(spec.hashboards)
        ]
        self.identity = Identity(
            host=host,
            mac=self.mac,
            serial=self.serial,
            spec=spec,
            model=model,
            board_shares=tuple(w / sum(weights) for w in weights),
            pool_url="stratum+tcp://pool.wattshift.invalid:3333",
            pool_user=f"wattshift.{self.serial}",
        )
        self.password = password
        self.salt = secrets.token_hex(4)
        self.service = "start"  # the btminer service: start (running) or stop
        self.legacy_port = legacy_port
        self._v3 = _FramedServer(self, self._answer)
        self._legacy = (
            CgminerServer(self, self._mute, port=LEGACY_PORT)
            if legacy_port == "silent"
            else None
        )
        self._reads: dict[str, Command] = {
            "get.device.info": self._device_info,
            "get.miner.status": self._miner_status,
            "get.miner.setting": lambda _param: self._ok(self._setting()),
            "get.system.setting": lambda _param: self._ok(
                {"hostname": "WhatsMiner", "time-zone": "UTC"}
            ),
        }
        self._writes: dict[str, Command] = {
            "set.miner.power_limit": self._set_power_limit,
            "set.miner.service": self._set_service,
            "set.system.reboot": self._set_reboot,
        }

    async def start(self) -> None:
        await self._v3.start()
        if self._legacy is not None:
            try:
                await self._legacy.start()
            except BaseException:
                await self._v3.stop()
                raise

    async def stop(self) -> None:
        await asyncio.gather(
            self._v3.stop(), *([self._legacy.stop()] if self._legacy else [])
        )

    async def _mute(self, request: dict[str, Any]) -> Reply:
        """4028 on this firmware: takes the request, says nothing, closes."""
        self.record(f"4028:{request.get('command') or request.get('cmd')}")
        return b""

    # -- the wire -------------------------------------------------------------------------------

    def _answer(self, request: object) -> dict[str, Any]:
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return self._error(CODE_INVALID_JSON, "invalid json", "")
        command: str = request["cmd"]
        self.record(command)
        param = request.get("param")
        if command in self._reads:
            return {**self._reads[command](param), "desc": command}
        if command not in self._writes:
            return self._error(CODE_INVALID_COMMAND, "invalid command", command)
        if not self._token_valid(command, request):
            return self._error(CODE_PERMISSION_DENIED, "permission denied", command)
        try:
            reply = self.control(lambda: self._writes[command](param))
        except CommandRefused as refused:
            return self._error(CODE_FAILED, str(refused), command)
        return {**(reply if reply is not None else self._ok("ok")), "desc": command}

    def _token_valid(self, command: str, request: dict[str, Any]) -> bool:
        ts = request.get("ts")
        if (
            request.get("account") != ACCOUNT
            or not isinstance(ts, int)
            or isinstance(ts, bool)
        ):
            return False
        if abs(time.time() - ts) > TOKEN_WINDOW_S:
            return False
        expected = v3_token(command, self.password, self.salt, ts)
        return secrets.compare_digest(expected, str(request.get("token", "")))

    def _ok(self, msg: Any) -> dict[str, Any]:
        return {"code": CODE_OK, "when": int(time.time()), "msg": msg}

    def _error(self, code: int, msg: str, command: str) -> dict[str, Any]:
        return {"code": code, "when": int(time.time()), "msg": msg, "desc": command}

    # -- reads ----------------------------------------------------------------------------------

    def _device_info(self, param: Any) -> dict[str, Any]:
        if param == "salt":
            return self._ok({"salt": self.salt})
        me, now = self.identity, Readings.of(self.physics)
        miner: dict[str, Any] = {
            "working": "true" if self.physics.mining else "false",
            "type": me.model.devdetails_model,
            "hash-board": me.model.devdetails_model.split("_")[-1],
            "miner-sn": me.serial,
            "board-num": self.spec.hashboards,
        }
        for slot in range(self.spec.hashboards):
            miner[f"pcbsn{slot}"] = f"{me.serial}P{slot}"
        return self._ok(
            {
                "network": {
                    "ip": me.host,
                    "proto": "dhcp",
                    "netmask": "255.0.0.0",
                    "mac": me.mac,
                    "hostname": "WhatsMiner",
                },
                "miner": miner,
                "system": {
                    "api": API_VERSION,
                    "platform": "H6OS",
                    "fwversion": FIRMWARE_VERSION,
                    "control-board-version": "CB6_V10",
                    "ledstatus": "auto",
                },
                "power": {
                    "type": me.model.psu_model,
                    "model": me.model.psu_model,
                    "vin": replies.MAINS_VOLTS,
                    "pin": round(now.power_w),
                    "fanspeed": now.psu_fan_rpm,
                    "sn": f"{me.serial}PSU",
                },
                "hardware": {"boards": self.spec.hashboards},
                "error-code": [],
            }
        )

    def _miner_status(self, param: Any) -> dict[str, Any]:
        now, me = Readings.of(self.physics), self.identity
        if param == "summary":
            return self._ok({"summary": self._summary(now)})
        if param == "edevs":
            return self._ok({"edevs": self._edevs(now)})
        if param == "pools":
            pool = {
                "id": 1,
                "url": me.pool_url,
                "status": "alive" if now.mining else "dead",
                "account": me.pool_user,
                "stratum-active": now.mining,
            }
            return self._ok({"pools": [pool]})
        return self._error(CODE_FAILED, f"unknown status {param!r}", "get.miner.status")

    def _summary(self, now: Readings) -> dict[str, Any]:
        return {
            "elapsed": now.uptime_s,
            "bootup-time": now.uptime_s,
            "hash-realtime": round(now.hashrate_ths, 3),
            "hash-average": round(now.hashrate_ths, 3),
            "factory-hash": round(now.target_ths, 3),
            "power-limit": round(now.limit_w),
            "power-realtime": round(now.power_w),
            "fan-speed-in": now.fan_rpm,
            "fan-speed-out": now.fan_rpm,
            "environment-temperature": round(now.ambient_c, 1),
            "board-temperature": [round(now.board_c, 1)] * self.spec.hashboards,
            "chip-temp-min": round(now.chip_c - 4, 1),
            "chip-temp-max": round(now.chip_c + 4, 1),
            "chip-temp-avg": round(now.chip_c, 1),
        }

    def _edevs(self, now: Readings) -> list[dict[str, Any]]:
        chips = self.identity.model.chips_per_board if now.mining else 0
        return [
            {
                "id": slot,
                "slot": slot,
                "hash-average": round(now.hashrate_ths * share, 3),
                "factory-hash": round(now.target_ths * share, 3),
                "effective-chips": chips,
                "chip-temp-min": round(now.chip_c - 4, 1),
                "chip-temp-max": round(now.chip_c + 4, 1),
                "chip-temp-avg": round(now.chip_c, 1),
            }
            for slot, share in enumerate(self.identity.board_shares)
        ]

    def _setting(self) -> dict[str, Any]:
        return {
            "power-limit": round(self.physics.target_watts),
            "heat-mode": "normal",
            "power-mode": "normal",
        }

    # -- writes ---------------------------------------------------------------------------------

    def _set_power_limit(self, param: Any) -> dict[str, Any]:
        if isinstance(param, bool) or not isinstance(param, int | str):
            return self._error(
                CODE_FAILED,
                f"power_limit must be whole watts, not {param!r}",
                "set.miner.power_limit",
            )
        try:
            watts = int(param)
        except ValueError:
            return self._error(
                CODE_FAILED,
                f"power_limit must be whole watts, not {param!r}",
                "set.miner.power_limit",
            )
        if watts <= 0:
            return self._error(
                CODE_FAILED,
                f"power_limit must be positive, not {watts}",
                "set.miner.power_limit",
            )
        self.physics.set_target(
            watts
        )  # clamped to the model's range; power-limit reads it back
        return self._ok("ok")

    def _set_service(self, param: Any) -> dict[str, Any]:
        if param == "stop":
            self.physics.sleep()
        elif param in ("start", "restart"):
            self.physics.wake()
        else:
            return self._error(
                CODE_FAILED,
                f"service must be start, stop or restart, not {param!r}",
                "set.miner.service",
            )
        self.service = "stop" if param == "stop" else "start"
        return self._ok("ok")

    def _set_reboot(self, _param: Any) -> dict[str, Any]:
        self.physics.reboot()
        self.salt = secrets.token_hex(4)  # a new boot, a new salt
        self.service = "start"
        return self._ok("ok")


class _FramedServer(TcpListener):
    """TCP 4433: length-prefixed JSON, one request per connection, with the miner's faults."""

    def __init__(self, miner: WhatsminerV3Miner, answer: Callable[[object], dict[str, Any]]) -> None:
        super().__init__(miner, API_PORT)
        self.answer = answer

    async def _answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        miner = self.miner
        if not miner.reachable:
            _reset(writer)
            return
        (length,) = struct.unpack("<I", await reader.readexactly(4))
        if length > MAX_FRAME_BYTES:
            return
        body = await reader.readexactly(length)
        if miner.fault is Fault.HANG:
            await asyncio.Event().wait()  # until stop() cancels us
        if miner.fault is Fault.GARBAGE:
            writer.write(GARBAGE)
        else:
            try:
                request = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError):
                request = None
            payload = json.dumps(self.answer(request)).encode()
            writer.write(struct.pack("<I", len(payload)) + payload)
        await writer.drain()
