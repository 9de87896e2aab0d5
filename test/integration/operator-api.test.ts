/**
 * The operator page's JSON API against real servers: paging of dead letters, replay
 * (one and all), delete, the token, the Origin and Host checks, the overview's queue depths
 * against laneDepths, and serve's refusal to bind off loopback without a token.
 */
import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually, memoryLogger, serveEnv, spawnCli } from "../helpers/proxy.js";
import { useRig } from "../helpers/rig.js";
import type { Proxy } from "../../src/main.js";
import { DeadLetters } from "../../src/client/dlq.js";
import { apiRoutes, type DlqPageView as ServerDlqPage } from "../../src/http/api.js";
import type { Overview as ServerOverview } from "../../src/http/overview.js";
import { laneDepths } from "../../src/nats/depths.js";
import { lanesOf } from "../../src/nats/lanes.js";
import type { DlqPageView, Overview } from "../../web/types.js";

const TOKEN = "test-token-0123456789abcdef";
const TENANTS = { default: { weight: 1 }, acme: { weight: 1 } };

const rig = useRig({ streams: { ackWaitMs: 5000 }, resetDev: false });
let proxy: Proxy;
let base: string;
const logs = memoryLogger("info");

beforeAll(async () => {
  proxy = await rig.startProxy({
    flags: {
      "http.enabled": true,
      "http.port": 0,
      "http.token": TOKEN,
      "worker.concurrency": 1,
      tenants: TENANTS,
    },
    log: logs.log,
  });
  base = `http://127.0.0.1:${proxy.http!.port}`;
});

// Runs before the rig's afterAll (after hooks run in reverse order).
afterAll(() => proxy.stop(500));

async function api<T>(
  path: string,
  o: { method?: string; token?: string | null; headers?: Record<string, string> } = {},
): Promise<{ status: number; body: T; text: string }> {
  const token = o.token === undefined ? TOKEN : o.token;
  const r = await fetch(`${base}${path}`, {
    method: o.method ?? "GET",
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...o.headers },
  });
  const text = await r.text();
  return { status: r.status, body: JSON.parse(text) as T, text };
}

/** A request that fails permanently (unknown model: 404) and so is dead-lettered. */
async function deadLetter(id: string): Promise<void> {
  const r = await rig.client.request(
    { model: "gpt-unknown", messages: [{ role: "user", content: id }] },
    { id, timeoutMs: 10_000 },
  );
  expect(r.code).toBe(404);
}

// Compile-time: what the server answers is what the page reads (web/types.ts).
const asPage = (o: ServerOverview): Overview => o;
const asPageDlq = (p: ServerDlqPage): DlqPageView => p;

describe("operator API", () => {
  it("refuses every /api call without the token (401), or with a wrong one, and leaves /metrics open", async () => {
    const none = await api<{ error: string }>("/api/overview", { token: null });
    expect(none.status).toBe(401);
    expect(none.body.error).toMatch(/Authorization: Bearer/);
    expect((await api("/api/dlq", { token: null })).status).toBe(401);
    expect((await api("/api/dlq/x/replay", { method: "POST", token: null })).status).toBe(401);
    expect((await api("/api/dlq/x", { method: "DELETE", token: null })).status).toBe(401);
    const wrong = await api<{ error: string }>("/api/overview", { token: "not-the-token-at-all" });
    expect(wrong.status).toBe(401);
    expect(wrong.text).not.toContain(TOKEN);
    expect((await api<Overview>("/api/overview")).status).toBe(200);
    expect((await fetch(`${base}/metrics`)).status).toBe(200);
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
  });

  it("pages through the dead letters, oldest first, limit at a time", async () => {
    const ids = ["page-a", "page-b", "page-c", "page-d", "page-e", "page-f", "page-g"];
    for (const id of ids) await deadLetter(id);
    const seen: string[] = [];
    let after: number | undefined;
    const sizes: number[] = [];
    for (let i = 0; i < 10; i++) {
      const q = after === undefined ? "limit=3" : `limit=3&after=${after}`;
      const r = await api<ServerDlqPage>(`/api/dlq?${q}`);
      expect(r.status).toBe(200);
      const page = asPageDlq(r.body);
      sizes.push(page.items.length);
      seen.push(...page.items.map((d) => d.id));
      const seqs = page.items.map((d) => d.seq);
      expect([...seqs].sort((x, y) => x - y)).toEqual(seqs);
      if (page.next === undefined) break;
      after = page.next;
    }
    expect(sizes).toEqual([3, 3, 1]);
    expect(seen).toEqual(ids);
    const one = (await api<ServerDlqPage>("/api/dlq?limit=1")).body.items[0]!;
    expect(one).toMatchObject({ id: "page-a", tenant: "default", code: 404, attempts: 1 });
    expect(one.error).toMatch(/gpt-unknown/);
    expect(Date.parse(one.failedAt)).toBeGreaterThan(0);
    // Nothing beyond what the list shows: no headers, no body.
    expect(Object.keys(one).sort()).toEqual(
      ["attempts", "code", "error", "failedAt", "id", "priority", "seq", "tenant"].sort(),
    );
    expect((await api("/api/dlq?limit=x")).status).toBe(400);
    const last = (await api<ServerDlqPage>(`/api/dlq?after=${one.seq + 1000}`)).body;
    expect(last.items).toEqual([]);
  });

  it("deletes a dead letter (DELETE), and says 404 for one that is not there", async () => {
    const del = await api<{ deleted: string }>("/api/dlq/page-c", { method: "DELETE" });
    expect(del.status).toBe(200);
    expect(del.body.deleted).toBe("page-c");
    const dl = new DeadLetters(rig.nc, rig.jsm, {
      dlqStream: "OPENAI_DLQ",
      dlqPrefix: "openai.dlq",
      requestsPrefix: "openai.requests",
    });
    expect(await dl.show("page-c")).toBeNull();
    expect((await api("/api/dlq/page-c", { method: "DELETE" })).status).toBe(404);
    expect((await api("/api/dlq/page-c/replay", { method: "POST" })).status).toBe(404);
    expect((await api("/api/dlq/bad.id", { method: "DELETE" })).status).toBe(400);
    // Only POST and DELETE change anything.
    expect((await api("/api/dlq/page-d/replay")).status).toBe(405);
    expect((await api("/api/dlq/page-d", { method: "PUT" })).status).toBe(405);
    expect(await dl.show("page-d")).not.toBeNull();
  });

  it("refuses a replay or delete from a foreign Origin, and accepts its own", async () => {
    const evil = { origin: "http://evil.example" };
    const r = await api<{ error: string }>("/api/dlq/page-d", { method: "DELETE", headers: evil });
    expect(r.status).toBe(403);
    expect(r.body.error).toMatch(/cross-site/);
    const site = await api("/api/dlq/page-d/replay", {
      method: "POST",
      headers: { "sec-fetch-site": "cross-site" },
    });
    expect(site.status).toBe(403);
    expect((await api<ServerDlqPage>("/api/dlq?limit=500")).body.items.map((d) => d.id)).toContain(
      "page-d",
    );
    const own = await api("/api/dlq/page-d", {
      method: "DELETE",
      headers: { origin: base, "sec-fetch-site": "same-origin" },
    });
    expect(own.status).toBe(200);
  });

  it("replays one and then all: the requests complete and their results are ok", async () => {
    // Each fails once permanently (400 from the test double), then succeeds when replayed.
    for (const id of ["replay-1", "replay-2", "replay-3"]) {
      const r = await rig.client.request(`[[status:400x1]] ${id}`, { id, timeoutMs: 10_000 });
      expect(r.code).toBe(400);
    }
    const one = await api<{ replayed: string }>("/api/dlq/replay-1/replay", { method: "POST" });
    expect(one.body).toEqual({ replayed: "replay-1" });
    await eventually(
      async () => (await rig.client.result("replay-1"))?.ok === true,
      10_000,
      "replay-1 answered",
    );
    // Replay all: the rest of the DLQ (the page-* ones fail again: their model is unknown).
    const all = await api<{ replayed: string[]; failed: unknown[] }>("/api/dlq/replay", {
      method: "POST",
    });
    expect(all.status).toBe(200);
    expect(all.body.replayed).toEqual(expect.arrayContaining(["replay-2", "replay-3"]));
    expect(all.body.failed).toEqual([]);
    for (const id of ["replay-2", "replay-3"])
      await eventually(
        async () => (await rig.client.result(id))?.ok === true,
        10_000,
        `${id} answered after replay all`,
      );
    const left = (await api<ServerDlqPage>("/api/dlq?limit=500")).body.items.map((d) => d.id);
    expect(left).not.toContain("replay-2");
    expect(left).not.toContain("replay-3");
  });

  it("shows the queue depths laneDepths reads (what streams info shows), per tenant and priority", async () => {
    // One call hangs (concurrency 1): everything after it stays queued, so the depths hold still.
    await rig.client.submit("[[hang]] keeps the only slot", { priority: "high" });
    await eventually(() => proxy.worker.inFlight === 1, 10_000, "the hanging call");
    for (let i = 0; i < 3; i++)
      await rig.client.submit(`acme low ${i}`, { tenant: "acme", priority: "low" });
    for (let i = 0; i < 2; i++)
      await rig.client.submit(`default normal ${i}`, { priority: "normal" });
    const lanes = lanesOf(
      TENANTS,
      { high: { weight: 8 }, normal: { weight: 4 }, low: { weight: 1 } },
      {
        prefix: "openai.requests",
        consumerBase: "openai-proxy",
      },
    );
    // The server counts a consumer's pending messages a moment after the PubAck: wait
    // until it has them all, so that both reads below see the same numbers.
    await eventually(
      async () => {
        const d = await laneDepths(rig.jsm, "OPENAI_REQUESTS", lanes);
        return d.reduce((n, l) => n + l.pending, 0) === 5;
      },
      10_000,
      "the server counting the five queued requests",
    );
    const r = await api<ServerOverview>("/api/overview");
    const o = asPage(r.body);
    const direct = await laneDepths(rig.jsm, "OPENAI_REQUESTS", lanes);
    expect(o.lanes).toEqual(direct);
    const depth = (t: string, p: string) => o.lanes.find((l) => l.tenant === t && l.priority === p);
    expect(depth("acme", "low")?.pending).toBe(3);
    expect(depth("default", "normal")?.pending).toBe(2);
    expect(depth("default", "high")?.ackPending).toBe(1);
    expect(o.queue).toEqual({ pending: 5, ackPending: 1 });
    expect(o.worker).toMatchObject({
      inFlight: 1,
      concurrency: 1,
      breaker: "closed",
      state: "RUNNING",
    });
    expect(o.dlq.messages).toBe((await rig.jsm.streams.info("OPENAI_DLQ")).state.messages);
    // The activity window saw what this file did: the dead letters and the replays.
    expect(o.activity.buckets).toHaveLength(90);
    expect(o.activity.total.completed).toBeGreaterThanOrEqual(13);
    expect(o.activity.total.errors).toBeGreaterThanOrEqual(10);
    expect(o.activity.total.p50).toBeGreaterThan(0);
    // No secret anywhere in what the API says, nor in the logs.
    expect(r.text).not.toContain(TOKEN);
    expect(r.text).not.toContain("sk-test");
    expect(logs.lines.join("")).not.toContain(TOKEN);
  });
});

describe("operator API without a token", () => {
  let http: Server;
  let url: string;
  beforeAll(async () => {
    const dlq = new DeadLetters(rig.nc, rig.jsm, {
      dlqStream: "OPENAI_DLQ",
      dlqPrefix: "openai.dlq",
      requestsPrefix: "openai.requests",
    });
    const route = apiRoutes({
      dlq,
      token: "",
      log: logs.log,
      overview: () => Promise.reject(new Error("not used")),
    });
    http = createServer((req, res) => {
      if (!route(req, res)) res.writeHead(404).end();
    });
    await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
    url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => http.close(() => r())));

  /** A GET with the given Host header (fetch does not let one set it). */
  const getWithHost = (path: string, host: string) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(`${url}${path}`, { headers: { host } }, (res) => {
        let body = "";
        res.on("data", (c: Buffer) => (body += c.toString()));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on("error", reject);
      req.end();
    });

  it("answers on a loopback name and refuses any other Host (DNS rebinding)", async () => {
    expect((await fetch(`${url}/api/dlq?limit=1`)).status).toBe(200);
    const rebound = await getWithHost("/api/dlq?limit=1", "evil.example:9464");
    expect(rebound.status).toBe(403);
    expect(rebound.body).toMatch(/Host \\"evil.example:9464\\" refused/);
    expect((await getWithHost("/api/dlq?limit=1", "localhost:9464")).status).toBe(200);
    expect((await getWithHost("/api/dlq?limit=1", "[::1]:9464")).status).toBe(200);
  });
});

describe("binding", () => {
  it("refuses a non-loopback http.host without a token, naming http.token", async () => {
    await expect(
      rig.startProxy({
        flags: { "http.enabled": true, "http.port": 0, "http.host": "0.0.0.0" },
      }),
    ).rejects.toThrow(/http\.token/);
    await expect(
      rig.startProxy({
        flags: { "http.enabled": true, "http.port": 0, "http.token": "short" },
      }),
    ).rejects.toThrow(/at least 16 characters/);
  });

  it("serve exits 1 with one line naming http.token when HTTP_HOST is not loopback", async () => {
    const p = spawnCli(
      ["serve"],
      serveEnv(rig.server.url, rig.dev.url, rig.streamsDir, { HTTP_HOST: "0.0.0.0" }),
    );
    expect(await p.exited).toBe(1);
    expect(p.stderr()).toMatch(/http\.host is "0\.0\.0\.0".*set http\.token \(env HTTP_TOKEN\)/);
    expect(p.stderr()).not.toMatch(/\n\s+at /);
  });
});
