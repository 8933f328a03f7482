// Drives `netkit proxy --api` with toxiproxy-node-client, as a Node test suite would, and
// prints one JSON object with what it saw; tests/commands/test_proxy_api.py checks it.
// Usage: node scenario.js API_URL UPSTREAM_HOST:PORT
"use strict";
const net = require("node:net");
const { Toxiproxy } = require("toxiproxy-node-client");

const [apiUrl, upstream] = process.argv.slice(2);

function hostPort(address) {
  const i = address.lastIndexOf(":");
  return { host: address.slice(0, i).replace(/^\[|\]$/g, ""), port: Number(address.slice(i + 1)) };
}

// Milliseconds for one message to go through the proxy to the echo server and back.
function roundTrip(address) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(hostPort(address), () => {
      const start = process.hrtime.bigint();
      sock.once("data", () => {
        resolve(Number(process.hrtime.bigint() - start) / 1e6);
        sock.destroy();
      });
      sock.write("ping");
    });
    sock.setTimeout(5000, () => sock.destroy(new Error("timeout")));
    sock.once("error", reject);
  });
}

// The error code a connection attempt ends with ("ECONNREFUSED"), or "connected".
function tryConnect(address) {
  return new Promise((resolve) => {
    const sock = net.connect(hostPort(address), () => {
      sock.destroy();
      resolve("connected");
    });
    sock.once("error", (err) => resolve(err.code));
  });
}

async function main() {
  const seen = {};
  const toxiproxy = new Toxiproxy(apiUrl);
  seen.version = JSON.parse(await toxiproxy.getVersion()).version;
  const proxy = await toxiproxy.createProxy({ name: "node", listen: "127.0.0.1:0", upstream });
  seen.created = proxy.toJson();
  seen.baseline = await roundTrip(proxy.listen);
  const toxic = await proxy.addToxic({
    name: "lag", type: "latency", stream: "downstream", toxicity: 1,
    attributes: { latency: 100, jitter: 0 },
  });
  seen.toxic = toxic.toJson();
  seen.withLatency = await roundTrip(proxy.listen);
  const updated = await toxic.update({ attributes: { latency: 200 } });
  seen.updated = updated.toJson();
  seen.withMoreLatency = await roundTrip(proxy.listen);
  seen.fetched = (await proxy.getToxic("lag")).toJson();
  await toxic.remove();
  seen.afterRemove = await roundTrip(proxy.listen);
  const disabled = await proxy.update({ enabled: false });
  seen.disabled = disabled.toJson();
  seen.whileDisabled = await tryConnect(proxy.listen);
  await proxy.addToxic({ type: "bandwidth", attributes: { rate: 1 } });
  await toxiproxy.reset();
  const all = await toxiproxy.getAll();
  seen.afterReset = all.node.toJson();
  seen.afterResetConnect = await tryConnect(proxy.listen);
  await proxy.remove();
  seen.remaining = Object.keys(await toxiproxy.getAll());
  try {
    await toxiproxy.get("node");
    seen.getRemoved = "found";
  } catch (err) {
    seen.getRemoved = err.message;
  }
  process.stdout.write(JSON.stringify(seen) + "\n");
}

main().catch((err) => {
  process.stderr.write(`scenario failed: ${err.stack || err}\n`);
  process.exit(1);
});
