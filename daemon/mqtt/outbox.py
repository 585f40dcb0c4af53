"""What the MQTT bridge has to publish, and when: the part of it that never touches a socket.

Two kinds of message leave the daemon:

- events and replies, in order, from a bounded queue that drops the oldest when the broker has
  been away too long (``dropped`` counts them); a message leaves the queue only once sent, so
  one in flight at a disconnect is tried again;
- state topics (site, circuits, classes, devices), retained: each goes out only when it changed,
  at most once per ``min_interval_seconds``, and the latest value always goes out in the end.
  After a reconnect everything is sent again (the broker may have lost its retained copies).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from paho.mqtt.properties import Properties

# State publishes awaiting their acknowledgement at once. A site has hundreds of device topics;
# all at once would only queue in paho, and aiomqtt warns past 10 pending calls.
PUBLISH_WINDOW = 8


class Publisher(Protocol):
    async def publish(
        self, topic: str, payload: bytes, *, qos: int, retain: bool, properties: Properties | None = None
    ) -> None: ...


@dataclass(frozen=True)
class Outgoing:
    topic: str
    payload: bytes
    properties: Properties | None = None


class Outbox:
    def __init__(self, *, queue_limit: int, min_interval_seconds: float, clock: Callable[[], float]) -> None:
        self._queue: collections.deque[Outgoing] = collections.deque(maxlen=queue_limit)
        self._interval = min_interval_seconds
        self._clock = clock
        self._pending_state: dict[str, bytes] = {}
        self._sent_state: dict[str, tuple[bytes, float]] = {}
        self.dropped = 0
        self.refused = 0  # messages the client would not send at all (bad topic), dropped

    def enqueue(self, topic: str, payload: bytes, properties: Properties | None = None) -> None:
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(Outgoing(topic, payload, properties))

    def offer_state(self, payloads: Mapping[str, bytes]) -> None:
        """The state as it is now: topics whose payload differs from the one sent become due."""
        for topic, data in payloads.items():
            sent = self._sent_state.get(topic)
            if sent is None or sent[0] != data:
                self._pending_state[topic] = data
            else:
                self._pending_state.pop(topic, None)

    def forget_sent(self) -> None:
        """After a reconnect: nothing counts as sent any more."""
        self._sent_state.clear()

    def due_state(self) -> tuple[list[tuple[str, bytes]], float | None]:
        """The state topics that may go now, and how long until the next one may."""
        now = self._clock()
        due, wait = [], None
        for topic, data in self._pending_state.items():
            sent = self._sent_state.get(topic)
            ready_at = sent[1] + self._interval if sent is not None else now
            if ready_at <= now:
                due.append((topic, data))
            else:
                wait = min(wait, ready_at - now) if wait is not None else ready_at - now
        return due, wait

    async def send(self, client: Publisher, *, qos: int, retain: bool) -> float | None:
        """Send the queue, then the state that is due; returns seconds until more state is due."""
        while self._queue:
            item = self._queue[0]
            try:
                await client.publish(item.topic, item.payload, qos=qos, retain=False, properties=item.properties)
            except ValueError:
                # The client refused the message itself (a wildcard or malformed topic): sending it
                # again would fail again, and a head-of-queue that always fails would stop every
                # message behind it and reconnect for ever.
                self._queue.popleft()
                self.refused += 1
                continue
            self._queue.popleft()  # only once sent: a message in flight at a disconnect is tried again
        due, wait = self.due_state()
        for start in range(0, len(due), PUBLISH_WINDOW):
            batch = due[start : start + PUBLISH_WINDOW]
            await asyncio.gather(*(client.publish(t, d, qos=qos, retain=retain) for t, d in batch))
            now = self._clock()
            for topic, data in batch:
                self._sent_state[topic] = (data, now)
                if self._pending_state.get(topic) == data:
                    del self._pending_state[topic]
        return wait
