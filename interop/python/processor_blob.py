"""An official Python event processor (azure-eventhub with its aio Blob checkpoint store) as a
process, for the cross-SDK processor tests: prints one JSON line per event, checkpoints after
every batch, and on SIGTERM closes the client, which releases its partitions.

    processor_blob.py CONN_STR HUB STORAGE_CONN_STR CONTAINER INTERVAL EXPIRY
"""
import asyncio
import json
import signal
import sys

from azure.eventhub.aio import EventHubConsumerClient
from azure.eventhub.extensions.checkpointstoreblobaio import BlobCheckpointStore


async def main():
    conn, hub, storage, container, interval, expiry = sys.argv[1:7]
    store = BlobCheckpointStore.from_connection_string(storage, container)
    client = EventHubConsumerClient.from_connection_string(
        conn, consumer_group="$Default", eventhub_name=hub, checkpoint_store=store,
        load_balancing_interval=float(interval), partition_ownership_expiration_interval=float(expiry))

    async def on_batch(context, events):
        for e in events:
            print(json.dumps({"partition_id": context.partition_id, "sequence_number": e.sequence_number}),
                  flush=True)
        if events:
            await context.update_checkpoint(events[-1])

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    task = asyncio.create_task(client.receive_batch(on_batch, max_batch_size=20, max_wait_time=0.2,
                                                    starting_position="-1"))
    await stop.wait()
    await client.close()
    await task
    await store.close()


asyncio.run(main())
