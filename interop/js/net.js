// Loopback helpers the interop tests share: a free port, and waiting until a server listens.
const net = require("node:net");

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

async function waitListening(p) {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise((r) => {
      const c = net.connect(p, "127.0.0.1", () => { c.end(); r(true); });
      c.on("error", () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`nothing listens on port ${p}`);
}

module.exports = { freePort, waitListening };
