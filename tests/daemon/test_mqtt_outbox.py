"""The MQTT outbox without a broker: what goes out, in what order, how many at once, and what
survives a connection lost mid-send. (The bridge's tests run it against a real Mosquitto.)"""

from __future__ import annotations

import asyncio

import pytest

from wattshift.daemon.mqtt.outbox import PUBLISH_WINDOW, Outbox


class Recording:
    """A publisher that takes a while to acknowledge, counts how many calls wait at once, and
    can drop the connection after ``fail_after`` publishes."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.sent: list[tuple[str, bytes, bool]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.fail_after = fail_after

    async def publish(self, topic, payload, *, qos, retain, properties=None):
        if self.fail_after is not None and len(self.sent) >= self.fail_after:
            raise ConnectionError("broker went away")
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.001)
        self.in_flight -= 1
        self.sent.append((topic, payload, retain))


def outbox(clock, *, queue_limit=100, interval=5.0):
    return Outbox(queue_limit=queue_limit, min_interval_seconds=interval, clock=lambda: clock[0])


async def test_hundreds_of_state_topics_go_out_a_window_at_a_time():
    clock = [0.0]
    box = outbox(clock)
    box.offer_state({f"site/state/device/m{i}": b"{}" for i in range(250)})
    client = Recording()
    await box.send(client, qos=1, retain=True)
    assert len(client.sent) == 250 and all(retain for _, _, retain in client.sent)
    assert client.most_in_flight == PUBLISH_WINDOW


async def test_events_in_order_then_state_only_when_changed_and_not_too_often():
    clock = [0.0]
    box = outbox(clock)
    for n in range(3):
        box.enqueue("site/events", f"e{n}".encode())
    box.offer_state({"site/state/site": b"a"})
    client = Recording()
    assert await box.send(client, qos=1, retain=True) is None
    assert client.sent == [("site/events", b"e0", False), ("site/events", b"e1", False),
                           ("site/events", b"e2", False), ("site/state/site", b"a", True)]

    box.offer_state({"site/state/site": b"a"})  # unchanged: nothing to send
    assert box.due_state() == ([], None)
    clock[0] = 1.0
    box.offer_state({"site/state/site": b"b"})  # changed, but sent a second ago: in 4 s
    assert await box.send(client, qos=1, retain=True) == pytest.approx(4.0)
    assert len(client.sent) == 4
    clock[0] = 5.0
    await box.send(client, qos=1, retain=True)
    assert client.sent[-1] == ("site/state/site", b"b", True)


async def test_a_lost_connection_loses_no_event_and_no_state():
    clock = [0.0]
    box = outbox(clock)
    box.enqueue("site/events", b"e0")
    box.enqueue("site/events", b"e1")
    box.offer_state({f"site/state/device/m{i}": b"{}" for i in range(20)})
    failing = Recording(fail_after=1)
    with pytest.raises(ConnectionError):
        await box.send(failing, qos=1, retain=True)
    box.forget_sent()  # the bridge does this on reconnect
    client = Recording()
    await box.send(client, qos=1, retain=True)
    assert [p for t, p, _ in client.sent if t == "site/events"] == [b"e1"]  # e0 went; e1 is tried again
    assert len([t for t, _, _ in client.sent if t.startswith("site/state/")]) == 20


async def test_a_full_queue_drops_the_oldest_and_counts_it():
    clock = [0.0]
    box = outbox(clock, queue_limit=10)
    for n in range(12):
        box.enqueue("site/events", str(n).encode())
    client = Recording()
    await box.send(client, qos=1, retain=True)
    assert box.dropped == 2
    assert [int(p) for _, p, _ in client.sent] == list(range(2, 12))


class RefusesWildcards(Recording):
    async def publish(self, topic, payload, *, qos, retain, properties=None):
        if "#" in topic or "+" in topic:
            raise ValueError("Publish topic cannot contain wildcards.")  # paho's own check
        await super().publish(topic, payload, qos=qos, retain=retain, properties=properties)


async def test_a_message_the_client_refuses_is_dropped_not_retried_for_ever():
    # A reply once went to an MQTT 5 response topic of "a/#": paho refused it on every try, it
    # stayed at the head of the queue, and the bridge reconnected again and again.
    clock = [0.0]
    box = outbox(clock)
    box.enqueue("a/#", b"bad")
    box.enqueue("site/events", b"next")
    client = RefusesWildcards()
    await box.send(client, qos=1, retain=False)
    assert client.sent == [("site/events", b"next", False)]
    assert box.refused == 1
    await box.send(client, qos=1, retain=False)
    assert len(client.sent) == 1  # nothing left to retry
