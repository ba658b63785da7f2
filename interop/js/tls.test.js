// The official JavaScript SDK over `ehub serve --tls-self-signed`: AMQP over TLS as against the
// service (no UseDevelopmentEmulator), trusting the development CA through Node's CA option
// (NODE_EXTRA_CA_CERTS); without it the certificate is refused.
const { test, before, after } = require("node:test");
const assert = require("node:assert");
const { spawn, execFile } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { freePort, waitListening } = require("./net.js");

const EHUB = process.env.EHUB_BIN || path.join(__dirname, "..", "..", "target", "release", "ehub");
let broker, tlsPort, dataDir;

before(async () => {
  const port = await freePort();
  tlsPort = await freePort();
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "ehub-js-tls-"));
  broker = spawn(EHUB, ["serve", "--listen", `127.0.0.1:${port}`, "--listen-blob", "off", "--listen-management", "off", "--listen-kafka", "off", "--data-dir", dataDir,
    "--listen-kafka-tls", "off", "--tls-self-signed", "--listen-tls", `127.0.0.1:${tlsPort}`], { stdio: "ignore" });
  await waitListening(tlsPort);
});

after(async () => {
  broker.kill("SIGTERM");
  await new Promise((r) => broker.on("exit", r));
  fs.rmSync(dataDir, { recursive: true, force: true });
});

function client(extraEnv) {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(__dirname, "tls-client.js"), `sb://localhost:${tlsPort}`],
      { env: { ...process.env, ...extraEnv }, timeout: 50000 },
      (_err, stdout) => resolve(JSON.parse(stdout.trim().split("\n").pop())));
  });
}

test("AMQP over TLS with the development CA", { timeout: 60000 }, async () => {
  const ca = path.join(dataDir, "tls", "ca.pem");
  assert.ok(fs.existsSync(ca));
  const got = await client({ NODE_EXTRA_CA_CERTS: ca });
  assert.deepStrictEqual(got, { ids: ["0", "1", "2", "3"], body: "over tls" });
});

test("without the CA the certificate is refused", { timeout: 60000 }, async () => {
  const got = await client({ NODE_EXTRA_CA_CERTS: "" });
  assert.strictEqual(got.error, "UNABLE_TO_VERIFY_LEAF_SIGNATURE", JSON.stringify(got));
});
