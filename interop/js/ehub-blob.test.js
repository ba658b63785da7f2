// No Azurite: official JavaScript processors (@azure/event-hubs with
// @azure/eventhubs-checkpointstore-blob, pinned) keep ownership and checkpoints in `ehub serve`'s
// own Blob endpoint, whose `checkpoints` container exists from the start. Two processors split
// the partitions; one stops and the other takes all; after a restart of the broker a new
// processor resumes from their checkpoints.
const { test, before, after } = require("node:test");
const assert = require("node:assert");
const { spawn } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { freePort, waitListening } = require("./net.js");
const { EventHubProducerClient, EventHubConsumerClient, earliestEventPosition } = require("@azure/event-hubs");
const { BlobCheckpointStore } = require("@azure/eventhubs-checkpointstore-blob");
const { ContainerClient } = require("@azure/storage-blob");

const EHUB = process.env.EHUB_BIN || path.join(__dirname, "..", "..", "target", "release", "ehub");
const DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
let broker, port, blobPort, dataDir;

async function startBroker() {
  broker = spawn(EHUB, ["serve", "--listen", `127.0.0.1:${port}`, "--listen-blob", `127.0.0.1:${blobPort}`, "--listen-management", "off", "--listen-kafka", "off",
    "--data-dir", dataDir], { stdio: "ignore" });
  await waitListening(port);
  await waitListening(blobPort);
}

async function stopBroker() {
  const exited = new Promise((r) => broker.on("exit", r));
  broker.kill("SIGTERM");
  await exited;
}

before(async () => {
  port = await freePort();
  blobPort = await freePort();
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "ehub-js-blob-"));
  await startBroker();
});

after(async () => {
  await stopBroker();
  fs.rmSync(dataDir, { recursive: true, force: true });
});

const cs = () => `Endpoint=sb://localhost:${port};SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;`;
const storage = () => `DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=${DEV_KEY};BlobEndpoint=http://127.0.0.1:${blobPort}/devstoreaccount1`;
const store = () => new BlobCheckpointStore(new ContainerClient(storage(), "checkpoints"));

async function send(perPartition, from) {
  const producer = new EventHubProducerClient(cs(), "eh1");
  for (const p of ["0", "1", "2", "3"]) {
    await producer.sendBatch(Array.from({ length: perPartition }, (_, i) => ({ body: `p${p}-${from + i}` })), { partitionId: p });
  }
  await producer.close();
}

/** A processor: an EventHubConsumerClient subscribed with the Blob store, checkpointing every batch. */
function processor() {
  const client = new EventHubConsumerClient("$Default", cs(), "eh1", store(), {
    loadBalancingOptions: { strategy: "balanced", updateIntervalInMs: 500, partitionOwnershipExpirationIntervalInMs: 20000 },
  });
  const events = [];
  const errors = [];
  const sub = client.subscribe({
    processEvents: async (batch, context) => {
      for (const e of batch) events.push(`${context.partitionId}:${e.sequenceNumber}`);
      if (batch.length) await context.updateCheckpoint(batch[batch.length - 1]);
    },
    processError: async (err) => { errors.push(err); },
  }, { startPosition: earliestEventPosition, maxBatchSize: 20, maxWaitTimeInSeconds: 0.2 });
  return { events, errors, stop: async () => { await sub.close(); await client.close(); } };
}

async function waitUntil(what, ms, check) {
  const start = Date.now();
  while (!(await check())) {
    if (Date.now() - start > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function liveOwners() {
  const counts = {};
  for (const o of await store().listOwnership("localhost", "eh1", "$Default")) {
    if (o.ownerId && Date.now() - o.lastModifiedTimeInMs < 20000) counts[o.ownerId] = (counts[o.ownerId] || 0) + 1;
  }
  return Object.values(counts).sort();
}

const seen = (procs, upto) => {
  const got = new Set(procs.flatMap((p) => p.events));
  return ["0", "1", "2", "3"].every((p) => Array.from({ length: upto }, (_, s) => `${p}:${s}`).every((k) => got.has(k)));
};

test("two JS processors keep checkpoints in ehub serve alone and resume after its restart", { timeout: 150000 }, async () => {
  await send(10, 0);
  const a = processor();
  const b = processor();
  const procs = [a, b];
  await waitUntil("a 2/2 split", 60000, async () => JSON.stringify(await liveOwners()) === "[2,2]");
  await waitUntil("every event read", 60000, async () => seen(procs, 10));
  assert.ok(a.events.length && b.events.length, "both processors read events");

  await b.stop();
  await waitUntil("one processor owning all 4", 20000, async () => JSON.stringify(await liveOwners()) === "[4]");
  await send(5, 10);
  await waitUntil("the second round", 60000, async () => seen(procs, 15));
  await new Promise((r) => setTimeout(r, 1000));
  await a.stop();

  // Events and checkpoints both come back from the broker's one data directory.
  await stopBroker();
  await startBroker();
  await send(5, 15);
  const c = processor();
  procs.push(c);
  await waitUntil("the restarted processor reading the third round", 60000, async () => seen(procs, 20));
  await new Promise((r) => setTimeout(r, 1000));
  await c.stop();
  const early = c.events.filter((k) => Number(k.split(":")[1]) < 15);
  assert.deepStrictEqual(early, [], "the new processor starts at the checkpoints");
  // A partition that moves to another processor has its receiver taken by a higher epoch; the
  // SDK reports that to processError. Nothing else may go wrong.
  for (const p of procs) {
    assert.deepStrictEqual(p.errors.filter((e) => e.code !== "ReceiverDisconnectedError").map(String), []);
  }

  const checkpoints = await store().listCheckpoints("localhost", "eh1", "$Default");
  assert.deepStrictEqual(checkpoints.map((x) => x.partitionId).sort(), ["0", "1", "2", "3"]);
  for (const x of checkpoints) assert.strictEqual(x.sequenceNumber, 19);
});

// The shortcut JavaScript and .NET know, `UseDevelopmentStorage=true`, means the development
// account at http://127.0.0.1:10000: `ehub serve`'s default Blob address. A host name instead
// of an IP (here `localhost`) stays path-style at port 10000.
test("UseDevelopmentStorage=true and a host name at port 10000 reach ehub serve's default Blob endpoint", { timeout: 60000 }, async () => {
  const amqp = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ehub-js-blob10000-"));
  const b = spawn(EHUB, ["serve", "--listen", `127.0.0.1:${amqp}`, "--data-dir", dir], { stdio: "ignore" });
  const exited = new Promise((r) => b.on("exit", r));
  try {
    await waitListening(amqp);
    await waitListening(10000).catch(() => {
      throw new Error("nothing listens on 127.0.0.1:10000: is another process holding the port?");
    });
    const dev = new BlobCheckpointStore(new ContainerClient("UseDevelopmentStorage=true", "checkpoints"));
    const named = new BlobCheckpointStore(new ContainerClient(
      `DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=${DEV_KEY};BlobEndpoint=http://localhost:10000/devstoreaccount1`,
      "checkpoints"));
    const claimed = await dev.claimOwnership([{ fullyQualifiedNamespace: "localhost", eventHubName: "eh1",
      consumerGroup: "$Default", partitionId: "0", ownerId: "dev-storage" }]);
    assert.strictEqual(claimed.length, 1);
    const seen = await named.listOwnership("localhost", "eh1", "$Default");
    assert.deepStrictEqual(seen.map((o) => o.ownerId), ["dev-storage"]);
    // The same ETag: quoted from the claim's response header, bare in the listing (as Azure).
    assert.strictEqual(seen[0].etag.replace(/"/g, ""), claimed[0].etag.replace(/"/g, ""));
  } finally {
    b.kill("SIGTERM");
    await exited;
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
