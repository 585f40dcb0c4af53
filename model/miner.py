"""A miner as the domain knows it: how it is controlled, what it reports, how it fails."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Failure(enum.StrEnum):
    """Why a device call failed. Stable strings: dashboards and the journal count them."""

    NO_ANSWER = "no_answer"  # connection refused or reset: the device is not there
    TIMEOUT = "timeout"  # connected, then nothing within the deadline (a hang)
    GARBAGE = "garbage"  # answered, but not in its protocol
    REFUSED = "refused"  # answered the command with an error
    IGNORED = "ignored"  # said OK, but the read-back shows nothing changed
    UNSUPPORTED = "unsupported"  # this firmware cannot do that at all
    UNIDENTIFIED = "unidentified"  # nothing at the address could be identified as a miner


# A miner whose draw nothing tells (unidentified, or on/off and found asleep with no table entry
# and no nameplate) could be anything on the shelf: counted as a large air-cooled unit until the
# operator gives its nameplate (max_kw in the site file).
UNKNOWN_MINER_WATTS = 4000.0


class PowerControl(enum.StrEnum):
    """How finely a miner's firmware lets us set its power."""

    WATTS = "watts"  # any target in [min, max] (Braiins OS+, Whatsminer)
    PROFILES = "profiles"  # discrete steps; a target snaps down to a profile (LuxOS)
    ON_OFF = "on_off"  # sleep and wake only (stock firmware)


class CapabilitySource(enum.StrEnum):
    """Where a miner's control and range were learned. Stable strings: a bounded metric label."""

    FIRMWARE = "firmware"  # the miner told us (Braiins constraints, Whatsminer limit, LuxOS profiles)
    MODEL_TABLE = "model_table"  # wattshift's table of models: nameplate draw only
    NAMEPLATE = "nameplate"  # the operator's max_kw in the site file
    READING = "reading"  # nothing better: what it was set to or drew when first read
    DEFAULT = "default"  # nothing known at all


@dataclass(frozen=True, slots=True)
class MinerCapability:
    control: PowerControl
    min_watts: float
    max_watts: float
    profiles_watts: tuple[float, ...] = ()  # ascending, for PowerControl.PROFILES
    can_sleep: bool = True
    source: CapabilitySource = CapabilitySource.DEFAULT

    def describe(self) -> str:
        """One line for the plan, the journal and the logs: "watts 1600-3600 W (firmware)"."""
        if self.control is PowerControl.ON_OFF:
            return f"on/off at {self.max_watts:.0f} W ({self.source})"
        return f"{self.control} {self.min_watts:.0f}-{self.max_watts:.0f} W ({self.source})"

    def achievable_watts(self, wanted: float) -> float:
        """The highest setting at or below ``wanted`` that the firmware can hold (0: sleep)."""
        if wanted < self.min_watts:
            return 0.0
        if self.control is PowerControl.ON_OFF:
            return self.max_watts if wanted >= self.max_watts else 0.0
        if self.control is PowerControl.PROFILES and self.profiles_watts:
            fitting = [p for p in self.profiles_watts if p <= wanted]
            return fitting[-1] if fitting else 0.0
        return min(wanted, self.max_watts)


@dataclass(frozen=True, slots=True)
class MinerReading:
    """One poll of one miner. ``None`` means the miner did not say."""

    device_id: str
    model: str | None
    firmware: str | None
    watts: float | None
    limit_watts: float | None
    hashrate_ths: float | None
    mining: bool | None
    temperatures_c: tuple[float, ...] = ()
    fans_rpm: tuple[int, ...] = ()
    errors: tuple[str, ...] = ()
    # The firmware says its hashboards run, yet they hash nothing: they are booting after a
    # wake, for minutes, and will climb to the limit. Known even to a loop that just started.
    booting: bool = False
