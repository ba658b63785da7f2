// Run by tls.test.js in a child process, because Node reads NODE_EXTRA_CA_CERTS (its CA
// option for every TLS connection) only at start: sends one event over TLS to
// `ehub serve --tls-self-signed` as to the service (no UseDevelopmentEmulator), reads it back,
// and prints the result as JSON.
const { EventHubProducerClient, EventHubConsumerClient } = require("@azure/event-hubs");

const [endpoint] = process.argv.slice(2);
const cs = "Endpoint=sb://localhost/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE";
const options = { customEndpointAddress: endpoint, retryOptions: { maxRetries: 0, timeoutInMs: 10000 } };

async function main() {
  const producer = new EventHubProducerClient(cs, "eh1", options);
  const ids = await producer.getPartitionIds();
  await producer.sendBatch([{ body: "over tls" }], { partitionId: "2" });
  const last = (await producer.getPartitionProperties("2")).lastEnqueuedSequenceNumber;
  await producer.close();
  const consumer = new EventHubConsumerClient("$Default", cs, "eh1", options);
  const body = await new Promise((resolve, reject) => {
    const sub = consumer.subscribe("2", {
      processEvents: async (events) => { if (events.length) { await sub.close(); resolve(events[0].body); } },
      processError: async (err) => { await sub.close(); reject(err); },
    }, { startPosition: { sequenceNumber: last, isInclusive: true }, maxWaitTimeInSeconds: 1 });
  });
  await consumer.close();
  console.log(JSON.stringify({ ids, body }));
}

main().catch((e) => { console.log(JSON.stringify({ error: e.code || e.name, message: e.message })); process.exit(1); });
