"""The site meter (revenue meter, PDU) as read from MQTT.

Someone else publishes the meter: a Tasmota/Shelly plug, a Modbus gateway, the utility's
interface. :class:`SiteMeter` takes each message on the configured topic
(:class:`wattshift.daemon.mqtt.bridge.MqttBridge` subscribes and feeds it), pulls the configured
JSON field out of it, converts to watts, and keeps the latest good reading with the time it
arrived. A bad message is counted and ignored: it never replaces a good reading, and the meter
goes stale on its own if nothing good arrives.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .price_http import number, pick
from .prices import PriceError


class MeterError(ValueError):
    """A meter message that could not be read; the message says which part and why."""


@dataclass(frozen=True, slots=True)
class MeterReading:
    watts: float
    at: float  # loop clock (monotonic seconds) when the message arrived
    age_seconds: float
    stale: bool


def extract(payload: bytes, field: str, units: Literal["W", "kW"]) -> float:
    """Watts from one meter message; :class:`MeterError` if the field is missing or not a
    finite, non-negative number."""
    try:
        data: Any = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MeterError(f"not JSON: {err}") from None
    what = f"field {field!r}" if field else "the payload"
    try:
        value = number("meter", pick("meter", data, field) if field else data, what)
    except PriceError as err:  # the JSON helpers are the price feeds'; the error is the meter's
        raise MeterError(str(err)) from None
    if value < 0:
        raise MeterError(f"meter: {what} is {value}, must be >= 0")
    return value * 1000.0 if units == "kW" else value


class SiteMeter:
    def __init__(
        self,
        topic: str,
        field: str = "",
        units: Literal["W", "kW"] = "W",
        *,
        stale_after_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.topic = topic
        self.field = field
        self.units = units
        self.stale_after = stale_after_seconds
        self._clock = clock
        self._last: tuple[float, float] | None = None  # (watts, clock)
        self.readings = 0  # messages that gave a good reading
        self.errors = 0  # messages refused
        self.last_error: str | None = None

    @classmethod
    def from_config(cls, config: Any, clock: Callable[[], float] = time.monotonic) -> SiteMeter:
        """From :class:`wattshift.daemon.config.mqtt.MeterConfig`."""
        return cls(config.topic, config.field, config.units, stale_after_seconds=config.stale_after_seconds,
                   clock=clock)

    def feed(self, payload: bytes) -> float | None:
        """Take one message; the watts it gave, or None if it was bad."""
        try:
            watts = extract(payload, self.field, self.units)
        except MeterError as err:
            self.errors += 1
            self.last_error = str(err)
            return None
        self._last = (watts, self._clock())
        self.readings += 1
        return watts

    def latest(self) -> MeterReading | None:
        """The last good reading and how old it is; None if there never was one."""
        if self._last is None:
            return None
        watts, at = self._last
        age = max(0.0, self._clock() - at)
        return MeterReading(watts, at, age, age > self.stale_after)

    @property
    def stale(self) -> bool:
        """No good reading, or the last one is too old: increases must wait."""
        reading = self.latest()
        return reading is None or reading.stale
