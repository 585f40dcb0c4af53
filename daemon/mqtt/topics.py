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

``<prefix>/reply`` is the default reply prefix; a command may ask for its answer on another
topic only under the reply prefix, and never on a topic the daemon or another reader uses.
"""

from __future__ import annotations

from dataclasses import dataclass

from wattshift.daemon.config.mqtt import check_topic


def _under(topic: str, prefix: str) -> bool:
    return topic == prefix or topic.startswith(prefix + "/")


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str
    reply_prefix: str | None = None  # None: <prefix>/reply
    # Topics others read or write (Home Assistant's discovery prefix, the site meter): no reply
    # may land on them or under them, whatever the reply prefix.
    reserved: tuple[str, ...] = ()

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

    @property
    def replies(self) -> str:
        return self.reply_prefix or f"{self.prefix}/reply"

    def reply(self, request_id: str | None) -> str:
        return f"{self.replies}/{request_id}" if request_id else self.replies

    def reply_problem(self, topic: str) -> str | None:
        """Why a command may not have its answer on ``topic`` (None: it may)."""
        if len(topic) > 1024:
            return "reply topic longer than 1024 characters"
        try:
            check_topic(topic, what="reply topic")
        except ValueError as err:
            return str(err)
        if not _under(topic, self.replies):
            return f"replies go only under {self.replies}/"
        own = (self.availability, f"{self.prefix}/state", self.decisions, self.events, self.command)
        for taken in (*own, *self.reserved):
            if _under(topic, taken) or _under(taken, topic):
                return f"{taken} is not a reply topic"
        return None
