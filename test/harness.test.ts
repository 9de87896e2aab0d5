/**
 * Proves the nats-server harness against the real server: lifecycle, restart with a kept store,
 * nkey / TLS / operator-creds auth, and a 3-node JetStream cluster.
 */
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import net from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import {
  connect,
  credsAuthenticator,
  nkeyAuthenticator,
  PermissionViolationError,
  type NatsConnection,
  type Status,
} from "@nats-io/transport-node";
import {
  StorageType,
  type JetStreamClient,
  type PubAck,
  jetstreamManager,
  jetstream,
} from "@nats-io/jetstream";
import {
  freePort,
  makeNkeyUser,
  makeOperatorFixtures,
  makeTlsFixtures,
  nkeyAuthConfig,
  startCluster,
  startNatsServer,
  type ClusterHandle,
  type NatsServerHandle,
} from "./helpers/nats-server.js";

const enc = new TextEncoder();

/** Everything started in this file; afterAll stops it even when a test failed halfway. */
const servers: NatsServerHandle[] = [];
const clusters: ClusterHandle[] = [];
const connections: NatsConnection[] = [];

afterAll(async () => {
  await Promise.all(connections.map((nc) => nc.close()));
  await Promise.all([...servers.map((s) => s.stop()), ...clusters.map((c) => c.stop())]);
});

async function track<T extends NatsServerHandle>(p: Promise<T>): Promise<T> {
  const s = await p;
  servers.push(s);
  return s;
}

async function open(...args: Parameters<typeof connect>): Promise<NatsConnection> {
  const nc = await connect(...args);
  connections.push(nc);
  return nc;
}

/** Resolves with the data of the first status event of `type` on the connection. */
async function nextStatus(nc: NatsConnection, type: Status["type"]): Promise<Status> {
  for await (const s of nc.status()) {
    if (s.type === type) return s;
  }
  throw new Error("status iterator ended");
}

/** Publishes until acked (same msgID, so a retry cannot duplicate), bounded at 15 s. */
async function publishWithRetry(
  js: JetStreamClient,
  subject: string,
  data: string,
  msgID: string,
): Promise<PubAck> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      return await js.publish(subject, data, { msgID, timeout: 2000 });
    } catch (err) {
      if (Date.now() > deadline) throw err;
      // 503 (no responders) comes back at once; a short pause avoids a hot loop.
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

describe("single server", () => {
  it("starts with JetStream and stores a published message", async () => {
    const srv = await track(startNatsServer());
    expect(srv.url).toBe(`nats://127.0.0.1:${srv.port}`);
    expect(srv.pid).toBeTypeOf("number");
    expect(srv.logs()).toContain("Server is ready");

    const nc = await open({ servers: srv.url });
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "H1", subjects: ["h1.>"] });
    const ack = await jetstream(nc).publish("h1.a", "hello", { msgID: "m1" });
    expect(ack).toMatchObject({ stream: "H1", seq: 1, duplicate: false });
    await nc.close();

    await srv.stop();
    await srv.stop(); // idempotent
    expect(srv.pid).toBeUndefined();
    expect(existsSync(srv.storeDir)).toBe(false);
  });

  it("keeps stored messages across kill() + restart() on the same port", async () => {
    const srv = await track(startNatsServer());
    let nc = await open({ servers: srv.url });
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "H2", subjects: ["h2.>"], storage: StorageType.File });
    await jetstream(nc).publish("h2.a", "persisted");
    await nc.close();

    const firstPid = srv.pid;
    await srv.kill();
    expect(srv.pid).toBeUndefined();
    expect(existsSync(srv.storeDir)).toBe(true);

    await srv.restart();
    expect(srv.pid).toBeTypeOf("number");
    expect(srv.pid).not.toBe(firstPid);

    nc = await open({ servers: srv.url });
    const jsm2 = await jetstreamManager(nc);
    const msg = await jsm2.streams.getMessage("H2", { seq: 1 });
    expect(msg?.string()).toBe("persisted");
  });

  it("retries a fixed port that is still in use for a moment", async () => {
    const port = await freePort();
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(port, "127.0.0.1", r));
    // The scenario itself: the previous owner lets go once the server has found it taken.
    const srv = await track(
      startNatsServer({ port, jetstream: false, onAddrInUse: () => void blocker.close() }),
    );
    expect(srv.port).toBe(port);
    expect(srv.logs()).toMatch(/address already in use[\s\S]*Server is ready/);
  });

  it("rejects a restart() after stop()", async () => {
    const srv = await track(startNatsServer({ jetstream: false }));
    await srv.stop();
    await expect(srv.restart()).rejects.toThrow(/after stop/);
  });

  it("rejects with the log tail when the config is invalid", async () => {
    await expect(startNatsServer({ extraConfig: "no_such_option: 1" })).rejects.toThrow(
      /exited before ready[\s\S]*no_such_option/,
    );
  });
});

describe("auth", () => {
  it("nkey: refuses a client without authenticator, accepts the seed, applies permissions", async () => {
    const [user, limited] = await Promise.all([makeNkeyUser(), makeNkeyUser()]);
    const srv = await track(
      startNatsServer({
        jetstream: false,
        extraConfig: nkeyAuthConfig([
          { publicKey: user.publicKey },
          {
            publicKey: limited.publicKey,
            permissions: { publish: { deny: ["secret.>"] }, subscribe: ["_INBOX.>"] },
          },
        ]),
      }),
    );

    await expect(connect({ servers: srv.url })).rejects.toMatchObject({
      name: "AuthorizationError",
    });
    const nc = await open({
      servers: srv.url,
      authenticator: nkeyAuthenticator(enc.encode(user.seed)),
    });
    await nc.flush();

    const lc = await open({
      servers: srv.url,
      authenticator: nkeyAuthenticator(enc.encode(limited.seed)),
    });
    const violation = nextStatus(lc, "error");
    lc.publish("secret.x", "nope");
    // nats.js v3 reports async server errors as an "error" status with a typed error.
    const s = await violation;
    expect(s.type === "error" && s.error).toBeInstanceOf(PermissionViolationError);
  });

  it("TLS verify: refuses a foreign client cert and accepts the good one", async () => {
    const tls = await makeTlsFixtures();
    const srv = await track(
      startNatsServer({
        jetstream: false,
        tls: { cert: tls.serverCert, key: tls.serverKey, ca: tls.ca, verify: true },
      }),
    );
    expect(srv.url).toBe(`tls://127.0.0.1:${srv.port}`);

    // The server drops the handshake, so nats.js only reports its connect TIMEOUT.
    await expect(
      connect({
        servers: srv.url,
        timeout: 2000,
        tls: { caFile: tls.ca, certFile: tls.foreignClientCert, keyFile: tls.foreignClientKey },
      }),
    ).rejects.toMatchObject({ name: "TimeoutError" });
    expect(srv.logs()).toMatch(/certificate signed by unknown authority/);

    const nc = await open({
      servers: srv.url,
      timeout: 2000,
      tls: { caFile: tls.ca, certFile: tls.clientCert, keyFile: tls.clientKey },
    });
    await nc.flush();
  });

  it("operator mode: creds connect and use JetStream, foreign creds are refused", async () => {
    const op = await makeOperatorFixtures();
    const srv = await track(startNatsServer({ extraConfig: op.config }));

    await expect(connect({ servers: srv.url })).rejects.toMatchObject({
      name: "AuthorizationError",
    });
    const foreign = await readFile(op.foreignCredsFile);
    await expect(
      connect({ servers: srv.url, authenticator: credsAuthenticator(foreign) }),
    ).rejects.toMatchObject({ name: "AuthorizationError" });

    expect(await readFile(op.credsFile, "utf8")).toBe(op.credsText);
    const nc = await open({
      servers: srv.url,
      authenticator: credsAuthenticator(enc.encode(op.credsText)),
    });
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "OP", subjects: ["op.>"] });
    const ack = await jetstream(nc).publish("op.a", "x");
    expect(ack.seq).toBe(1);
  });
});

describe("cluster", () => {
  it("accepts an R3 stream and survives stopping a non-leader node", async () => {
    const cluster = await startCluster();
    clusters.push(cluster);
    expect(cluster.nodes).toHaveLength(3);

    // reconnectTimeWait: nats.js waits up to this long (default 2 s) before redialling.
    const nc = await open({
      servers: cluster.urls,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
    });
    const jsm = await jetstreamManager(nc);
    const js = jetstream(nc);
    await jsm.streams.add({ name: "R3", subjects: ["r3.>"], num_replicas: 3 });
    for (let i = 0; i < 5; i++) await js.publish("r3.a", `m${i}`, { msgID: `a${i}` });

    const info = await jsm.streams.info("R3");
    const leader = info.cluster?.leader;
    expect(leader).toMatch(/^n[123]$/);
    const victimIndex = cluster.nodes.findIndex((_, i) => `n${i + 1}` !== leader);
    const victim = cluster.nodes[victimIndex];
    if (victim === undefined) throw new Error("no non-leader node");
    await victim.stop();

    // If the client was connected to the stopped node it must reconnect, and nats.js 2.29 drops
    // whatever was published while disconnected, so retry with the same msgID (dedupe).
    for (let i = 5; i < 10; i++) await publishWithRetry(js, "r3.a", `m${i}`, `a${i}`);
    const after = await jsm.streams.info("R3");
    expect(after.state.messages).toBe(10);
    expect(after.cluster?.leader).toBe(leader);
    const offline = after.cluster?.replicas?.find((r) => r.name === `n${victimIndex + 1}`);
    expect(offline?.current).toBe(false);
  });
});
