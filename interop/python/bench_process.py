"""Event processor throughput of the official Python SDK (azure-eventhub), for comparison with
`ehub bench process`.

Usage: bench_process.py CONNECTION_STRING [EVENTS] [HUB]
`EventHubConsumerClient.receive_batch` with its in-memory checkpoint store (no store given) reads
every partition from the earliest, checkpointing every 1,000 events per partition, until EVENTS
events arrived. Prints one JSON line with events, seconds and events_per_s.
"""
import json
import sys
import threading
import time

from azure.eventhub import EventHubConsumerClient

cs = sys.argv[1]
total = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
hub = sys.argv[3] if len(sys.argv) > 3 else "eh1"
EVERY = 1000

client = EventHubConsumerClient.from_connection_string(cs, consumer_group="$Default", eventhub_name=hub)
lock = threading.Lock()
state = {"n": 0, "since": {}}
done = threading.Event()


def on_batch(context, events):
    if not events:
        return
    pid = context.partition_id
    with lock:
        state["n"] += len(events)
        since = state["since"].get(pid, 0) + len(events)
        state["since"][pid] = since
        if state["n"] >= total:
            done.set()
    if since >= EVERY:
        context.update_checkpoint(events[-1])
        with lock:
            state["since"][pid] = 0


t0 = time.perf_counter()
worker = threading.Thread(target=client.receive_batch, args=(on_batch,),
                          kwargs={"starting_position": "-1", "max_wait_time": 1}, daemon=True)
worker.start()
done.wait(600)
seconds = time.perf_counter() - t0
client.close()
n = state["n"]
print(json.dumps({"events": n, "seconds": seconds, "events_per_s": n / seconds, "partitions_checkpointed": len(state["since"])}))
