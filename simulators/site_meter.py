"""A simulated site revenue meter publishing over MQTT, as a Modbus gateway or a smart meter's
MQTT bridge does: every ``interval`` seconds the site's true draw, on one topic, as

    {"power_kw": 812.345, "energy_kwh": 1.234}

(not retained: a reading is only news when it is new). ``read_watts`` gives the true draw,
including what no device reports (cooling, losses). When the broker goes away the meter keeps
measuring and publishes again once it can reconnect, as a real gateway would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable

import aiomqtt

log = logging.getLogger(__name__)

FIELD = "power_kw"
UNITS = "kW"


def site_file_block(topic: str, stale_after_seconds: float) -> dict[str, object]:
    """The site file's ``mqtt.meter`` block that reads a :class:`SimulatedMeter` on ``topic``."""
    return {"topic": topic, "field": FIELD, "units": UNITS, "stale_after_seconds": stale_after_seconds}


class SimulatedMeter:
    def __init__(
        self,
        read_watts: Callable[[], float],
        host: str,
        port: int,
        topic: str,
        *,
        interval: float = 1.0,
        client_id: str = "simulated-site-meter",
    ) -> None:
        self.read_watts = read_watts
        self.host, self.port, self.topic = host, port, topic
        self.interval = interval
        self.client_id = client_id
        self.published = 0
        self.energy_kwh = 0.0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SimulatedMeter:
        self._task = asyncio.create_task(self._run(), name="simulated-site-meter")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            try:
                async with aiomqtt.Client(self.host, self.port, identifier=self.client_id) as client:
                    while True:
                        watts = self.read_watts()
                        now = time.monotonic()
                        self.energy_kwh += watts * (now - last) / 3.6e6
                        last = now
                        payload = {FIELD: round(watts / 1000, 3), "energy_kwh": round(self.energy_kwh, 3)}
                        await client.publish(self.topic, json.dumps(payload), qos=0)
                        self.published += 1
                        await asyncio.sleep(self.interval)
            except aiomqtt.MqttError as err:
                log.debug("simulated meter: broker unavailable (%s); retrying", err)
                await asyncio.sleep(self.interval)
