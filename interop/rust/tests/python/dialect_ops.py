"""The operations of the dialect comparison, done by the official Python SDK (azure-eventhub).

Usage: python dialect_ops.py CONNECTION_STRING. Exits non-zero if any operation fails.
"""
import sys
import threading

from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient

cs = sys.argv[1]
with EventHubProducerClient.from_connection_string(cs, eventhub_name="eh1") as p:
    p.get_eventhub_properties()
    p.get_partition_properties("1")
    p.send_event(EventData("a"), partition_id="0")
    batch = p.create_batch()
    batch.add(EventData("b"))
    p.send_batch(batch)

c = EventHubConsumerClient.from_connection_string(cs, consumer_group="$Default", eventhub_name="eh1")
received = threading.Event()
errors = []
t = threading.Thread(target=c.receive, kwargs=dict(
    on_event=lambda ctx, e: received.set(), on_error=lambda ctx, e: errors.append(e),
    partition_id="0", starting_position="-1", owner_level=3))
t.start()
received.wait(30)
c.close()
t.join(30)
if not received.is_set() or errors:
    sys.exit(f"no event received (errors: {errors})")
