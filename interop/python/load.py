"""Load run of the official Python SDK (azure-eventhub) against an `ehub serve`.

For SECONDS, producers send 100-byte events (each carrying a run id and a serial number) in
batches of 100 to every partition of hub eh1, while a consumer reads all partitions from where
they stood at the start. At the end every acknowledged event must have been received exactly
once; a phase that makes no progress for STALL seconds fails the run.

    python load.py CONNECTION_STRING [--seconds 20] [--producer sync|async] [--consumer receive|receive_batch]
                   [--inflight 8] [--stall 10] [--rate EVENTS_PER_S]

--rate caps the producer so that the consumer, the slower side in this SDK, keeps up.

Prints one JSON line with the rates and counts; exits 1 on a stall, a lost or a duplicated event.
"""
import argparse
import asyncio
import json
import multiprocessing
import sys
import threading
import time
import uuid

from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient
from azure.eventhub.aio import EventHubProducerClient as AsyncProducer

BATCH = 100


class Progress:
    """A counter that a watchdog checks for stalls."""

    def __init__(self):
        self.n = 0
        self.lock = threading.Lock()

    def add(self, k):
        with self.lock:
            self.n += k


def pace(sent, rate, t0):
    """Sleeps while `sent` events are ahead of `rate` events/s since `t0` (0: no limit)."""
    if rate:
        ahead = sent / rate - (time.time() - t0)
        if ahead > 0:
            time.sleep(ahead)


async def apace(sent, rate, t0):
    if rate:
        ahead = sent / rate - (time.time() - t0)
        if ahead > 0:
            await asyncio.sleep(ahead)


def produce_sync(cs, hub, run, deadline, progress, partitions, stall, rate):
    sent = 0
    t0 = time.time()
    with EventHubProducerClient.from_connection_string(cs, eventhub_name=hub) as p:
        i = 0
        while time.time() < deadline:
            pace(sent, rate, t0)
            pid = partitions[i % len(partitions)]
            batch = p.create_batch(partition_id=pid)
            for _ in range(BATCH):
                batch.add(EventData(f"{run}:{sent:012d}".ljust(100, "x")))
                sent += 1
            p.send_batch(batch, timeout=stall)
            progress.add(BATCH)
            i += 1
    return sent


def produce_async(cs, hub, run, deadline, progress, partitions, inflight, stall, rate):
    async def main():
        counter = {"next": 0}
        t0 = time.time()
        async with AsyncProducer.from_connection_string(cs, eventhub_name=hub) as p:

            async def worker(w):
                i = w
                while time.time() < deadline:
                    await apace(counter["next"], rate, t0)
                    pid = partitions[i % len(partitions)]
                    batch = await p.create_batch(partition_id=pid)
                    for _ in range(BATCH):
                        n = counter["next"]
                        counter["next"] += 1
                        batch.add(EventData(f"{run}:{n:012d}".ljust(100, "x")))
                    await p.send_batch(batch, timeout=stall)
                    progress.add(BATCH)
                    i += 1

            await asyncio.gather(*(worker(w) for w in range(inflight)))
        return counter["next"]

    return asyncio.run(main())


def consume(cs, hub, run, mode, start_seq, received, expected, results):
    """Reads every partition after `start_seq` until `expected` unique events of this run arrived
    (or this process is ended); puts (unique, duplicates, errors) on `results`."""
    seen = set()
    duplicates = []
    errors = []
    lock = threading.Lock()
    consumer = EventHubConsumerClient.from_connection_string(cs, consumer_group="$Default", eventhub_name=hub)

    def note(events):
        with lock:
            for e in events:
                body = e.body_as_str()
                if not body.startswith(run + ":"):
                    continue
                n = int(body[len(run) + 1:len(run) + 13])
                if n in seen:
                    duplicates.append(n)
                seen.add(n)
            received.value = len(seen)
            if 0 <= expected.value <= len(seen):
                threading.Thread(target=consumer.close, daemon=True).start()

    kw = dict(starting_position=dict(start_seq), starting_position_inclusive=False,
              on_error=lambda ctx, err: errors.append(repr(err)))
    if mode == "receive":
        consumer.receive(on_event=lambda ctx, e: e is not None and note([e]), **kw)
    else:
        consumer.receive_batch(on_event_batch=lambda ctx, es: note(es), max_batch_size=300, **kw)
    results.put((len(seen), len(duplicates), errors[:5]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("connection_string")
    ap.add_argument("--hub", default="eh1")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--producer", choices=["sync", "async"], default="sync")
    ap.add_argument("--consumer", choices=["receive", "receive_batch"], default="receive")
    ap.add_argument("--inflight", type=int, default=8)
    ap.add_argument("--stall", type=float, default=10)
    ap.add_argument("--rate", type=float, default=0, help="events/s the producer keeps to (0: as fast as it goes)")
    a = ap.parse_args()
    cs, hub, run = a.connection_string, a.hub, uuid.uuid4().hex[:8]

    with EventHubProducerClient.from_connection_string(cs, eventhub_name=hub) as p:
        partitions = p.get_partition_ids()
        start_seq = {pid: p.get_partition_properties(pid)["last_enqueued_sequence_number"] for pid in partitions}

    # The consumer runs in its own process: in this one it would share the GIL with the producer.
    ctx = multiprocessing.get_context("spawn")
    received = ctx.Value("q", 0)
    expected = ctx.Value("q", -1)
    results = ctx.Queue()
    reader = ctx.Process(target=consume, args=(cs, hub, run, a.consumer, start_seq, received, expected, results),
                         daemon=True)
    reader.start()
    sent_progress = Progress()
    deadline = time.time() + a.seconds
    result = {}

    def produce():
        try:
            if a.producer == "sync":
                result["sent"] = produce_sync(cs, hub, run, deadline, sent_progress, partitions, a.stall, a.rate)
            else:
                result["sent"] = produce_async(cs, hub, run, deadline, sent_progress, partitions, a.inflight, a.stall,
                                                a.rate)
        except Exception as e:  # reported below as a failure
            result["error"] = repr(e)

    t0 = time.time()
    writer = threading.Thread(target=produce, daemon=True)
    writer.start()

    def watch(count, done, what):
        """None once done() holds; a failure when count() stays the same for --stall seconds."""
        last, since = -1, time.time()
        while not done():
            time.sleep(0.25)
            now = count()
            if now != last:
                last, since = now, time.time()
            elif time.time() - since > a.stall:
                return f"{what} stalled at {now} events"
        return None

    failure = watch(lambda: sent_progress.n, lambda: not writer.is_alive(), "sending")
    send_secs = time.time() - t0
    sent = result.get("sent", sent_progress.n)
    if not failure and "error" in result:
        failure = "sending failed: " + result["error"]
    expected.value = sent
    if not failure:
        failure = watch(lambda: received.value, lambda: received.value >= sent, "receiving")
    recv_secs = time.time() - t0
    unique, duplicates, errors = (0, 0, ["the consumer did not finish"])
    try:
        # Closing the consumer takes a while; duplicates would show up by then too.
        unique, duplicates, errors = results.get(timeout=30)
    except Exception:  # a stalled consumer never reports
        pass
    reader.terminate()
    missing = sent - unique
    out = {
        "sdk": "python", "producer": a.producer, "consumer": a.consumer, "seconds": round(send_secs, 1),
        "sent": sent, "received_unique": unique, "duplicates": duplicates, "missing": missing,
        "send_events_per_s": round(sent / send_secs), "receive_events_per_s": round(unique / recv_secs),
        "consumer_errors": errors, "failure": failure,
    }
    print(json.dumps(out))
    if failure or duplicates or missing or errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
