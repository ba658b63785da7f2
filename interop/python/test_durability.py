"""kill -9 during sends, then restart: every acknowledged event is present, once, in order."""
import threading
import time

from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient


def test_kill9_keeps_every_acknowledged_event(broker_factory):
    b = broker_factory(fsync="always").start()
    acked = []
    stop = threading.Event()

    def produce():
        p = EventHubProducerClient.from_connection_string(b.conn_str(), eventhub_name="eh1", retry_total=0)
        i = 0
        try:
            while not stop.is_set():
                bodies = [f"d-{i + j}" for j in range(20)]
                try:
                    p.send_batch([EventData(x) for x in bodies], partition_id="0")
                except Exception:
                    break
                acked.extend(bodies)
                i += 20
        finally:
            try:
                p.close()
            except Exception:
                pass

    t = threading.Thread(target=produce)
    t.start()
    time.sleep(3)
    b.kill9()
    stop.set()
    t.join(30)
    assert len(acked) > 0, "nothing was acknowledged before the kill"
    b.start()
    c = EventHubConsumerClient.from_connection_string(b.conn_str(), consumer_group="$Default", eventhub_name="eh1")
    got = []
    done = threading.Event()

    def on_event(ctx, e):
        got.append(e)
        if len(got) >= len(acked):
            done.set()

    rt = threading.Thread(target=c.receive, kwargs=dict(on_event=on_event, partition_id="0", starting_position="-1"))
    rt.start()
    done.wait(30)
    time.sleep(1)  # anything beyond the acknowledged ones may arrive too (written but not acked)
    c.close()
    rt.join(10)
    bodies = [e.body_as_str() for e in got]
    assert bodies[: len(acked)] == acked, "acknowledged events missing, duplicated or out of order"
    assert len(set(bodies)) == len(bodies), "duplicates after recovery"
    assert [e.sequence_number for e in got] == list(range(len(got)))
