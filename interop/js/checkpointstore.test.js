// The official JavaScript Blob checkpoint store (@azure/eventhubs-checkpointstore-blob, pinned)
// and ehub's processor (`ehub receive --checkpoint-store blob:...`) share one Azurite container:
// ehub resumes from checkpoints the JS store wrote, and the JS store reads the checkpoints and
// released ownerships ehub wrote.
const { test, before, after } = require("node:test");
const assert = require("node:assert");
const { spawn, execFile } = require("node:child_process");
const fs = require("node:fs");
const { freePort, waitListening } = require("./net.js");
const os = require("node:os");
const path = require("node:path");
const readline = require("node:readline");
const { EventHubProducerClient, EventHubConsumerClient, earliestEventPosition } = require("@azure/event-hubs");
const { BlobCheckpointStore } = require("@azure/eventhubs-checkpointstore-blob");
const { ContainerClient } = require("@azure/storage-blob");

const EHUB = process.env.EHUB_BIN || path.join(__dirname, "..", "..", "target", "release", "ehub");
const AZURITE = process.env.EHUB_AZURITE || path.join(__dirname, "..", "azurite", "node_modules", ".bin", "azurite-blob");
const DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
let broker, azurite, port, storage, dataDir;


before(async () => {
  assert.ok(fs.existsSync(AZURITE), `Azurite missing at ${AZURITE}: run npm ci --prefix interop/azurite`);
  azurite = spawn(AZURITE, ["--blobHost", "127.0.0.1", "--blobPort", "0", "--inMemoryPersistence",
    "--disableTelemetry", "--skipApiVersionCheck", "--silent"], { stdio: ["ignore", "pipe", "inherit"] });
  const blobPort = await new Promise((resolve, reject) => {
    const lines = readline.createInterface({ input: azurite.stdout });
    lines.on("line", (l) => { const m = l.match(/listens on http:\/\/127\.0\.0\.1:(\d+)/); if (m) resolve(Number(m[1])); });
    azurite.on("exit", () => reject(new Error("Azurite exited")));
  });
  storage = `DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=${DEV_KEY};BlobEndpoint=http://127.0.0.1:${blobPort}/devstoreaccount1;`;
  port = await freePort();
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "ehub-js-ckpt-"));
  broker = spawn(EHUB, ["serve", "--listen", `127.0.0.1:${port}`, "--listen-blob", "off", "--listen-management", "off", "--listen-kafka", "off", "--data-dir", dataDir], { stdio: "ignore" });
  await waitListening(port);
});

after(async () => {
  broker.kill("SIGTERM");
  await new Promise((r) => broker.on("exit", r));
  azurite.kill("SIGKILL");
  fs.rmSync(dataDir, { recursive: true, force: true });
});

const cs = () => `Endpoint=sb://localhost:${port};SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;`;

test("ehub resumes from the JS store's checkpoints, and the JS store reads ehub's", { timeout: 90000 }, async () => {
  const container = new ContainerClient(storage.replace(/;$/, ""), "js-ckpt");
  await container.create();
  const store = new BlobCheckpointStore(container);

  const producer = new EventHubProducerClient(cs(), "eh1");
  for (const p of ["0", "1", "2", "3"]) {
    await producer.sendBatch(Array.from({ length: 10 }, (_, i) => ({ body: `p${p}-${i}` })), { partitionId: p });
  }
  await producer.close();

  // Read every event with the JS SDK, and checkpoint event 4 of each partition through the JS
  // store, as a JS processor's `context.updateCheckpoint(event)` does.
  const consumer = new EventHubConsumerClient("$Default", cs(), "eh1");
  const ns = consumer.fullyQualifiedNamespace;
  assert.strictEqual(ns, "localhost", "the JS SDK names an emulator namespace by its host alone");
  const fifth = {};
  await new Promise((resolve, reject) => {
    const sub = consumer.subscribe({
      processEvents: async (events, context) => {
        for (const e of events) if (e.sequenceNumber === 4) fifth[context.partitionId] = e;
        if (Object.keys(fifth).length === 4) { await sub.close(); resolve(); }
      },
      processError: async (err) => { await sub.close(); reject(err); },
    }, { startPosition: earliestEventPosition, maxWaitTimeInSeconds: 1 });
  });
  await consumer.close();
  for (const [p, e] of Object.entries(fifth)) {
    await store.updateCheckpoint({ fullyQualifiedNamespace: ns, eventHubName: "eh1", consumerGroup: "$Default",
      partitionId: p, offset: e.offset, sequenceNumber: e.sequenceNumber });
  }

  // ehub's processor, told the namespace as the JS SDK writes it, starts after each checkpoint.
  const out = await new Promise((resolve, reject) => {
    execFile(EHUB, ["--connection-string", cs(), "--hub", "eh1", "--output", "json", "receive",
      "--checkpoint-store", "blob:js-ckpt", "--storage-connection-string", storage, "--checkpoint-namespace", ns,
      "--from", "earliest", "--count", "20", "--timeout", "30", "--balance-interval", "0.5", "--ownership-expiry", "2"],
    { timeout: 60000 }, (err, stdout, stderr) => (err ? reject(new Error(`${err}: ${stderr}`)) : resolve(stdout)));
  });
  const read = out.trim().split("\n").map((l) => JSON.parse(l));
  const got = read.map((e) => `${e.partition_id}:${e.sequence_number}`).sort();
  const want = ["0", "1", "2", "3"].flatMap((p) => [5, 6, 7, 8, 9].map((s) => `${p}:${s}`)).sort();
  assert.deepStrictEqual(got, want);

  // What ehub left behind, read by the JS store: its last checkpoints, and released ownerships.
  const checkpoints = await store.listCheckpoints(ns, "eh1", "$Default");
  assert.deepStrictEqual(checkpoints.map((c) => c.partitionId).sort(), ["0", "1", "2", "3"]);
  for (const c of checkpoints) {
    assert.strictEqual(c.sequenceNumber, 9);
    assert.strictEqual(typeof c.offset, "string");
  }
  const ownerships = await store.listOwnership(ns, "eh1", "$Default");
  assert.strictEqual(ownerships.length, 4);
  for (const o of ownerships) {
    assert.strictEqual(o.ownerId, "", "ehub released the partition on its way out");
    assert.ok(o.etag && o.lastModifiedTimeInMs > 0);
  }
});
