/**
 * Shared rate limits: two proxy instances together stay under a requests-per-minute
 * limit enforced by the local OpenAI-compatible server, with no 429s. A limiter that
 * fails (its permit stream cannot be created or updated) is infrastructure, not the
 * request's fault: requests wait, they are never dead-lettered.
 */
import { describe, expect, it } from "vitest";
import { nanos } from "@nats-io/transport-node";
import {
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  jetstreamManager,
  jetstream,
} from "@nats-io/jetstream";
import { eventually } from "../helpers/proxy.js";
import { useRig } from "../helpers/rig.js";
import { rpmWindow } from "../../src/worker/ratelimit.js";
import type { Proxy } from "../../src/main.js";

const rig = useRig({
  streams: { ackWaitMs: 10_000 },
  // The test double enforces 600 requests per minute like the real API would.
  dev: { rpm: 600 },
  applyStreams: true,
  // Each test resets the double itself.
  resetDev: false,
});

describe("rate limits", () => {
  it("keeps two instances together under 600 RPM (10 per second) without a single 429", async () => {
    const N = 45;
    await Promise.all(
      Array.from({ length: N }, (_, i) => rig.client.submit(`limited ${i}`, { id: `rl-${i}` })),
    );
    // Watch the permits where they are granted: the server's own timestamps of the
    // permit stream (the stream the proxies would create, created here first).
    const { windowMs, permits } = rpmWindow(600);
    const jsm = await jetstreamManager(rig.nc);
    await jsm.streams.add({
      name: "OPENAI_RATE_gpt-4o-mini",
      subjects: ["openai.rate.permit.gpt-4o-mini"],
      retention: RetentionPolicy.Limits,
      storage: StorageType.Memory,
      discard: DiscardPolicy.New,
      max_msgs: permits,
      max_age: nanos(windowMs),
      duplicate_window: nanos(windowMs),
      num_replicas: 1,
    });
    const granted: number[] = [];
    const watch = await (
      await jetstream(rig.nc).consumers.get("OPENAI_RATE_gpt-4o-mini")
    ).consume({
      callback: (m) => {
        granted.push(m.info.timestampNanos / 1e6);
      },
    });
    for (let i = 0; i < 2; i++) {
      await rig.proxy({
        "limits.models": { "gpt-4o-mini": { rpm: 600 } },
        "worker.concurrency": 32,
      });
    }
    const t0 = Date.now();
    const results = await Promise.all(
      Array.from({ length: N }, (_, i) =>
        rig.client.result(`rl-${i}`, { wait: true, timeoutMs: 30_000 }),
      ),
    );
    const elapsed = Date.now() - t0;
    expect(results.every((r) => r?.ok)).toBe(true);
    const s = rig.dev.stats();
    expect(s.calls).toBe(N); // no call was refused and retried
    expect(s.failed).toBe(0);
    // The server granted at most 10 permits in any one-second window (exact server time).
    // Without the limiter all 45 calls would start within a few milliseconds.
    await eventually(() => granted.length === N, 5_000, "every permit observed");
    watch.stop();
    const times = [...granted].sort((a, b) => a - b);
    let maxInWindow = 0;
    for (let i = 0; i < times.length; i++) {
      let j = i;
      while (j < times.length && times[j]! - times[i]! < windowMs) j++;
      maxInWindow = Math.max(maxInWindow, j - i);
    }
    expect(maxInWindow).toBeLessThanOrEqual(permits);
    // 45 calls at 10 per second span at least 4 full windows, in the server's time (the
    // client's clock started after the first proxy may already have taken permits).
    expect(times[N - 1]! - times[0]!).toBeGreaterThanOrEqual(4 * windowMs);
    console.log(
      `RATELIMIT: ${N} calls at ${permits} per ${windowMs} ms over two instances: permits span ${Math.round(times[N - 1]! - times[0]!)} ms, most in one window ${maxInWindow}, results after ${elapsed} ms`,
    );
  });

  it.each([
    [
      "another stream captures the permit subject (create fails: subjects overlap)",
      { name: "BLOCK_RATE", subjects: ["openai.rate.permit.gpt-4o-mini"] },
    ],
    [
      "the permit stream exists as a file stream (update fails: storage cannot change)",
      {
        name: "OPENAI_RATE_gpt-4o-mini",
        subjects: ["openai.rate.permit.gpt-4o-mini"],
        storage: StorageType.File,
      },
    ],
  ])(
    "%s: requests pause, none is dead-lettered, all complete once it is removed",
    async (_, blocker) => {
      await rig.stopProxies(500);
      const jsm = await jetstreamManager(rig.nc);
      for (const name of ["OPENAI_RATE_gpt-4o-mini", "BLOCK_RATE"])
        await jsm.streams.delete(name).catch(() => undefined);
      await jsm.streams.add(blocker);
      rig.dev.reset();
      const N = 4;
      const ids = Array.from({ length: N }, (_, i) => `${blocker.name}-${i}`);
      await Promise.all(ids.map((id) => rig.client.submit(`blocked ${id}`, { id })));
      const p = await rig.proxy({ "limits.models": { "gpt-4o-mini": { rpm: 600 } } });
      // Every request reaches its 4th delivery (max_deliver 5) and is re-queued fresh.
      await eventually(
        async () => (await outcomes(p, "requeued")) >= N,
        20_000,
        "every request to be re-queued at least once",
      );
      expect(await outcomes(p, "error")).toBe(0);
      expect((await jsm.streams.info("OPENAI_DLQ")).state.messages).toBe(0);
      expect(rig.dev.stats().calls).toBe(0);
      await jsm.streams.delete(blocker.name);
      const results = await Promise.all(
        ids.map((id) => rig.client.result(id, { wait: true, timeoutMs: 20_000 })),
      );
      expect(results.map((r) => r?.ok)).toEqual(ids.map(() => true));
      expect(rig.dev.stats().calls).toBe(N);
      expect((await jsm.streams.info("OPENAI_DLQ")).state.messages).toBe(0);
      // Created by the limiter with the requests stream's replicas.
      const permit = await jsm.streams.info("OPENAI_RATE_gpt-4o-mini");
      expect([permit.config.storage, permit.config.num_replicas]).toEqual([StorageType.Memory, 1]);
    },
  );
});

/** Finished deliveries of `p` with this outcome (openai_proxy_requests_total). */
async function outcomes(p: Proxy, outcome: string): Promise<number> {
  const m = await p.metrics.registry.getSingleMetric("openai_proxy_requests_total")?.get();
  return (m?.values ?? [])
    .filter((v) => v.labels.outcome === outcome)
    .reduce((a, v) => a + v.value, 0);
}
