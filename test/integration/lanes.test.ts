/**
 * Lanes and tenants: an interactive request never waits behind batch work, lanes share
 * the slots by weight, tenants share a priority fairly, per-tenant limits hold across
 * instances, and submissions are refused for unknown or over-full tenants. Real
 * nats-server, the local test double, figures asserted.
 */
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createInbox, headers } from "@nats-io/transport-node";
import { eventually } from "../helpers/proxy.js";
import { useRig } from "../helpers/rig.js";
import { ClientError } from "../../src/client/client.js";
import { submitBatch } from "../../src/client/batch.js";
import { DeadLetters } from "../../src/client/dlq.js";

const TENANTS = {
  default: { weight: 1 },
  a: { weight: 1 },
  b: { weight: 1 },
  capped: { weight: 1, max_concurrency: 3 },
  small: { weight: 1, max_queued: 5 },
};

const rig = useRig({
  streams: { ackWaitMs: 10_000 },
  flags: { tenants: TENANTS },
  devReset: (dev) => dev.setLatency(0),
});
const tmp = mkdtempSync(join(tmpdir(), "proxy-lanes-"));

async function stopAll(): Promise<void> {
  await rig.stopProxies(0);
}

/** Empties the queue (after the proxies are stopped). */
async function purgeQueue(): Promise<void> {
  const jsm = await jetstreamManager(rig.nc);
  await jsm.streams.purge("OPENAI_REQUESTS");
}

function p95(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(0.95 * s.length) - 1)]!;
}

/** Ids of the results as they are stored, in order. */
function watchResults(): { ids: string[]; stop: () => void } {
  const ids: string[] = [];
  const sub = rig.nc.subscribe("openai.results.>", {
    callback: (_e, m) => {
      ids.push(m.subject.slice("openai.results.".length));
    },
  });
  return { ids, stop: () => sub.unsubscribe() };
}

beforeAll(async () => {
  // The first proxy creates the streams and lanes for TENANTS (and their metadata).
  await rig.proxy();
  await stopAll();
});

// Runs before the rig's afterEach (after hooks run in reverse order), which then resets
// the test double.
afterEach(async () => {
  await stopAll();
  await purgeQueue();
});

afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe("priorities", () => {
  it("20 high requests behind a 2,000-line low batch finish within 2x their empty-queue p95 (+200 ms)", async () => {
    rig.dev.setLatency(200);
    await rig.proxy({ "worker.concurrency": 16 });
    const highs = async (tag: string) =>
      Promise.all(
        Array.from({ length: 20 }, async (_, i) => {
          const t0 = Date.now();
          const r = await rig.client.request(`${tag} ${i}`, {
            priority: "high",
            timeoutMs: 30_000,
          });
          expect(r.ok).toBe(true);
          return Date.now() - t0;
        }),
      );
    const empty = await highs("empty-queue");

    const file = join(tmp, "batch.jsonl");
    writeFileSync(
      file,
      Array.from({ length: 2000 }, (_, i) =>
        JSON.stringify({
          custom_id: `line-${i}`,
          method: "POST",
          url: "/v1/chat/completions",
          body: { messages: [{ role: "user", content: `batch line ${i}` }] },
        }),
      ).join("\n"),
    );
    await submitBatch(rig.client, file); // priority low by default
    await eventually(() => rig.dev.stats().inFlight === 16, 10_000, "the batch to fill every slot");
    const behind = await highs("behind-batch");
    const jsm = await jetstreamManager(rig.nc);
    const lowLeft = (await jsm.consumers.info("OPENAI_REQUESTS", "openai-proxy-default-low"))
      .num_pending;
    console.log(
      `LANES high p95: empty queue ${p95(empty)} ms, behind the batch ${p95(behind)} ms (${lowLeft} batch lines still queued)`,
    );
    expect(lowLeft).toBeGreaterThan(1000); // the batch really was in the way
    expect(p95(behind)).toBeLessThanOrEqual(2 * p95(empty) + 200);
  });

  it("with every lane backlogged, each lane's share of completions is within 30 % of its weight's", async () => {
    rig.dev.setLatency(30);
    const per = 300;
    for (const [p, prefix] of [
      ["high", "h"],
      ["normal", "n"],
      ["low", "l"],
    ] as const) {
      await Promise.all(
        Array.from({ length: per }, (_, i) =>
          rig.client.submit(`${p} ${i}`, { id: `${prefix}-${i}`, priority: p }),
        ),
      );
    }
    const seen = watchResults();
    await rig.proxy({ "worker.concurrency": 8 });
    await eventually(() => seen.ids.length >= 260, 30_000, "260 completions");
    seen.stop();
    // Skip the start (the first pulls), count the next 240.
    const window = seen.ids.slice(20, 260);
    const share = (prefix: string) =>
      window.filter((id) => id.startsWith(`${prefix}-`)).length / window.length;
    const got = { high: share("h"), normal: share("n"), low: share("l") };
    console.log(`LANES shares over 240 completions: ${JSON.stringify(got)}`);
    const weights = { high: 8, normal: 4, low: 1 };
    for (const p of ["high", "normal", "low"] as const) {
      const want = weights[p] / 13;
      expect(got[p], p).toBeGreaterThanOrEqual(want * 0.7);
      expect(got[p], p).toBeLessThanOrEqual(want * 1.3);
    }
  });

  it("the shim's Proxy-Priority header and a plain openai.requests.<id> request are served", async () => {
    await rig.proxy();
    const h = headers();
    h.set("Proxy-Priority", "low");
    const r = await rig.nc.request("openai_requests", "low via the shim", {
      headers: h,
      timeout: 10_000,
    });
    expect(r.string()).toBe("(dev-openai test double) You said: low via the shim");
    const bad = headers();
    bad.set("Proxy-Priority", "urgent");
    const refused = await rig.nc.request("openai_requests", "x", { headers: bad, timeout: 10_000 });
    expect(refused.headers?.get("Nats-Service-Error-Code")).toBe("400");
    expect(refused.headers?.get("Nats-Service-Error")).toMatch(/high, normal, low/);
    // The subject of earlier versions: tenant default, priority normal.
    const inbox = createInbox();
    const sub = rig.nc.subscribe(inbox, { max: 1 });
    const rh = headers();
    rh.set("Reply-To", inbox);
    await jetstream(rig.nc).publish("openai.requests.legacy-1", "legacy subject", {
      headers: rh,
      msgID: "legacy-1",
    });
    for await (const m of sub)
      expect(m.string()).toBe("(dev-openai test double) You said: legacy subject");
  });

  it("dlq replay puts a dead letter back on its original lane", async () => {
    await rig.proxy();
    const failed = await rig.client.request("refused once [[status:400x1]]", {
      id: "lane-replay",
      priority: "low",
      tenant: "a",
      timeoutMs: 10_000,
    });
    expect(failed).toMatchObject({ ok: false, code: 400 });
    const dlq = new DeadLetters(rig.nc, await jetstreamManager(rig.nc), {
      dlqStream: "OPENAI_DLQ",
      dlqPrefix: "openai.dlq",
      requestsPrefix: "openai.requests",
    });
    const d = (await dlq.show("lane-replay"))!;
    expect(d).toMatchObject({
      tenant: "a",
      priority: "low",
      subject: "openai.requests.a.low.lane-replay",
    });
    await stopAll(); // nobody consumes: the replayed copy stays where replay put it
    await dlq.replay(d);
    const jsm = await jetstreamManager(rig.nc);
    const sm = await jsm.streams.getMessage("OPENAI_REQUESTS", {
      last_by_subj: "openai.requests.a.low.lane-replay",
    });
    expect(sm?.subject).toBe("openai.requests.a.low.lane-replay");
  });
});

describe("tenants", () => {
  it("a tenant submitting after another's 600 is served fairly: all 60 of b finish before 40 % of a", async () => {
    rig.dev.setLatency(20);
    await rig.proxy({ "worker.concurrency": 8 });
    const seen = watchResults();
    await Promise.all(
      Array.from({ length: 600 }, (_, i) =>
        rig.client.submit(`a ${i}`, { id: `a-${i}`, tenant: "a" }),
      ),
    );
    await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        rig.client.submit(`b ${i}`, { id: `b-${i}`, tenant: "b" }),
      ),
    );
    await eventually(
      () => seen.ids.filter((id) => id.startsWith("b-")).length === 60,
      30_000,
      "all of b",
    );
    const aDone = seen.ids.filter((id) => id.startsWith("a-")).length;
    seen.stop();
    console.log(`LANES tenants: a had ${aDone}/600 done when b's 60 were all done`);
    expect(aDone).toBeLessThan(0.4 * 600);
  });

  it("max_concurrency 3 holds across two instances, and the tenant still completes everything", async () => {
    rig.dev.setLatency(200);
    await rig.proxy({ "worker.concurrency": 8 });
    await rig.proxy({ "worker.concurrency": 8 });
    const ids = Array.from({ length: 24 }, (_, i) => `capped-${i}`);
    await Promise.all(
      ids.map((id) => rig.client.submit(`[[tag:capped]] ${id}`, { id, tenant: "capped" })),
    );
    // Another tenant's work runs beside it: the capped tenant does not hold the slots.
    await Promise.all(
      Array.from({ length: 24 }, (_, i) =>
        rig.client.submit(`[[tag:free]] ${i}`, { id: `free-${i}`, tenant: "a" }),
      ),
    );
    const all = await Promise.all(
      [...ids, ...Array.from({ length: 24 }, (_, i) => `free-${i}`)].map((id) =>
        rig.client.result(id, { wait: true, timeoutMs: 30_000 }),
      ),
    );
    expect(all.every((r) => r?.ok)).toBe(true);
    const tags = rig.dev.stats().maxInFlightByTag;
    console.log(`LANES max in flight: capped ${tags.capped}, free ${tags.free}`);
    expect(tags.capped).toBe(3);
    expect(tags.free).toBeGreaterThan(3);
  });

  it("max_queued refuses the excess with 429 naming the tenant, and accepts again once drained", async () => {
    for (let i = 0; i < 5; i++)
      await rig.client.submit(`q ${i}`, { id: `small-${i}`, tenant: "small" });
    const refused = await rig.client
      .submit("one too many", { id: "small-x", tenant: "small" })
      .catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(ClientError);
    expect((refused as ClientError).code).toBe(429);
    expect((refused as ClientError).message).toMatch(/tenant "small" .*max_queued is 5/);
    // The shim says the same.
    const h = headers();
    h.set("Proxy-Tenant", "small");
    await rig.proxy({ "worker.concurrency": 1, "worker.lane_poll_ms": 100 });
    // (the proxy drains the 5 meanwhile; once drained, submissions are accepted again)
    await Promise.all(
      Array.from({ length: 5 }, (_, i) =>
        rig.client.result(`small-${i}`, { wait: true, timeoutMs: 10_000 }),
      ),
    );
    await eventually(
      async () => {
        const s = await rig.client
          .submit("after draining", { tenant: "small" })
          .catch(() => undefined);
        return s !== undefined;
      },
      5_000,
      "a submission to be accepted again",
    );
    const viaShim = await rig.nc.request("openai_requests", "via the shim", {
      headers: h,
      timeout: 10_000,
    });
    expect(viaShim.string()).toBe("(dev-openai test double) You said: via the shim");
  });

  it("an unknown tenant is refused at submission with 400 naming it, by the client and the shim", async () => {
    const e = await rig.client.submit("who?", { tenant: "nobody" }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ClientError);
    expect((e as ClientError).code).toBe(400);
    expect((e as ClientError).message).toMatch(/unknown tenant "nobody"/);
    await rig.proxy();
    const h = headers();
    h.set("Proxy-Tenant", "nobody");
    const r = await rig.nc.request("openai_requests", "who?", { headers: h, timeout: 10_000 });
    expect(r.headers?.get("Nats-Service-Error-Code")).toBe("400");
    expect(r.headers?.get("Nats-Service-Error")).toMatch(/unknown tenant "nobody"/);
    // A direct publish for it is refused by the server at once: nothing sits unserved.
    await expect(
      jetstream(rig.nc).publish("openai.requests.nobody.high.x1", "x"),
    ).rejects.toThrow();
  });
});
