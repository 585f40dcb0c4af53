"""Every MQTT topic wattshift uses, derived from one prefix (default ``wattshift/<site>``).

::

    <prefix>/availability              online | offline (retained; offline is the last will)
    <prefix>/state/site                site state, JSON (retained)
    <prefix>/state/circuit/<name>      one circuit (retained)
    <prefix>/state/class/<class>       one device class: miner, gpu (retained)
    <prefix>/state/device/<id>         one device (retained)
    <prefix>/decisions                 each tick's decision (not retained)
    <prefix>/events                    budget events, commands, mode changes (not retained)
    <prefix>/cmd                       commands in (JSON with a "command" field)
    <prefix>/reply/<request id>        answers (or the command's reply_to / MQTT5 response topic)
    <prefix>/reply                     answers to requests that carried no usable id
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str

    @property
    def availability(self) -> str:
        return f"{self.prefix}/availability"

    @property
    def site(self) -> str:
        return f"{self.prefix}/state/site"

    def circuit(self, name: str) -> str:
        return f"{self.prefix}/state/circuit/{name}"

    def device_class(self, name: str) -> str:
        return f"{self.prefix}/state/class/{name}"

    def device(self, device_id: str) -> str:
        return f"{self.prefix}/state/device/{device_id}"

    @property
    def decisions(self) -> str:
        return f"{self.prefix}/decisions"

    @property
    def events(self) -> str:
        return f"{self.prefix}/events"

    @property
    def command(self) -> str:
        return f"{self.prefix}/cmd"

    def reply(self, request_id: str | None) -> str:
        return f"{self.prefix}/reply/{request_id}" if request_id else f"{self.prefix}/reply"
