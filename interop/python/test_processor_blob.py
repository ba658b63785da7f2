"""An ehub processor (`ehub receive --checkpoint-store blob:...`) and the official Python processor
(azure-eventhub with azure-eventhub-checkpointstoreblob-aio) share one hub, consumer group and
Azurite container: they split the partitions, hand them over on a graceful stop, and each resumes
from the other's checkpoints with nothing lost."""
import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from azure.eventhub.extensions.checkpointstoreblobaio import BlobCheckpointStore
from azure.eventhub.extensions.checkpointstoreblobaio._vendor.storage.blob.aio import ContainerClient

from conftest import EHUB, ROOT, Broker

AZURITE = os.environ.get("EHUB_AZURITE",
                         os.path.join(ROOT, "interop", "azurite", "node_modules", ".bin", "azurite-blob"))
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
CONTAINER = "ckpt"
HUB = "eh8"
INTERVAL = "0.5"
# Long, so that a handover faster than this was a release, not an expiry.
EXPIRY = "20"


@pytest.fixture
def azurite():
    """Azurite on a free port, in memory; yields its storage connection string."""
    assert os.path.exists(AZURITE), f"Azurite missing at {AZURITE}: run `npm ci --prefix interop/azurite`"
    p = subprocess.Popen([AZURITE, "--blobHost", "127.0.0.1", "--blobPort", "0", "--inMemoryPersistence",
                          "--disableTelemetry", "--skipApiVersionCheck", "--silent"],
                         stdout=subprocess.PIPE, text=True)
    port = None
    for line in p.stdout:
        if "listens on" in line:
            port = int(line.strip().rsplit(":", 1)[1])
            break
    assert port, "Azurite did not start"
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    yield (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY};"
           f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    p.kill()
    p.wait(5)


@pytest.fixture
def broker8():
    with tempfile.TemporaryDirectory() as d:
        config = os.path.join(d, "hubs.toml")
        with open(config, "w") as f:
            f.write(f'[[hubs]]\nname = "{HUB}"\npartitions = 8\n')
        b = Broker(d, config=config).start()
        yield b
        b.stop()


class Proc:
    """A processor process whose JSON event lines are collected as (partition, sequence number)."""

    def __init__(self, name, args):
        self.name = name
        self.events = []
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stderr = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            e = json.loads(line)
            self.events.append((e["partition_id"], e["sequence_number"]))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        assert code == 0, f"{self.name} exited {code}: {''.join(self.stderr)[-2000:]}"

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def ehub_processor(broker, storage):
    return Proc("ehub", [EHUB, "--connection-string", broker.conn_str(), "--hub", HUB, "--output", "json",
                         "receive", "--follow", "--checkpoint-store", f"blob:{CONTAINER}",
                         "--storage-connection-string", storage, "--checkpoint-every", "5",
                         "--balance-interval", INTERVAL, "--ownership-expiry", EXPIRY])


def python_processor(broker, storage):
    script = os.path.join(os.path.dirname(__file__), "processor_blob.py")
    return Proc("python", [sys.executable, script, broker.conn_str(), HUB, storage, CONTAINER, INTERVAL, EXPIRY])


def send(broker, per_partition):
    for p in range(8):
        r = subprocess.run([EHUB, "--connection-string", broker.conn_str(), "--hub", HUB, "send", "--partition",
                            str(p), "--count", str(per_partition), "--size", "20"], capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr.decode()


def live_owners(storage):
    """Live owner id -> partitions owned, and every ownership blob name, read with the official store."""
    async def read():
        async with ContainerClient.from_connection_string(storage, CONTAINER) as cc:
            names, owners = [], collections.Counter()
            async for b in cc.list_blobs(include=["metadata"]):
                names.append(b.name)
                if "/ownership/" in b.name and b.metadata.get("ownerid"):
                    if time.time() - b.last_modified.timestamp() < float(EXPIRY):
                        owners[b.metadata["ownerid"]] += 1
            return owners, names
    return asyncio.run(read())


def wait_until(what, limit, check):
    start = time.time()
    while not check():
        assert time.time() - start < limit, f"timed out after {limit}s waiting for {what}"
        time.sleep(0.1)
    return time.time() - start


def seen(procs, upto):
    got = set()
    for p in procs:
        got.update(p.events)
    return all((str(p), s) in got for p in range(8) for s in range(upto))


def test_ehub_and_python_processors_share_partitions_and_checkpoints_in_one_container(broker8, azurite):
    async def create():
        async with ContainerClient.from_connection_string(azurite, CONTAINER) as cc:
            await cc.create_container()
    asyncio.run(create())
    send(broker8, 20)
    py = python_processor(broker8, azurite)
    ours = ehub_processor(broker8, azurite)
    procs = [py, ours]
    try:
        # 1. Both run: 8 partitions split 4/4 between the two, in one set of records.
        wait_until("a 4/4 split", 60, lambda: sorted(live_owners(azurite)[0].values()) == [4, 4])
        owners, names = live_owners(azurite)
        ns = f"localhost:{broker8.port}"
        assert all(n.startswith(f"{ns}/{HUB}/$default/") for n in names), names
        wait_until("every event read once the split holds", 60, lambda: seen(procs, 20))
        assert py.events and ours.events, "both processors read events"
        send(broker8, 10)
        wait_until("the second round", 60, lambda: seen(procs, 30))

        # 2. ehub stops gracefully: it checkpoints and releases, and Python holds all 8 well
        #    before the ownership would have expired.
        stopped = time.time()
        ours.stop()
        handover = wait_until("Python owning all 8", float(EXPIRY), lambda: list(live_owners(azurite)[0].values()) == [8])
        print(f"handover to Python took {time.time() - stopped:.2f}s (interval {INTERVAL}s, expiry {EXPIRY}s)")
        assert handover < float(EXPIRY) / 2, handover
        send(broker8, 10)
        wait_until("Python reading the third round", 60, lambda: seen([py], 40) or seen(procs, 40))

        # 3. Python stops (and releases); a new ehub processor resumes from Python's checkpoints.
        py.stop()
        ours2 = ehub_processor(broker8, azurite)
        procs.append(ours2)
        send(broker8, 10)
        wait_until("the new ehub processor reading the fourth round", 60, lambda: seen(procs, 50))
        time.sleep(1)
        ours2.stop()

        # Nothing lost; nothing read twice beyond a batch in flight at a handover (Python checkpoints
        # after each batch of up to 20, ehub every 5 and on release).
        assert seen(procs, 50)
        counts = collections.Counter(e for p in procs for e in p.events)
        dups = collections.Counter(p for (p, _), n in counts.items() if n > 1)
        print(f"events read: python {len(py.events)}, ehub {len(ours.events)} + {len(ours2.events)}; "
              f"read twice per partition: {dict(dups)}")
        assert all(n <= 2 for n in counts.values()), counts.most_common(3)
        assert all(d <= 20 for d in dups.values()), dups
        # The second ehub processor started at Python's checkpoints, not at the beginning.
        assert all(s >= 30 for _, s in ours2.events), sorted(ours2.events)[:5]

        # The checkpoints ehub wrote last are what the official store lists.
        async def checkpoints():
            store = BlobCheckpointStore.from_connection_string(azurite, CONTAINER)
            async with store:
                return await store.list_checkpoints(ns, HUB, "$Default")
        cps = asyncio.run(checkpoints())
        assert sorted(c["partition_id"] for c in cps) == [str(p) for p in range(8)]
        assert all(c["sequence_number"] == 49 and isinstance(c["offset"], str) for c in cps), cps
    finally:
        for p in procs:
            p.kill()


def ehub_storage(broker):
    """The storage connection string of the broker's own Blob endpoint (the development account)."""
    return (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{broker.blob_port}/devstoreaccount1;")


def test_two_python_processors_keep_checkpoints_in_ehub_serve_alone(broker8):
    """No Azurite: the official Python processors keep ownership and checkpoints in the broker's
    Blob endpoint (its `checkpoints` container exists from the start), split the partitions,
    and after a restart of the broker resume from their checkpoints."""
    storage = ehub_storage(broker8)
    container = "checkpoints"

    def python_on_ehub():
        script = os.path.join(os.path.dirname(__file__), "processor_blob.py")
        return Proc("python", [sys.executable, script, broker8.conn_str(), HUB, storage, container, INTERVAL, EXPIRY])

    def owners():
        async def read():
            async with ContainerClient.from_connection_string(storage, container) as cc:
                got = collections.Counter()
                async for b in cc.list_blobs(name_starts_with=f"localhost:{broker8.port}/{HUB}/$default/ownership/",
                                             include=["metadata"]):
                    if b.metadata.get("ownerid") and time.time() - b.last_modified.timestamp() < float(EXPIRY):
                        got[b.metadata["ownerid"]] += 1
                return got
        return asyncio.run(read())

    send(broker8, 20)
    a, b = python_on_ehub(), python_on_ehub()
    procs = [a, b]
    try:
        wait_until("a 4/4 split", 60, lambda: sorted(owners().values()) == [4, 4])
        wait_until("every event read", 60, lambda: seen(procs, 20))
        assert a.events and b.events, "both processors read events"
        b.stop()
        wait_until("one processor owning all 8", float(EXPIRY), lambda: list(owners().values()) == [8])
        send(broker8, 10)
        wait_until("the second round", 60, lambda: seen(procs, 30))
        time.sleep(1)
        a.stop()

        # The broker restarts: events and checkpoints come back from one data directory.
        broker8.stop()
        broker8.start()
        send(broker8, 10)
        c = python_on_ehub()
        procs.append(c)
        wait_until("the restarted processor reading the third round", 60, lambda: seen(procs, 40))
        time.sleep(1)
        c.stop()
        assert c.events and all(s >= 30 for _, s in c.events), sorted(c.events)[:5]

        async def checkpoints():
            store = BlobCheckpointStore.from_connection_string(storage, container)
            async with store:
                return await store.list_checkpoints(f"localhost:{broker8.port}", HUB, "$Default")
        cps = asyncio.run(checkpoints())
        assert sorted(cp["partition_id"] for cp in cps) == [str(p) for p in range(8)]
        assert all(cp["sequence_number"] == 39 for cp in cps), cps
    finally:
        for p in procs:
            p.kill()
