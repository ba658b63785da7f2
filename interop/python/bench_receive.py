"""Receive throughput of the official Python SDK (azure-eventhub), for comparison with `ehub bench
receive` and Kafka consumers.

Usage: bench_receive.py CONNECTION_STRING [EVENTS] [PARTITION]
Reads EVENTS events of one partition from the earliest with `receive_batch` (batches of up to 300,
the SDK's default prefetch) and prints one line: events, seconds, events/s. The clock starts at
the first batch, so connecting is not counted.
"""
import sys
import threading
import time

from azure.eventhub import EventHubConsumerClient

cs = sys.argv[1]
total = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
partition = sys.argv[3] if len(sys.argv) > 3 else "0"

state = {"n": 0, "t0": None, "t1": None}
client = EventHubConsumerClient.from_connection_string(cs, consumer_group="$Default", eventhub_name="eh1")


def on_batch(ctx, events):
    if not events:
        return
    if state["t0"] is None:
        state["t0"] = time.perf_counter()
        state["first"] = len(events)
    state["n"] += len(events)
    if state["n"] >= total and state["t1"] is None:
        state["t1"] = time.perf_counter()
        threading.Thread(target=client.close).start()


with client:
    client.receive_batch(on_event_batch=on_batch, partition_id=partition, starting_position="-1",
                         max_batch_size=300, max_wait_time=5)
if state["t1"] is None:
    sys.exit(f"bench_receive: only {state['n']} of {total} events arrived")
# The first batch started the clock: count what came after it.
n = state["n"] - state["first"]
secs = state["t1"] - state["t0"]
print(f"{n} {secs:.3f} {n / secs:.0f}")
