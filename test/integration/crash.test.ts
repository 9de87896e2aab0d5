/**
 * Crashes and shutdowns of the real `serve` process (DESIGN.md "Delivery semantics" and
 * "Concurrency and scale"): a poison request that hangs every worker ends in the DLQ after
 * max_deliver (MAX_DELIVERIES advisory); kill -9 under load loses nothing and answers every id
 * once; SIGTERM finishes in-flight work, or naks it back after the grace period; a second signal
 * exits at once and the request is redelivered after ack_wait.
 *
 * Each test starts its own nats-server and test double, and every serve subprocess it starts is
 * SIGKILLed in afterEach.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import type { JetStreamManager } from "@nats-io/jetstream";
import { afterEach, describe, expect, it } from "vitest";
import { startNatsServer, type NatsServerHandle } from "../helpers/nats-server.js";
import {
  eventually,
  makeStreamsDir,
  serveEnv,
  spawnCli,
  testClient,
  type ServeProcess,
  type StreamsTweaks,
} from "../helpers/proxy.js";
import { startDevOpenAI, type DevOpenAI } from "../../src/dev-openai/server.js";
import type { ProxyClient } from "../../src/client/client.js";
import { DeadLetters } from "../../src/client/dlq.js";
import type { ResultView } from "../../src/protocol/result.js";

const REQUESTS = "OPENAI_REQUESTS";
// client.submit queues at priority normal for the default tenant.
const CONSUMER = "openai-proxy-default-normal";
const READY = /nats-openai-proxy serving/;

interface Rig {
  nats: NatsServerHandle;
  dev: DevOpenAI;
  nc: NatsConnection;
  jsm: JetStreamManager;
  client: ProxyClient;
  dlq: DeadLetters;
  streamsDir: string;
}

const procs: ServeProcess[] = [];
const cleanups: (() => Promise<void>)[] = [];

afterEach(async () => {
  await Promise.all(procs.splice(0).map((p) => p.kill("SIGKILL")));
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

/** A fresh nats-server, test double, streams definitions and client for one test. */
async function rig(tweaks: StreamsTweaks): Promise<Rig> {
  const streams = makeStreamsDir(tweaks);
  cleanups.push(() => Promise.resolve(streams.cleanup()));
  const [nats, dev] = await Promise.all([startNatsServer(), startDevOpenAI()]);
  cleanups.push(() => nats.stop());
  cleanups.push(() => dev.close());
  const { client, nc } = await testClient(nats.url);
  cleanups.push(() => nc.close());
  const jsm = await jetstreamManager(nc);
  const dlq = new DeadLetters(nc, jsm, {
    dlqStream: "OPENAI_DLQ",
    dlqPrefix: "openai.dlq",
    requestsPrefix: "openai.requests",
  });
  return { nats, dev, nc, jsm, client, dlq, streamsDir: streams.dir };
}

/** Starts `serve` and waits until it is consuming. */
async function serve(
  r: Rig,
  extraEnv: Record<string, string> = {},
  args: string[] = [],
): Promise<ServeProcess> {
  const p = spawnCli(["serve", ...args], serveEnv(r.nats.url, r.dev.url, r.streamsDir, extraEnv));
  procs.push(p);
  await p.waitFor(READY, 30_000);
  return p;
}

/** A temporary YAML config file, removed after the test. */
async function configFile(text: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "crash-test-"));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, "config.yaml");
  await writeFile(file, text);
  return file;
}

/** The JSON log lines of a serve process. */
function logLines(p: ServeProcess): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of p.output().split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // A line cut by SIGKILL.
    }
  }
  return out;
}

function linesWith(p: ServeProcess, msg: string): Record<string, unknown>[] {
  return logLines(p).filter((l) => l.msg === msg);
}

/** Stored results of `ids` (null where none), read in windows of 100. */
async function results(r: Rig, ids: string[]): Promise<(ResultView | null)[]> {
  const out: (ResultView | null)[] = [];
  for (let i = 0; i < ids.length; i += 100) {
    out.push(...(await Promise.all(ids.slice(i, i + 100).map((id) => r.client.result(id)))));
  }
  return out;
}

async function queueState(r: Rig) {
  const si = await r.jsm.streams.info(REQUESTS);
  const ci = await r.jsm.consumers.info(REQUESTS, CONSUMER);
  return {
    messages: si.state.messages,
    pending: ci.num_pending,
    ackPending: ci.num_ack_pending,
    redelivered: ci.num_redelivered,
  };
}

/** Waits until the request stream is empty and the consumer has nothing pending. */
async function drained(r: Rig, timeoutMs: number): Promise<void> {
  let last = {};
  await eventually(
    async () => {
      const s = await queueState(r);
      last = s;
      return s.messages === 0 && s.pending === 0 && s.ackPending === 0;
    },
    timeoutMs,
    "the request queue to drain",
  ).catch((e: Error) => {
    throw new Error(`${e.message}: ${JSON.stringify(last)}`);
  });
}

async function dlqSize(r: Rig): Promise<number> {
  return (await r.jsm.streams.info("OPENAI_DLQ")).state.messages;
}

const POISON = "poison pill [[hang]]";
const NORMAL = Array.from({ length: 5 }, (_, i) => `n-${i}`);
const ADVISORY = `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.${REQUESTS}.${CONSUMER}`;

/** Submits the poison request and 5 normal ones; waits until the normal ones are answered and acked. */
async function submitPoisonAndNormal(r: Rig): Promise<void> {
  await r.client.submit(POISON, { id: "poison" });
  await Promise.all(NORMAL.map((id) => r.client.submit(`normal request ${id}`, { id })));
  const answers = await Promise.all(
    NORMAL.map((id) => r.client.result(id, { wait: true, timeoutMs: 20_000 })),
  );
  for (const a of answers) expect(a?.ok, JSON.stringify(a)).toBe(true);
  // Only the hanging poison request is left, delivered and unacked.
  await eventually(
    async () => {
      const q = await queueState(r);
      return q.messages === 1 && q.ackPending === 1 && q.pending === 0;
    },
    10_000,
    "only the poison request left in flight",
  );
}

/** What must hold once the poison request has been dead-lettered. */
async function expectPoisonSettled(r: Rig): Promise<void> {
  const letters = await r.dlq.list();
  expect(letters.map((d) => [d.id, d.code, d.attempts])).toEqual([["poison", 500, 3]]);
  expect(letters[0]!.error).toContain("poison");
  const [poisonResult, ...normalResults] = await results(r, ["poison", ...NORMAL]);
  expect(poisonResult).toMatchObject({ ok: false, code: 500 });
  expect(poisonResult?.error).toContain("poison");
  for (const res of normalResults) expect(res?.ok, JSON.stringify(res)).toBe(true);
  await drained(r, 10_000);
  expect((await r.jsm.streams.info(REQUESTS)).state.messages).toBe(0);
}

describe("crashes", () => {
  it("dead-letters a request that hangs every worker after max_deliver (replacement already up)", async () => {
    const r = await rig({ ackWaitMs: 1000, maxDeliver: 3 });
    let p = await serve(r);
    await submitPoisonAndNormal(r);

    const all: ServeProcess[] = [p];
    for (let delivery = 1; delivery <= 3; delivery++) {
      await eventually(
        () => (r.dev.stats().byPrompt[POISON] ?? 0) >= delivery,
        20_000,
        `delivery ${delivery} of the poison request`,
      );
      // The replacement is consuming before the crash, as with a second replica; the next
      // test covers a crash with no proxy running when max_deliver is reached.
      const next = await serve(r);
      all.push(next);
      await p.kill("SIGKILL");
      p = next;
    }
    // The 4th instance gets no delivery; it settles the message from the advisory.
    await p.waitFor(/poison message dead-lettered/, 20_000);

    expect(r.dev.stats().byPrompt[POISON]).toBe(3);
    await expectPoisonSettled(r);
    // Only one instance dead-lettered it, and only once.
    const settledBy = all.map((i) => linesWith(i, "poison message dead-lettered").length);
    expect(settledBy).toEqual([0, 0, 0, 1]);
  });

  // The advisory is captured by the OPENAI_POISON stream, so the next instance finds it.
  it("dead-letters a poison request whose advisory went out while no proxy was running", async () => {
    const ACK_WAIT = 1000;
    const r = await rig({ ackWaitMs: ACK_WAIT, maxDeliver: 3 });
    const advisories: unknown[] = [];
    let wake: (() => void) | undefined;
    const sub = r.nc.subscribe(ADVISORY, {
      callback: (_e, m) => {
        advisories.push(m.json());
        wake?.();
      },
    });
    await r.nc.flush();
    /** Resolves on an advisory, or after `ms` when none comes (it may legitimately not). */
    const advisoryOrDeadline = (ms: number) =>
      new Promise<void>((resolve) => {
        if (advisories.length > 0) return resolve();
        const t = setTimeout(resolve, ms);
        wake = () => {
          clearTimeout(t);
          resolve();
        };
      });

    let p = await serve(r);
    await submitPoisonAndNormal(r);
    let calls = 0;
    for (let round = 1; round <= 3 && advisories.length === 0; round++) {
      await eventually(
        () => (r.dev.stats().byPrompt[POISON] ?? 0) > calls,
        20_000,
        `call ${calls + 1} for the poison request`,
      );
      calls = r.dev.stats().byPrompt[POISON] ?? 0;
      await p.kill("SIGKILL");
      // Nothing runs now. Within one ack_wait the delivery expires: the server either keeps
      // the message for a later delivery (no advisory) or announces max_deliver to nobody.
      await advisoryOrDeadline(ACK_WAIT + 1500);
      p = await serve(r);
    }
    sub.unsubscribe();
    expect(advisories).toHaveLength(1);
    // OPENAI_POISON kept the advisory sent while nobody listened: the new instance reads it.
    await p.waitFor(/poison message dead-lettered/, 5_000);
    await expectPoisonSettled(r);
  });

  it(
    "answers each of 1000 requests once across repeated kill -9 under load",
    {
      timeout: 120_000,
    },
    async () => {
      const N = 1000;
      const CONCURRENCY = 64;
      const KILLS = 3;
      const STEP = 150;
      const started = Date.now();
      const r = await rig({ ackWaitMs: 2000 });
      r.dev.setLatency(100);
      const env = { PROXY_CONCURRENCY: String(CONCURRENCY) };
      const instances: ServeProcess[] = [];
      let p = await serve(r, env);
      instances.push(p);

      const ids = Array.from({ length: N }, (_, i) => `c-${i}`);
      const submitting = (async () => {
        for (let i = 0; i < N; i += 100) {
          await Promise.all(
            ids.slice(i, i + 100).map((id) => r.client.submit(`crash replay prompt ${id}`, { id })),
          );
        }
      })();

      let kills = 0;
      const inFlightAtKills: number[] = [];
      const ackPendingAtKills: number[] = [];
      for (let k = 1; k <= KILLS; k++) {
        await eventually(
          () => r.dev.stats().ok >= k * STEP,
          60_000,
          `${k * STEP} upstream answers`,
        );
        // Delivered to the doomed process and not acked: what a kill can make run twice.
        ackPendingAtKills.push((await queueState(r)).ackPending);
        inFlightAtKills.push(r.dev.stats().inFlight);
        await p.kill("SIGKILL");
        kills++;
        p = await serve(r, env);
        instances.push(p);
      }
      await submitting;

      let stored = 0;
      await eventually(
        async () => {
          stored = (await r.jsm.streams.info("OPENAI_RESULTS")).state.messages;
          return stored === N;
        },
        90_000,
        "1000 stored results",
      ).catch((e: Error) => {
        throw new Error(`${e.message} (have ${stored})`);
      });
      await drained(r, 30_000);

      const all = await results(r, ids);
      const ok = all.filter((x) => x?.ok === true).length;
      const deadLetters = await dlqSize(r);
      const stats = r.dev.stats();
      const prompts = ids.map((id) => `crash replay prompt ${id}`);
      const duplicatePrompts = prompts.filter((t) => (stats.byPrompt[t] ?? 0) > 1).length;
      const missingPrompts = prompts.filter((t) => (stats.byPrompt[t] ?? 0) === 0).length;
      const finished = instances.flatMap((i) => linesWith(i, "request finished"));
      const outcome = (o: string) => finished.filter((l) => l.outcome === o).length;
      console.log(
        `CRASH-REPLAY: requests=${N} kills=${kills} results_ok=${ok} dead_letters=${deadLetters} ` +
          `upstream_calls=${stats.calls} duplicate_calls=${stats.calls - N} ` +
          `prompts_called_more_than_once=${duplicatePrompts} ` +
          `ack_pending_at_kills=${ackPendingAtKills.join("/")} ` +
          `upstream_in_flight_at_kills=${inFlightAtKills.join("/")} ` +
          `logged_ok=${outcome("ok")} logged_replayed=${outcome("replayed")} ` +
          `elapsed_ms=${Date.now() - started}`,
      );

      expect(kills).toBeGreaterThanOrEqual(3);
      expect(ok).toBe(N);
      expect(all.every((x) => x?.id !== undefined)).toBe(true);
      expect((await r.jsm.streams.info("OPENAI_RESULTS")).state.messages).toBe(N);
      expect(deadLetters).toBe(0);
      expect(await r.dlq.list()).toEqual([]);
      expect(missingPrompts).toBe(0);
      expect(stats.calls).toBeGreaterThanOrEqual(N);
      // A request is called again only if it was in a killed process's slots.
      expect(stats.calls - N).toBeLessThanOrEqual(kills * CONCURRENCY);
      expect(duplicatePrompts).toBeLessThanOrEqual(kills * CONCURRENCY);
      const q = await queueState(r);
      expect(q).toMatchObject({ messages: 0, pending: 0, ackPending: 0 });
    },
  );
});

describe("shutdown", () => {
  it("SIGTERM finishes in-flight requests within the grace period and exits 0", async () => {
    const r = await rig({});
    r.dev.setLatency(1500);
    const p = await serve(r);
    const ids = ["g-0", "g-1", "g-2", "g-3"];
    await Promise.all(ids.map((id) => r.client.submit(`graceful ${id}`, { id })));
    await eventually(() => r.dev.stats().inFlight === 4, 10_000, "4 calls in flight");

    const code = await p.kill("SIGTERM");
    expect(code, p.output().slice(-2000)).toBe(0);
    expect(p.output()).toContain("finishing in-flight requests");
    const all = await results(r, ids);
    for (const res of all) expect(res).toMatchObject({ ok: true, attempts: 1 });
    expect(r.dev.stats().calls).toBe(4);
    // The process has exited, so its output is complete.
    expect(linesWith(p, "request finished")).toHaveLength(4);
    await drained(r, 5_000);
  });

  /** Starts serve with a 500 ms grace, puts 3 slow calls in flight and SIGTERMs it. */
  async function stopPastGrace(r: Rig): Promise<{ config: string; ids: string[] }> {
    const GRACE = 500;
    const config = await configFile(`worker:\n  shutdown_grace_ms: ${GRACE}\nhttp:\n  port: 0\n`);
    r.dev.setLatency(10_000);
    const p = await serve(r, {}, ["--config", config]);
    const ids = ["s-0", "s-1", "s-2"];
    await Promise.all(ids.map((id) => r.client.submit(`slow ${id}`, { id })));
    await eventually(() => r.dev.stats().inFlight === 3, 10_000, "3 calls in flight");

    const t0 = Date.now();
    const code = await p.kill("SIGTERM");
    const exitMs = Date.now() - t0;
    expect(code, p.output().slice(-2000)).toBe(0);
    expect(exitMs).toBeLessThan(GRACE + 4000);
    expect(p.output()).toContain("grace period over");
    const aborted = linesWith(p, "request not completed").filter((l) => l.outcome === "aborted");
    expect(aborted.map((l) => l.id).sort()).toEqual(ids);
    expect(await results(r, ids)).toEqual([null, null, null]);
    // Nothing was lost: the stream still holds all three.
    expect((await queueState(r)).messages).toBe(3);
    r.dev.setLatency(0);
    return { config, ids };
  }

  it("SIGTERM past the grace period exits 0 and a new instance completes the unfinished requests", async () => {
    const r = await rig({ ackWaitMs: 3000 });
    const { config, ids } = await stopPastGrace(r);
    const p2 = await serve(r, {}, ["--config", config]);
    const done = await Promise.all(
      ids.map((id) => r.client.result(id, { wait: true, timeoutMs: 20_000 })),
    );
    for (const res of done) expect(res?.ok, JSON.stringify(res)).toBe(true);
    await drained(r, 10_000);
    expect(await dlqSize(r)).toBe(0);
    expect(linesWith(p2, "request finished").length).toBeGreaterThan(0);
  });

  // Pulls are never abandoned early and the shutdown naks land after them, which avoids
  // nats-server < 2.11 rewinding the consumer (#5305) when a nak meets a dead pull.
  it("SIGTERM past the grace period naks unfinished requests back for prompt redelivery", async () => {
    // ack_wait 30 s: only a nak can make them available again before it expires.
    const r = await rig({ ackWaitMs: 30_000 });
    const { config, ids } = await stopPastGrace(r);
    const p2 = await serve(r, {}, ["--config", config]);
    const done = await Promise.all(
      ids.map((id) => r.client.result(id, { wait: true, timeoutMs: 8_000 })),
    );
    for (const [i, res] of done.entries())
      expect(res, `${ids[i]}: ${JSON.stringify(await queueState(r))}`).toMatchObject({
        ok: true,
        attempts: 2,
      });
    // Each was called once before the shutdown and once more now.
    expect(r.dev.stats().calls).toBe(6);
    await eventually(() => linesWith(p2, "request finished").length >= 3, 5_000, "3 log lines");
    expect(linesWith(p2, "request finished")).toHaveLength(3);
    await drained(r, 5_000);
  });

  it("a second signal exits at once; the request is redelivered after ack_wait", async () => {
    // ack_wait longer than a serve start-up, so the redelivery finds the new instance waiting.
    const r = await rig({ ackWaitMs: 3000 });
    r.dev.setLatency(15_000);
    const p = await serve(r);
    await r.client.submit("long request", { id: "t-0" });
    await eventually(() => r.dev.stats().inFlight === 1, 10_000, "1 call in flight");

    p.proc.kill("SIGTERM");
    await p.waitFor(/stopping: no new requests/, 10_000);
    const t0 = Date.now();
    p.proc.kill("SIGTERM");
    const code = await p.exited;
    const exitMs = Date.now() - t0;
    expect(code).not.toBeNull();
    expect(code).not.toBe(0);
    expect(exitMs).toBeLessThan(3000);
    expect(p.output()).toContain("second signal");
    expect(await r.client.result("t-0")).toBeNull();

    r.dev.setLatency(0);
    const p2 = await serve(r);
    const res = await r.client.result("t-0", { wait: true, timeoutMs: 20_000 });
    expect(res).toMatchObject({ ok: true, attempts: 2 });
    expect(r.dev.stats().calls).toBe(2);
    await p2.waitFor(/"msg":"request finished"/);
    expect(linesWith(p2, "request finished")).toHaveLength(1);
    await drained(r, 5_000);
  });
});
