// Load run of the official JavaScript SDK (@azure/event-hubs) against an `ehub serve`.
//
// For SECONDS, INFLIGHT concurrent `sendBatch` calls send 100-byte events (each carrying a run id
// and a serial number) in batches of 100 to every partition of hub eh1, while `subscribe` reads
// all partitions from where they stood at the start. At the end every acknowledged event must have
// been received exactly once; a phase without progress for STALL seconds fails the run.
//
//   node load.js CONNECTION_STRING [--seconds 20] [--inflight 16] [--stall 10]
//
// Prints one JSON line with the rates and counts; exits 1 on a stall, an error, a lost or a
// duplicated event.
const { EventHubProducerClient, EventHubConsumerClient } = require("@azure/event-hubs");
const crypto = require("node:crypto");

function args() {
  const a = process.argv.slice(2);
  const opt = (name, d) => {
    const i = a.indexOf(`--${name}`);
    return i >= 0 ? Number(a[i + 1]) : d;
  };
  return { cs: a[0], seconds: opt("seconds", 20), inflight: opt("inflight", 16), stall: opt("stall", 10) };
}

const BATCH = 100;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Resolves when done() holds; rejects when progress() stays the same for `stall` seconds.
async function watch(progress, done, stall, what) {
  let last = -1;
  let since = Date.now();
  while (!done()) {
    await sleep(250);
    const now = progress();
    if (now !== last) {
      last = now;
      since = Date.now();
    } else if (Date.now() - since > stall * 1000) {
      throw new Error(`${what} stalled at ${now} events`);
    }
  }
}

async function main() {
  const { cs, seconds, inflight, stall } = args();
  const run = crypto.randomBytes(4).toString("hex");
  const producer = new EventHubProducerClient(cs, "eh1");
  const ids = await producer.getPartitionIds();
  const start = {};
  for (const id of ids) start[id] = (await producer.getPartitionProperties(id)).lastEnqueuedSequenceNumber;

  const seen = new Set();
  let duplicates = 0;
  const errors = [];
  const consumer = new EventHubConsumerClient("$Default", cs, "eh1");
  const startPosition = {};
  for (const id of ids) startPosition[id] = { sequenceNumber: start[id], isInclusive: false };
  const subscription = consumer.subscribe(
    {
      processEvents: async (events) => {
        for (const e of events) {
          const body = e.body.toString();
          if (!body.startsWith(run + ":")) continue;
          const n = Number(body.slice(run.length + 1, run.length + 13));
          if (seen.has(n)) duplicates++;
          seen.add(n);
        }
      },
      processError: async (err) => { errors.push(String(err)); },
    },
    { startPosition, maxBatchSize: 300, maxWaitTimeInSeconds: 1 },
  );

  let next = 0;
  let acked = 0;
  const deadline = Date.now() + seconds * 1000;
  const t0 = Date.now();
  let sendError = null;
  const worker = async (w) => {
    let i = w;
    while (Date.now() < deadline && !sendError) {
      const batch = await producer.createBatch({ partitionId: ids[i % ids.length] });
      for (let k = 0; k < BATCH; k++) {
        const n = next++;
        batch.tryAdd({ body: `${run}:${String(n).padStart(12, "0")}`.padEnd(100, "x") });
      }
      await producer.sendBatch(batch);
      acked += BATCH;
      i++;
    }
  };
  let sending = true;
  const senders = Promise.all(Array.from({ length: inflight }, (_, w) => worker(w)))
    .catch((e) => { sendError = e; })
    .finally(() => { sending = false; });

  let failure = null;
  try {
    await watch(() => acked, () => !sending, stall, "sending");
    await senders;
    if (sendError) throw new Error(`sending failed: ${sendError}`);
  } catch (e) {
    failure = String(e.message || e);
  }
  const sendSecs = (Date.now() - t0) / 1000;
  const sent = acked;
  if (!failure) {
    try {
      await watch(() => seen.size, () => seen.size >= sent, stall, "receiving");
    } catch (e) {
      failure = String(e.message || e);
    }
  }
  const recvSecs = (Date.now() - t0) / 1000;
  await subscription.close();
  await consumer.close();
  await producer.close();
  const out = {
    sdk: "javascript", seconds: Number(sendSecs.toFixed(1)), inflight, sent, received_unique: seen.size, duplicates,
    missing: sent - seen.size, send_events_per_s: Math.round(sent / sendSecs),
    receive_events_per_s: Math.round(seen.size / recvSecs), consumer_errors: errors.slice(0, 5), failure,
  };
  console.log(JSON.stringify(out));
  process.exit(failure || duplicates || out.missing || errors.length ? 1 : 0);
}

main().catch((e) => { console.error(e); process.exit(1); });
