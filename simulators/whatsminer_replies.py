"""What a Whatsminer's readable API v2 answers, built from a snapshot of the miner's physics.

Two reply shapes live side by side on the real firmware and pyasic depends on both:

- the CGMiner-style commands (``summary``, ``devs``, ``edevs``, ``pools``, ``devdetails``) answer
  ``{"STATUS": [{...}], "SUMMARY": [{...}], "id": 1}`` and may be joined as ``a+b``;
- the Whatsminer commands (``get_*``, ``status``) answer one flat object,
  ``{"STATUS": "S", "When": ..., "Code": 131, "Msg": {...}, "Description": ""}``.

Field names and units are the firmware's (hashrates in MH/s, ``Factory GHS`` in GH/s, power in
W as integers). Every number comes from :class:`Readings`, which is taken from
:class:`~.physics.MinerPhysics`; fan speeds follow the temperature it reports.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from wattshift.model.specs import MinerSpec

from .cgminer import status
from .physics import MinerPhysics

FIRMWARE_VERSION = "20230911.12.Rel"  # before 2024.11, so pyasic picks its API v2 backend
API_VERSION = "2.0.5"  # adjust_power_limit needs 2.0.5 or later
DESCRIPTION = "btminer"  # pyasic's socket probe recognises the firmware by "btminer"/"bitmicro"
DRIVER = "bitmicro"
CODE_OK = 131
CODE_TOKEN_OK = 134
MSG_OK = "API command OK"

# Cooling: fans speed up with the temperature rise over ambient; the PSU fan with its load.
FAN_IDLE_RPM = 1_200
FAN_RPM_PER_C_RISE = 110
FAN_MAX_RPM = 7_000
PSU_FAN_IDLE_RPM = 1_500
PSU_FAN_FULL_LOAD_RPM = 6_500
# Chips run hotter than the board sensor by an amount that grows with the power they burn.
CHIP_OVER_BOARD_C_AT_NOMINAL = 12.0
MAINS_VOLTS = 230.0


@dataclass(frozen=True, slots=True)
class WhatsminerModel:
    """How one model names itself on the wire (``devdetails``) and what its boards carry."""

    devdetails_model: str  # pyasic drops "_" and maps e.g. "M50S_VH30" to class BTMinerM50SVH30
    chips_per_board: int
    psu_model: str


# Keyed by MinerSpec.model (physics.SPECS). Chip counts are pyasic's expected_chips per board.
WHATSMINER_MODELS: dict[str, WhatsminerModel] = {
    "Whatsminer M30S+": WhatsminerModel("M30S+_V10", 215, "P221"),
    "Whatsminer M50S": WhatsminerModel("M50S_VH30", 156, "P221B"),
    "Whatsminer M60S": WhatsminerModel("M60S_VK10", 215, "P222B"),
}


@dataclass(frozen=True, slots=True)
class Identity:
    """What does not change while the miner runs."""

    host: str
    mac: str
    serial: str
    spec: MinerSpec
    model: WhatsminerModel
    board_shares: tuple[float, ...]  # each board's fraction of the hashrate; they sum to 1
    pool_url: str
    pool_user: str


@dataclass(frozen=True, slots=True)
class Readings:
    """One consistent instant of the physics, so every field of a reply agrees with the rest."""

    power_w: float
    limit_w: float
    hashrate_ths: float
    target_ths: float
    board_c: float
    chip_c: float
    ambient_c: float
    fan_rpm: int
    psu_fan_rpm: int
    uptime_s: int
    mining: bool

    @classmethod
    def of(cls, physics: MinerPhysics) -> Readings:
        spec = physics.spec
        power = physics.power_watts()
        board = physics.temperature_c()
        load = power / spec.nominal_watts
        fan = FAN_IDLE_RPM + FAN_RPM_PER_C_RISE * max(0.0, board - physics.ambient_c)
        return cls(
            power_w=power,
            limit_w=physics.target_watts,
            hashrate_ths=physics.hashrate_ths(),
            target_ths=spec.hashrate_at(physics.target_watts),
            board_c=board,
            chip_c=board + CHIP_OVER_BOARD_C_AT_NOMINAL * load,
            ambient_c=physics.ambient_c,
            fan_rpm=round(min(fan, FAN_MAX_RPM)),
            psu_fan_rpm=round(PSU_FAN_IDLE_RPM + (PSU_FAN_FULL_LOAD_RPM - PSU_FAN_IDLE_RPM) * min(load, 1.0)),
            uptime_s=physics.uptime_s(),
            mining=physics.mining,
        )


def flat_reply(code: int, msg: Any, *, ok: bool = True) -> dict[str, Any]:
    """The Whatsminer-style reply: one object, ``STATUS`` a bare ``"S"`` or ``"E"``."""
    return {
        "STATUS": "S" if ok else "E",
        "When": int(time.time()),
        "Code": code,
        "Msg": msg,
        "Description": "",
    }


def _section(code: int, msg: str, name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"STATUS": status(code, msg, description=DESCRIPTION), name: rows, "id": 1}


def _mhs(ths: float) -> float:
    return round(ths * 1e6, 2)


# -- CGMiner-style commands -----------------------------------------------------------------------


def summary(now: Readings, me: Identity) -> dict[str, Any]:
    hashrate = _mhs(now.hashrate_ths)
    row = {
        "Elapsed": now.uptime_s,
        "MHS av": hashrate,
        "MHS 5s": hashrate,
        "MHS 1m": hashrate,
        "MHS 5m": hashrate,
        "MHS 15m": hashrate,
        "HS RT": hashrate,
        "Temperature": round(now.board_c, 2),
        "Fan Speed In": now.fan_rpm,
        "Fan Speed Out": now.fan_rpm,
        "Power": round(now.power_w),
        "Power Rate": round(now.power_w / now.hashrate_ths, 2) if now.hashrate_ths else 0,
        "Uptime": now.uptime_s,
        "Target MHS": _mhs(now.target_ths),
        "Env Temp": round(now.ambient_c, 2),
        "Power Mode": "Normal",
        "Factory GHS": round(me.spec.nominal_ths * 1000),
        "Power Limit": round(now.limit_w),
        "Chip Temp Min": round(now.chip_c, 2),
        "Chip Temp Max": round(now.chip_c, 2),
        "Chip Temp Avg": round(now.chip_c, 2),
        "Btminer Fast Boot": "disable",
        "Power Fanspeed": now.psu_fan_rpm,
        "Error Code Count": 0,
        "Firmware Version": f"'{FIRMWARE_VERSION}'",  # the firmware really quotes it
        "MAC": me.mac,
    }
    return _section(11, "Summary", "SUMMARY", [row])


def devs(now: Readings, me: Identity) -> dict[str, Any]:
    rows = []
    for slot, share in enumerate(me.board_shares):
        board_hashrate = _mhs(now.hashrate_ths * share)
        rows.append(
            {
                "ASC": slot,
                "Name": "SM",
                "ID": slot,
                "Slot": slot,
                "Enabled": "Y",
                "Status": "Alive" if now.mining else "Initialising",
                "Temperature": round(now.board_c, 2),
                "MHS av": board_hashrate,
                "MHS 5s": board_hashrate,
                "MHS 1m": board_hashrate,
                "MHS 5m": board_hashrate,
                "MHS 15m": board_hashrate,
                "HS RT": board_hashrate,
                "Factory GHS": round(me.spec.nominal_ths * 1000 * share),
                "Upfreq Complete": 1 if now.mining else 0,
                # Chips without supply do not answer the controller, so none count as effective.
                "Effective Chips": me.model.chips_per_board if now.mining else 0,
                "PCB SN": f"{me.serial}B{slot}",
                "Chip Temp Min": round(now.chip_c, 2),
                "Chip Temp Max": round(now.chip_c, 2),
                "Chip Temp Avg": round(now.chip_c, 2),
            }
        )
    return _section(9, f"{len(rows)} ASC(s)", "DEVS", rows)


def devdetails(me: Identity) -> dict[str, Any]:
    rows = [
        {
            "DEVDETAILS": slot,
            "Name": "SM",
            "ID": slot,
            "Driver": DRIVER,
            "Kernel": "",
            "Model": me.model.devdetails_model,
        }
        for slot in range(len(me.board_shares))
    ]
    return _section(69, "Device Details", "DEVDETAILS", rows)


def pools(now: Readings, me: Identity) -> dict[str, Any]:
    row = {
        "POOL": 0,
        "URL": me.pool_url,
        "Status": "Alive",
        "Priority": 0,
        "Quota": 1,
        "User": me.pool_user,
        "Stratum Active": now.mining,
        "Stratum URL": me.pool_url.split("://", 1)[-1],
    }
    return _section(7, "1 Pool(s)", "POOLS", [row])


# -- Whatsminer commands --------------------------------------------------------------------------


def get_version() -> dict[str, Any]:
    return flat_reply(
        CODE_OK, {"api_ver": API_VERSION, "fw_ver": FIRMWARE_VERSION, "platform": "H616", "chip": "K88"}
    )


def get_psu(now: Readings, me: Identity) -> dict[str, Any]:
    return flat_reply(
        CODE_OK,
        {
            "name": me.model.psu_model,
            "model": me.model.psu_model,
            "vin": f"{MAINS_VOLTS:.0f}",
            "iin": f"{now.power_w / MAINS_VOLTS:.2f}",
            "pin": str(round(now.power_w)),
            "fan_speed": str(now.psu_fan_rpm),
            "serial_no": f"{me.serial}P",
            "vender": "1",
        },
    )


def get_miner_info(me: Identity) -> dict[str, Any]:
    return flat_reply(
        CODE_OK,
        {
            "ip": me.host,
            "proto": "static",
            "netmask": "255.0.0.0",
            "gateway": "127.0.0.1",
            "dns": "127.0.0.1",
            "hostname": "WhatsMiner",
            "mac": me.mac,
            "ledstat": "auto",
            "minersn": me.serial,
            "powersn": f"{me.serial}P",
        },
    )


def get_error_code() -> dict[str, Any]:
    return flat_reply(CODE_OK, {"error_code": []})


def miner_status(now: Readings) -> dict[str, Any]:
    """``status``: firmware from 2023 on reports ``mineroff``; pyasic's is_mining reads it."""
    return flat_reply(
        CODE_OK,
        {
            "mineroff": "false" if now.mining else "true",
            "mineroff_reason": "" if now.mining else "by whatsminer api",
            "mineroff_time": "",
            "FirmwareVersion": FIRMWARE_VERSION,
            "power_mode": "",
            "power_limit_set": str(round(now.limit_w)),
            "hash_percent": "",
        },
    )
