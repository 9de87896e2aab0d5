/**
 * Metrics, health, readiness and micro-service discovery against real servers.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually, memoryLogger } from "../helpers/proxy.js";
import { sc, useRig } from "../helpers/rig.js";
import type { Proxy } from "../../src/main.js";

const rig = useRig({ streams: { ackWaitMs: 5000 }, resetDev: false });
let proxy: Proxy;
let base: string;
const logs = memoryLogger("info");

beforeAll(async () => {
  proxy = await rig.startProxy({ flags: { "http.enabled": true, "http.port": 0 }, log: logs.log });
  base = `http://127.0.0.1:${proxy.http!.port}`;
});

// Runs before the rig's afterAll (after hooks run in reverse order).
afterAll(() => proxy.stop(500));

// client.request queues at priority high for the default tenant.
const LANE = '{tenant="default",priority="high"}';

async function metric(name: string, labels = ""): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name}${labels}`) && !l.startsWith("#"));
  return line ? Number(line.split(" ").pop()) : 0;
}

describe("observability", () => {
  it("counts the requests a test produced, by outcome and model, with tokens and latencies", async () => {
    await Promise.all(
      [1, 2, 3].map((i) => rig.client.request(`count me ${i}`, { timeoutMs: 10_000 })),
    );
    await rig.client.request(
      { model: "gpt-unknown", messages: [{ role: "user", content: "x" }] },
      { timeoutMs: 10_000 },
    );
    // The reply is published just before the ack and the metrics update: wait for them.
    await eventually(
      async () => (await metric("openai_proxy_queue_wait_seconds_count", LANE)) === 4,
      5_000,
      "the metrics of all four requests",
    );
    expect(
      await metric(
        "openai_proxy_requests_total",
        '{outcome="ok",model="gpt-4o-mini",tenant="default",priority="high"}',
      ),
    ).toBe(3);
    expect(
      await metric(
        "openai_proxy_requests_total",
        '{outcome="error",model="gpt-unknown",tenant="default",priority="high"}',
      ),
    ).toBe(1);
    expect(await metric("openai_proxy_dead_letters_total", '{code="404"}')).toBe(1);
    expect(
      await metric("openai_proxy_tokens_total", '{direction="prompt",model="gpt-4o-mini"}'),
    ).toBe(9);
    expect(await metric("openai_proxy_upstream_seconds_count", '{model="gpt-4o-mini"}')).toBe(3);
    expect(await metric("openai_proxy_queue_wait_seconds_count", LANE)).toBe(4);
    // Depth per lane, for configured tenants only.
    expect(await metric("openai_proxy_queue_depth", LANE)).toBe(0);
    const text = await (await fetch(`${base}/metrics`)).text();
    expect(text).toMatch(/openai_proxy_queue_depth\{tenant="default",priority="low"\} 0/);
    expect(await metric("openai_proxy_dlq_messages")).toBe(1);
    expect(await metric("openai_proxy_breaker_open")).toBe(0);
    // One log line per finished request, with the fields operators need.
    const finished = logs.lines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.msg === "request finished");
    expect(finished).toHaveLength(3);
    expect(Object.keys(finished[0]!)).toEqual(
      expect.arrayContaining([
        "id",
        "model",
        "attempts",
        "queue_wait_ms",
        "upstream_ms",
        "prompt_tokens",
        "completion_tokens",
        "outcome",
        "tenant",
        "priority",
      ]),
    );
  });

  it("answers $SRV.PING, $SRV.INFO and $SRV.STATS as the openai-proxy service", async () => {
    await rig.nc.request("openai_requests", sc.encode("counted by the service"), {
      timeout: 10_000,
    });
    const ping = (
      await rig.nc.request("$SRV.PING.openai-proxy", undefined, { timeout: 2000 })
    ).json<{
      name: string;
      version: string;
    }>();
    expect(ping).toMatchObject({ name: "openai-proxy", version: "0.1.0" });
    const info = (
      await rig.nc.request("$SRV.INFO.openai-proxy", undefined, { timeout: 2000 })
    ).json<{
      endpoints: { subject: string; queue_group: string }[];
    }>();
    expect(info.endpoints).toEqual([
      expect.objectContaining({ subject: "openai_requests", queue_group: "openai-proxy" }),
    ]);
    const stats = (
      await rig.nc.request("$SRV.STATS.openai-proxy", undefined, { timeout: 2000 })
    ).json<{
      endpoints: { num_requests: number; data: { breaker: string } }[];
    }>();
    expect(stats.endpoints[0]!.num_requests).toBeGreaterThanOrEqual(1);
    expect(stats.endpoints[0]!.data.breaker).toBe("closed");
  });

  it("is alive on /healthz, and /readyz flips when NATS goes away and comes back", async () => {
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    await rig.server.kill();
    await eventually(
      async () => (await fetch(`${base}/readyz`)).status === 503,
      10_000,
      "not ready",
    );
    const body = (await (await fetch(`${base}/readyz`)).json()) as { nats: boolean };
    expect(body.nats).toBe(false);
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    await rig.server.restart();
    await eventually(
      async () => (await fetch(`${base}/readyz`)).status === 200,
      20_000,
      "ready again",
    );
  });
});
