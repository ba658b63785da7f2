"""Buffered-mode throughput of the official Python SDK (azure-eventhub), for comparison with
`ehub bench send --buffered`.

Usage: bench_buffered.py CONNECTION_STRING [EVENTS] [HUB]
`EventHubProducerClient(buffered_mode=True)` at its defaults; 100-byte events enqueued one by one
with `send_event` over 4 partitions by id; the clock runs from the first enqueue to the last
`on_success`, with a `flush()` once every event is enqueued (as a program ending its stream does,
rather than timing the last partial batches' max wait time). Prints one JSON line with events, seconds and events_per_s.
"""
import json
import sys
import threading
import time

from azure.eventhub import EventData, EventHubProducerClient

cs = sys.argv[1]
total = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
hub = sys.argv[3] if len(sys.argv) > 3 else "eh1"
lock = threading.Lock()
state = {"ok": 0, "failed": 0}
done = threading.Event()


def on_success(events, pid):
    with lock:
        state["ok"] += len(events)
        if state["ok"] + state["failed"] >= total:
            done.set()


def on_error(events, pid, error):
    with lock:
        state["failed"] += len(events)
        if state["ok"] + state["failed"] >= total:
            done.set()


producer = EventHubProducerClient.from_connection_string(cs, eventhub_name=hub, buffered_mode=True,
                                                         on_success=on_success, on_error=on_error)
producer.get_partition_ids()  # connect first: setup is not throughput
body = b"x" * 100
t0 = time.perf_counter()
for i in range(total):
    producer.send_event(EventData(body), partition_id=str(i % 4))
producer.flush()
done.wait(600)
seconds = time.perf_counter() - t0
producer.close()
print(json.dumps({"events": total, "failed": state["failed"], "seconds": seconds, "events_per_s": total / seconds}))
