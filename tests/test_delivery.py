"""edge.mqtt.delivery on its own, over a real transport to a real Mosquitto: a kept message
leaves the spool only on its PUBACK, waits out outages in order, survives a new process;
other messages are dropped and counted while the broker is away; every connection is
greeted with ``online`` and the ``on_connected`` messages."""

from __future__ import annotations

import json
import os
import signal
import time

import paho.mqtt.client as mqtt

from edge.config import parse_config
from edge.mqtt.delivery import Delivery
from edge.mqtt.payloads import Message
from edge.mqtt.spool import DiskSpool
from edge.mqtt.transport import Transport
from tests.broker import Broker
from tests.conftest import Subscriber, wait_until

AVAILABILITY = "d/availability"


def make_delivery(port: int, spool_dir, on_connected=None) -> Delivery:
    config = parse_config({"mqtt": {"host": "127.0.0.1", "port": port, "reconnect_max_seconds": 1}}).mqtt
    transport = Transport(config, "delivery-test", will=(AVAILABILITY, b"offline"))
    delivery = Delivery(transport, DiskSpool(spool_dir, 1000), AVAILABILITY, on_connected)
    delivery.start()
    return delivery


def close(delivery: Delivery, timeout: float = 2.0) -> None:
    delivery.stop(timeout)


def summary(n: int) -> Message:
    return Message("d/events", json.dumps({"event_id": f"e{n}", "n": n}).encode(), 1, False)


def test_a_kept_message_leaves_the_spool_only_when_the_broker_acknowledged_it(tmp_path, subscribe):
    broker = Broker(tmp_path).start()
    sub = subscribe(broker.port, "d/#")
    delivery = make_delivery(broker.port, tmp_path / "spool")
    try:
        assert delivery.transport.wait_connected(10)
        os.kill(broker.process.pid, signal.SIGSTOP)  # the broker hangs: no PUBACK can come
        try:
            delivery.publish(summary(1), keep=True)
            time.sleep(1.5)
            assert len(delivery.spool) == 1, "removed without an acknowledgement"
        finally:
            os.kill(broker.process.pid, signal.SIGCONT)
        assert wait_until(lambda: len(delivery.spool) == 0, 10)
        assert sub.wait_for(lambda: [e["n"] for e in sub.json_on("/events")] == [1], 5)
    finally:
        close(delivery)
        broker.stop()


def test_kept_messages_wait_out_an_outage_in_order_and_others_are_dropped_and_counted(tmp_path):
    broker = Broker(tmp_path, persistent=True).start()
    received: list[dict] = []
    # a dashboard with a persistent session: what the broker accepted waits for it
    dashboard = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="dash", clean_session=False
    )
    dashboard.on_connect = lambda c, u, f, rc, p: c.subscribe("d/events", qos=1)
    dashboard.on_message = lambda c, u, m: received.append(json.loads(m.payload))
    dashboard.reconnect_delay_set(1, 1)
    dashboard.connect("127.0.0.1", broker.port)
    dashboard.loop_start()
    delivery = make_delivery(broker.port, tmp_path / "spool")
    try:
        assert delivery.transport.wait_connected(10)
        delivery.publish(summary(0), keep=True)
        assert wait_until(lambda: len(received) == 1, 5)
        broker.stop()
        assert wait_until(lambda: not delivery.transport.connected, 5)
        for n in (1, 2, 3):
            assert delivery.publish(summary(n), keep=True) is False
        assert delivery.publish(Message("d/events", b'{"n": -1}', 1, False)) is False
        assert delivery.dropped == 1 and len(delivery.spool) == 3
        broker.start()
        assert wait_until(lambda: len(delivery.spool) == 0, 15)
        assert wait_until(lambda: len({e["n"] for e in received}) >= 4, 10)
    finally:
        close(delivery)
        dashboard.loop_stop()
        broker.stop()
    numbers = list(dict.fromkeys(e["n"] for e in received))  # de-duplicated by id
    assert numbers == [0, 1, 2, 3]


def test_a_new_process_delivers_what_an_old_one_spooled(tmp_path, broker, subscribe):
    spool = DiskSpool(tmp_path / "spool", 1000)
    for n in range(3):
        spool.append(summary(n))  # written by a daemon that then died
    sub = subscribe(broker.port, "d/events")
    delivery = make_delivery(broker.port, tmp_path / "spool")
    try:
        assert wait_until(lambda: len(delivery.spool) == 0, 10)
        assert sub.wait_for(lambda: len(sub.json_on("/events")) == 3, 5)
    finally:
        close(delivery)
    assert [e["n"] for e in sub.json_on("/events")] == [0, 1, 2]
    assert not list((tmp_path / "spool").glob("*.json"))


def test_every_connection_is_greeted_with_online_and_the_hello_messages(tmp_path, subscribe):
    broker = Broker(tmp_path).start()
    sub = subscribe(broker.port, "d/#")
    hellos = []

    def on_connected():
        hellos.append(1)
        return [Message("d/state", b'{"status": "running"}', 1, True)]

    delivery = make_delivery(broker.port, tmp_path / "spool", on_connected)
    try:
        assert sub.wait_for(lambda: any(t == "d/state" for t, _, _ in sub.messages), 10)
        broker.stop()
        sub.close()
        assert wait_until(lambda: not delivery.transport.connected, 5)
        broker.start()
        sub = Subscriber(broker.port, "d/#")
        assert sub.wait_for(lambda: any(t == "d/state" for t, _, _ in sub.messages), 10)
    finally:
        close(delivery)
    assert len(hellos) == 2
    availability = [p for t, p, _ in sub.messages if t == AVAILABILITY]
    assert availability[0] == b"online" and availability[-1] == b"offline"  # finish() says offline
    sub.close()
    broker.stop()


def test_the_caller_never_waits_for_the_disk_and_the_sender_writes_what_it_handed_over(tmp_path, monkeypatch):
    """publish(keep=True) runs on the frame thread: it hands the summary over and returns;
    the sender writes it (two fsyncs) even with no broker, and finish() writes whatever was
    handed over last before anything else."""
    import edge.mqtt.spool

    real_fsync = os.fsync

    def slow_fsync(fd):
        time.sleep(0.3)  # a slow SD card
        real_fsync(fd)

    monkeypatch.setattr(edge.mqtt.spool.os, "fsync", slow_fsync)
    from tests.broker import free_port

    delivery = make_delivery(free_port(), tmp_path / "spool")  # nobody listens there
    try:
        started = time.monotonic()
        for n in range(3):
            delivery.publish(summary(n), keep=True)
        assert time.monotonic() - started < 0.1, "the caller waited for the disk"
        assert len(delivery.spool) == 3
        assert wait_until(lambda: delivery.spool.unsaved == 0, 10)
        assert len(list((tmp_path / "spool").glob("*.json"))) == 3
        delivery.publish(summary(3), keep=True)
    finally:
        close(delivery, timeout=1.0)
    assert len(list((tmp_path / "spool").glob("*.json"))) == 4, "finish() did not write the last one"
    assert len(DiskSpool(tmp_path / "spool")) == 4  # a new process finds them all
