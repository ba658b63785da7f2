// The unmodified official JavaScript SDK (@azure/event-hubs, pinned) against `ehub serve`:
// properties, sends (partition, key, hub), receive from earliest.
const { test, before, after } = require("node:test");
const assert = require("node:assert");
const { spawn } = require("node:child_process");
const fs = require("node:fs");
const { freePort, waitListening } = require("./net.js");
const os = require("node:os");
const path = require("node:path");
const { EventHubProducerClient, EventHubConsumerClient, earliestEventPosition } = require("@azure/event-hubs");

const EHUB = process.env.EHUB_BIN || path.join(__dirname, "..", "..", "target", "release", "ehub");
let broker, port, dataDir;


before(async () => {
  port = await freePort();
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "ehub-js-"));
  broker = spawn(EHUB, ["serve", "--listen", `127.0.0.1:${port}`, "--listen-blob", "off", "--listen-management", "off", "--listen-kafka", "off", "--data-dir", dataDir], { stdio: "ignore" });
  await waitListening(port);
});

after(async () => {
  broker.kill("SIGTERM");
  await new Promise((r) => broker.on("exit", r));
  fs.rmSync(dataDir, { recursive: true, force: true });
});

const cs = () => `Endpoint=sb://localhost:${port};SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;`;

test("properties, sends and receive with the official JS SDK", { timeout: 60000 }, async () => {
  const producer = new EventHubProducerClient(cs(), "eh1");
  const props = await producer.getEventHubProperties();
  assert.deepStrictEqual(props.partitionIds, ["0", "1", "2", "3"]);
  assert.strictEqual(props.name, "eh1");
  const batch = await producer.createBatch({ partitionId: "1" });
  for (let i = 0; i < 5; i++) assert.ok(batch.tryAdd({ body: `js-${i}`, properties: { i } }));
  await producer.sendBatch(batch);
  await producer.sendBatch([{ body: "keyed" }], { partitionKey: "7" }); // lookup3: partition 3 of 4
  const p1 = await producer.getPartitionProperties("1");
  assert.strictEqual(p1.lastEnqueuedSequenceNumber, 4);
  const p3 = await producer.getPartitionProperties("3");
  assert.strictEqual(p3.lastEnqueuedSequenceNumber, 0);
  await producer.close();

  const consumer = new EventHubConsumerClient("$default", cs(), "eh1");
  const got = [];
  await new Promise((resolve, reject) => {
    const sub = consumer.subscribe("1", {
      processEvents: async (events) => {
        got.push(...events);
        if (got.length >= 5) { await sub.close(); resolve(); }
      },
      processError: async (err) => { await sub.close(); reject(err); },
    }, { startPosition: earliestEventPosition, maxWaitTimeInSeconds: 1 });
  });
  await consumer.close();
  assert.deepStrictEqual(got.map((e) => e.body), ["js-0", "js-1", "js-2", "js-3", "js-4"]);
  assert.deepStrictEqual(got.map((e) => e.sequenceNumber), [0, 1, 2, 3, 4]);
  assert.strictEqual(got[2].properties.i, 2);
  assert.ok(got[0].enqueuedTimeUtc instanceof Date);
});

test("an unknown hub is MessagingEntityNotFoundError for sends, management and subscribe", { timeout: 60000 }, async () => {
  const noRetry = { retryOptions: { maxRetries: 0 } };
  for (const op of ["getEventHubProperties", "createBatch"]) {
    const p = new EventHubProducerClient(cs(), "nope", noRetry);
    await assert.rejects(p[op](), (e) => e.code === "MessagingEntityNotFoundError" && /could not be found/.test(e.message));
    await p.close();
  }
  const c = new EventHubConsumerClient("$Default", cs(), "nope", noRetry);
  const err = await new Promise((resolve) => {
    const sub = c.subscribe({
      processEvents: async () => {},
      processError: async (e) => { await sub.close(); resolve(e); },
    });
  });
  assert.strictEqual(err.code, "MessagingEntityNotFoundError");
  await c.close();
});
