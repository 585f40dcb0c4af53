"""What wattshift knows about pyasic's firmware backends, as data, and how to build pyasic miners.

Nothing here imports pyasic at import time: importing pyasic configures the root logger
(``logging.basicConfig`` in ``pyasic.logger``) and emits pydantic deprecation warnings, so the
driver loads it through :func:`~.pyasic_import.import_pyasic`, which undoes the first and
silences the second.

The backend table is keyed by the *backend* class (``LUXMiner``, ``BOSer``, ...), found by
walking the miner's MRO, never by the hundreds of per-model subclasses pyasic generates.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from wattshift.model.miner import PowerControl

from .cgminer_telemetry import BMMINER, BOSMINER, BTMINER, LUXOS, VNISH, LeanReader
from .pyasic_import import import_pyasic as import_pyasic  # where the rest of wattshift finds it
from .pyasic_queries import BOSER_RANGE, BOSER_STATE, PYASIC_IS_MINING, Query

# -- the backend table ---------------------------------------------------------------------------


def _forget_luxos_session(miner: Any) -> None:
    """LuxOS ends sessions on reboot (and on logoff by anyone); pyasic keeps its token forever
    and never logs on again. Forgetting it makes pyasic ask ``session``/``logon`` afresh: one
    extra round trip per command, and commands are rare."""
    miner.rpc.session_token = None


@dataclass(frozen=True, slots=True)
class BackendTraits:
    """How one pyasic backend behaves, where the backends differ."""

    firmware: str  # our name for it, as in the site file
    control: PowerControl
    # False where pyasic's is_mining cannot be believed (LuxOS: no data location, always True).
    reports_mining: bool = True
    # Run before every command (LuxOS: forget the session token pyasic would reuse).
    before_command: Callable[[Any], None] | None = None
    # Where the watts range comes from: a query of the firmware (Braiins OS+ constraints), or
    # the limit the firmware reports (Whatsminer: its power limit reads the factory ceiling
    # until lowered). Neither: the model table, then the operator's nameplate.
    range_query: Query | None = None
    range_from_limit: bool = False
    # Asks the firmware whether its hashboards run, where pyasic's is_mining lags (BOSer).
    state_query: Query | None = None
    # pyasic's set_power_limit returns False when the firmware said OK but echoed another
    # setting (LuxOS answers profileset with the profile it holds): not a refusal, a
    # command to confirm by read-back.
    false_set_is_unconfirmed: bool = False
    # Polls go over the firmware's CGMiner API in one multicommand where it costs less than
    # pyasic's get_data (cgminer_telemetry; measured in benchmarks/telemetry_cycle.py).
    lean: LeanReader | None = None
    # On the lean path, asked of a miner that hashes nothing: is it mining (booting) or not?
    # (The lean multicommand cannot tell; a miner that hashes is mining.)
    lean_state: Query | None = None


UNKNOWN_BACKEND = BackendTraits("unknown", PowerControl.ON_OFF)

# Keyed by "module.Class" of the backend, so the table is plain data (no pyasic import) and a
# test checks every key still names a real pyasic class.
BACKENDS: Mapping[str, BackendTraits] = {
    "pyasic.miners.backends.braiins_os.BOSer": BackendTraits(
        "braiins", PowerControl.WATTS, range_query=BOSER_RANGE, state_query=BOSER_STATE, lean=BOSMINER
    ),
    # The SSH/GraphQL fallback pyasic picks when the model does not map to a BOSer class: its
    # power target goes through a TOML file over SSH, which we do not rely on.
    "pyasic.miners.backends.braiins_os.BOSMiner": BackendTraits("braiins", PowerControl.ON_OFF),
    # V2's is_mining reads the firmware's own "mineroff" flag, so it is the firmware's state. API
    # v3 has no mining flag: pyasic 0.79.0 says is_mining=True while the miner is stopped.
    "pyasic.miners.backends.btminer.BTMinerV2": BackendTraits(
        "whatsminer", PowerControl.WATTS, range_from_limit=True, lean=BTMINER, lean_state=PYASIC_IS_MINING
    ),
    "pyasic.miners.backends.btminer.BTMinerV3": BackendTraits(
        "whatsminer", PowerControl.WATTS, reports_mining=False, range_from_limit=True
    ),
    "pyasic.miners.backends.luxminer.LUXMiner": BackendTraits(
        "luxos",
        PowerControl.PROFILES,
        reports_mining=False,
        before_command=_forget_luxos_session,
        false_set_is_unconfirmed=True,
        lean=LUXOS,
    ),
    # pyasic issue #430: VNish set_power_limit always returns False in 0.79.0.
    "pyasic.miners.backends.vnish.VNish": BackendTraits("vnish", PowerControl.ON_OFF, lean=VNISH),
    # Stock Antminer: sleep/normal only, and a mode change restarts it.
    "pyasic.miners.backends.antminer.AntminerModern": BackendTraits(
        "antminer", PowerControl.ON_OFF, lean=BMMINER, lean_state=PYASIC_IS_MINING
    ),
    "pyasic.miners.backends.antminer.AntminerOld": BackendTraits("antminer", PowerControl.ON_OFF),
}


def traits_for(miner: Any) -> BackendTraits:
    """The traits of the first backend class in the miner's MRO that the table knows."""
    backend = backend_of(miner)
    return BACKENDS[backend] if backend is not None else UNKNOWN_BACKEND


def backend_of(miner: Any) -> str | None:
    """The key in :data:`BACKENDS` of the first backend class in the miner's MRO, if any."""
    for cls in type(miner).__mro__:
        key = f"{cls.__module__}.{cls.__qualname__}"
        if key in BACKENDS:
            return key
    return None


# -- building a miner object from an operator's hint --------------------------------------------


@dataclass(frozen=True, slots=True)
class FirmwareHint:
    """How to build a pyasic miner for a firmware without identifying it."""

    miner_type: str  # pyasic.miners.factory.MinerTypes member
    model_query: str  # MinerFactory method that asks the firmware for its model
    version_query: str | None = None  # MinerFactory method for the firmware version, if it matters


FIRMWARE_HINTS: Mapping[str, FirmwareHint] = {
    "luxos": FirmwareHint("LUX_OS", "get_miner_model_luxos"),
    "braiins": FirmwareHint("BRAIINS_OS", "get_miner_model_braiins_os"),
    # BTMiner picks its API v2 or v3 class from the firmware version.
    "whatsminer": FirmwareHint("WHATSMINER", "get_miner_model_whatsminer", "get_miner_version_whatsminer"),
    "vnish": FirmwareHint("VNISH", "get_miner_model_vnish"),
    "antminer": FirmwareHint("ANTMINER", "get_miner_model_antminer"),
}


async def identify(address: str) -> Any:
    """``pyasic.get_miner``, with its verdict checked where its race is known to go wrong.

    pyasic races a web probe against TCP 4028's ``version`` and keeps the first answer it
    recognises. VNish's bmminer names the model the way stock firmware does ("Antminer S21
    (Vnish 1.2.6)" reads as a stock Antminer), so whenever 4028 answers first a VNish miner
    comes out as stock Antminer and every read of it fails afterwards. A stock verdict is
    therefore confirmed by pyasic's web probe alone (one more ``GET /``); when the web says
    VNish, the VNish class is built instead.

    Likewise a Whatsminer taken for API v2 is asked on 4433 for its firmware version, because
    pyasic asks there only when 4028 answered something it could not read (see
    :func:`whatsminer_v3_version`).
    """
    pyasic = import_pyasic()
    miner = await pyasic.get_miner(address)
    backend = backend_of(miner)
    if backend == "pyasic.miners.backends.antminer.AntminerModern":
        factory = importlib.import_module("pyasic.miners.factory")
        # Private, stable through pyasic 0.79.x (pinned); tests/drivers/test_pyasic_identification.py
        # fails at once if it goes.
        if await factory.miner_factory._get_miner_web(address) is factory.MinerTypes.VNISH:
            return await build_from_hint(address, "vnish", None)
    elif backend == "pyasic.miners.backends.btminer.BTMinerV2" and await whatsminer_v3_version(address):
        return await build_from_hint(address, "whatsminer", None)
    return miner


async def whatsminer_v3_version(address: str) -> str | None:
    """The firmware version a Whatsminer's API v3 (TCP 4433) reports, None where nothing answers.

    pyasic 0.79.0's ``get_miner_version_whatsminer`` asks 4433 only when 4028 answered with
    something it could not read; when 4028 is closed it gets no version at all and builds its
    API v2 class for a firmware that speaks v3 only.
    """
    factory = importlib.import_module("pyasic.miners.factory")
    reply = await factory.miner_factory.send_btminer_v3_api_command(address, "get.device.info")
    try:
        version = reply["msg"]["system"]["fwversion"]
    except (TypeError, LookupError):
        return None
    return str(version) if version else None


class ModelUnknown(Exception):
    """The firmware named in a hint did not tell its model."""


async def build_from_hint(address: str, firmware: str, model: str | None) -> Any:
    """The pyasic miner for ``firmware`` and ``model`` at ``address``, from pyasic's MINER_CLASSES.

    When the operator's model spelling is one pyasic knows ("Antminer S21" for LuxOS and
    Braiins), no request is sent at all. Otherwise the firmware is asked for its model, which
    is one request instead of identification's races over four ports.
    """
    hint = FIRMWARE_HINTS.get(firmware)
    if hint is None:
        raise ValueError(f"{address}: no firmware hint {firmware!r} (known: {', '.join(sorted(FIRMWARE_HINTS))})")
    import_pyasic()
    factory = importlib.import_module("pyasic.miners.factory")
    classes = factory.MINER_CLASSES[factory.MinerTypes[hint.miner_type]]
    key = model.upper() if model else None
    if key is None or key not in classes:
        reported = await getattr(factory.miner_factory, hint.model_query)(address)
        if not reported:
            raise ModelUnknown(f"{address}: the {firmware} firmware did not tell its model")
        key = str(reported).upper()
    version = await getattr(factory.miner_factory, hint.version_query)(address) if hint.version_query else None
    if version is None and firmware == "whatsminer":
        version = await whatsminer_v3_version(address)
    return classes.get(key, classes[None])(address, version)


def set_credentials(miner: Any, username: str | None, password: str | None) -> None:
    """Give pyasic the login for both of the miner's APIs (RPC and web/gRPC)."""
    for api in (getattr(miner, "rpc", None), getattr(miner, "web", None)):
        if api is None:
            continue
        if password is not None:
            api.pwd = password
        if username is not None and hasattr(api, "username"):
            api.username = username


# -- power ranges by model ----------------------------------------------------------------------

# What the firmwares accept as a power target, by model (the simulators model the same table).
# A fallback only: Braiins OS+ and Whatsminer report their range, LuxOS its profiles. It gives
# the nameplate draw of an on/off miner, and a range where the firmware would not say.
POWER_RANGES: Mapping[str, tuple[float, float]] = {
    "antminer s19 xp": (1500.0, 3600.0),
    "antminer s21": (1800.0, 4000.0),
    "antminer s21 pro": (1800.0, 4000.0),
    "whatsminer m50s": (1800.0, 3700.0),
    "whatsminer m60s": (1800.0, 3900.0),
}


def model_name(miner: Any) -> str | None:
    """Make and model as one string ("AntMiner S21", "WhatsMiner M60S VK10"), None if unknown."""
    raw = getattr(miner, "raw_model", None)
    if raw is None:
        return None
    make = getattr(miner, "make", None)
    return f"{make} {raw}" if make else str(raw)


def power_range_for(model: str | None) -> tuple[float, float] | None:
    """The range for the longest known model name the given one starts with."""
    if not model:
        return None
    key = " ".join(model.lower().split())
    for name in sorted(POWER_RANGES, key=len, reverse=True):
        if key.startswith(name):
            return POWER_RANGES[name]
    return None
