"""Questions a firmware answers about itself that pyasic's ``get_data`` does not ask.

Each query is one call of the real pyasic client (the driver runs it under its own deadline and
failure mapping); each parser turns the answer into our vocabulary and returns ``None`` where
the firmware did not say. Nothing here imports pyasic.

- Braiins OS+ reports the power-target range it accepts (``ConfigurationService/GetConstraints``:
  ``tunerConstraints.powerTarget.{min,max,default}``), for any model it runs on.
- Braiins OS+ reports whether its miner is paused (``status`` in ``MinerService/
  GetMinerDetails``) at once, where pyasic's ``is_mining`` is derived from the boards' hashrate,
  which lags a wake by the minutes the hashboards take to boot. (``GetMinerStatus`` says the
  same, but it is a server stream, and pyasic 0.79.0's ``get_miner_status`` awaits the stream
  as if it were one reply, which raises TypeError.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

# MinerStatus names (braiins.bos.v1): the hashboards run (or are coming up) / they do not.
_RUNNING = ("NORMAL", "RESTRICTED")
_STOPPED = ("PAUSED", "NOT_STARTED", "SUSPENDED")


@dataclass(frozen=True, slots=True)
class Query:
    """One pyasic call and how to read its answer."""

    name: str  # for error messages: "power-target constraints"
    call: Callable[[Any], Awaitable[Any]]  # the pyasic miner -> its raw answer
    parse: Callable[[Any], Any]  # raw answer -> our value, None where the firmware did not say


# -- Braiins OS+ (BOSer, gRPC) -------------------------------------------------------------------


def _boser_constraints(miner: Any) -> Awaitable[Any]:
    return miner.web.get_constraints()  # type: ignore[no-any-return]


def power_target_range(answer: Any) -> tuple[float, float] | None:
    """(min, max) watts from a GetConstraints answer; None if it holds no usable range."""
    try:
        target = answer["tunerConstraints"]["powerTarget"]
        low, high = float(target["min"]["watt"]), float(target["max"]["watt"])
    except (KeyError, TypeError, ValueError):
        return None
    return (low, high) if 0 < low <= high else None


def _boser_details(miner: Any) -> Awaitable[Any]:
    return miner.web.get_miner_details()  # type: ignore[no-any-return]


def miner_running(answer: Any) -> bool | None:
    """True: the firmware runs its hashboards (mining, or booting them); False: paused or not
    started; None: it did not say."""
    status = answer.get("status") if isinstance(answer, Mapping) else None
    if status is None:
        return None
    # betterproto's to_pydict gives the enum member; its JSON form would give the name string.
    name = str(getattr(status, "name", status)).upper()
    if any(word in name for word in _RUNNING):
        return True
    if any(word in name for word in _STOPPED):
        return False
    return None


BOSER_RANGE = Query("power-target constraints", _boser_constraints, power_target_range)
BOSER_STATE = Query("miner status", _boser_details, miner_running)


# -- whether the miner mines: pyasic's own answer ------------------------------------------------


def _pyasic_is_mining(miner: Any) -> Awaitable[Any]:
    # The data function pyasic's get_data runs for "is_mining" (named in each backend's
    # DataLocations): Whatsminer's ``status`` (mineroff), stock Antminer's work mode on the web.
    return miner._is_mining()  # type: ignore[no-any-return]


def mining_flag(answer: Any) -> bool | None:
    return answer if isinstance(answer, bool) else None


PYASIC_IS_MINING = Query("mining state", _pyasic_is_mining, mining_flag)

