"""The official Python SDK under `ehub serve`'s fault injection (POST /faults on the management
endpoint, what `ehub fault …` sends): it rides out detach-forced, closed connections and a
server-busy period and the service's idle rules as on Azure, with every event received once and in order, and surfaces
link-stolen to the application."""
import threading
import time

import pytest
from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient
from azure.eventhub.exceptions import EventDataSendError

from test_management import call


def test_the_sdk_rides_out_faults_with_every_event_received_once_in_order(broker):
    received, errors = [], []
    consumer = EventHubConsumerClient.from_connection_string(broker.conn_str(), consumer_group="$Default",
                                                             eventhub_name="eh1")

    def on_event(ctx, e):
        if e is not None:
            received.append((e.sequence_number, e.body_as_str()))

    def on_error(ctx, err):
        errors.append(err)

    t = threading.Thread(target=consumer.receive, daemon=True,
                         kwargs=dict(on_event=on_event, on_error=on_error, partition_id="0",
                                     starting_position="-1", max_wait_time=1))
    t.start()
    sent = []
    producer = EventHubProducerClient.from_connection_string(broker.conn_str(), eventhub_name="eh1")

    def send(label, n):
        for i in range(n):
            body = f"{label}-{i}"
            producer.send_event(EventData(body), partition_id="0")
            sent.append(body)

    def wait_received(n, limit=60):
        deadline = time.time() + limit
        while len(received) < n and time.time() < deadline:
            time.sleep(0.05)

    try:
        send("before", 10)
        wait_received(10)
        # Detach-forced, a closed connection, lapsed tokens, slow fsyncs and slow writes: the SDK
        # retries or waits, the sends succeed.
        for fault in ({"kind": "detach", "hub": "eh1", "condition": "detach-forced"}, {"kind": "close-connections"},
                      {"kind": "expire-tokens"}, {"kind": "fsync-latency", "millis": 20, "seconds": 2},
                      {"kind": "frame-latency", "millis": 5, "seconds": 2}):
            status, body = call(broker, "POST", "/faults", fault)
            assert status == 201, body
            send(fault["kind"], 10)
            wait_received(len(sent))
        # Server-busy: this SDK does not retry a send the service rejects as busy (on Azure
        # either); the application sees EventDataSendError with the condition, and sends again
        # once the period is over.
        status, body = call(broker, "POST", "/faults", {"kind": "server-busy", "hub": "eh1", "seconds": 1.0})
        assert status == 201, body
        with pytest.raises(EventDataSendError) as busy:
            producer.send_event(EventData("refused"), partition_id="0")
        assert "server-busy" in str(busy.value)
        deadline = time.time() + 30
        while call(broker, "GET", "/faults")[1]["active"] and time.time() < deadline:
            time.sleep(0.05)
        send("after-busy", 10)
        wait_received(len(sent))
        # The service's idle rules, shortened: idle links are detached (detach-forced) and the
        # connections left without links closed; the SDK reconnects on its next operation and
        # the consumer goes on where it was.
        status, body = call(broker, "POST", "/faults", {"kind": "idle-timeouts", "link_idle_seconds": 0.3,
                                                        "connection_idle_seconds": 0.5, "seconds": 60})
        assert status == 201, body
        time.sleep(2)
        send("after-idle", 10)
        wait_received(len(sent))
        assert call(broker, "DELETE", "/faults")[0] == 200
        # Every stored event reached the consumer once, in order: sequence numbers 0, 1, … with
        # no repeat (a send racing a closed connection may be stored twice, as on Azure: the
        # producer is at-least-once), and every body sent is among them.
        seqs = [s for s, _ in received]
        assert seqs == list(range(len(seqs))), seqs
        assert set(sent) <= {b for _, b in received}

        # Link stolen reaches the application's error handler.
        status, body = call(broker, "POST", "/faults", {"kind": "detach", "hub": "eh1", "condition": "link-stolen"})
        assert status == 201, body
        deadline = time.time() + 30
        while not any("link:stolen" in str(e) for e in errors) and time.time() < deadline:
            time.sleep(0.05)
        assert any("link:stolen" in str(e) for e in errors), errors
    finally:
        producer.close()
        consumer.close()
        t.join(10)
