"""Send throughput of the official Python SDK (azure-eventhub), for comparison with `ehub bench send`.

Usage: bench_send.py CONNECTION_STRING [EVENTS] [IN_FLIGHT]
Batches of 100 events of 100 bytes to partition 0. IN_FLIGHT = 1 uses the synchronous producer
(one batch at a time, the SDK's usual way); more uses the asyncio producer with that many
send_batch calls in flight on one client. Prints one line: events, seconds, events/s.
"""
import asyncio
import sys
import time

from azure.eventhub import EventData, EventHubProducerClient
from azure.eventhub.aio import EventHubProducerClient as AsyncProducer

cs = sys.argv[1]
total = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
in_flight = int(sys.argv[3]) if len(sys.argv) > 3 else 1
body = b"x" * 100


def sync_run():
    with EventHubProducerClient.from_connection_string(cs, eventhub_name="eh1") as p:
        p.get_partition_ids()  # connect first: setup is not throughput
        sent, t0 = 0, time.perf_counter()
        while sent < total:
            b = p.create_batch(partition_id="0")
            for _ in range(100):
                b.add(EventData(body))
            p.send_batch(b)
            sent += 100
        return sent, time.perf_counter() - t0


async def async_run():
    async with AsyncProducer.from_connection_string(cs, eventhub_name="eh1") as p:
        await p.get_partition_ids()
        sent = 0

        async def worker():
            nonlocal sent
            while sent < total:
                sent += 100
                b = await p.create_batch(partition_id="0")
                for _ in range(100):
                    b.add(EventData(body))
                await p.send_batch(b)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        return sent, time.perf_counter() - t0


n, secs = sync_run() if in_flight == 1 else asyncio.run(async_run())
print(f"python-sdk in_flight={in_flight}: {n} events in {secs:.3f} s = {n / secs:.0f} events/s")
