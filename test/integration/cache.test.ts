/**
 * The response cache (issue 14): `Proxy-Cache: <ttl>` or `cache.models` answers an
 * identical request from the KV bucket OPENAI_CACHE without calling the API; replies say
 * hit or miss; errors are never cached; cache.models caches only deterministic requests;
 * entries expire; an unparsable TTL is a 400 dead letter.
 */
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import { createInbox, headers, type Msg } from "@nats-io/transport-node";
import { startNatsServer } from "../helpers/nats-server.js";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { memoryLogger, serveEnv, spawnCli, testClient } from "../helpers/proxy.js";
import { useRig } from "../helpers/rig.js";
import type { Proxy } from "../../src/main.js";
import { chunkText } from "../../src/protocol/stream.js";
import { cacheKey } from "../../src/protocol/cache.js";

const enc = new TextEncoder();
const rig = useRig({ streams: { ackWaitMs: 5000 } });
let seq = 0;
const answer = (prompt: string) => `(dev-openai test double) You said: ${prompt}`;

interface Answer {
  final: Msg;
  deltas: Msg[];
  cache: string;
  code: string;
}

/** Publishes a JSON request with a Reply-To inbox and waits for its final reply. */
async function ask(body: Record<string, unknown>, cache?: string): Promise<Answer> {
  const id = `c-${++seq}`;
  const inbox = createInbox();
  const deltas: Msg[] = [];
  const sub = rig.nc.subscribe(inbox);
  const h = headers();
  h.set("Content-Type", "application/json");
  h.set("Reply-To", inbox);
  if (cache !== undefined) h.set("Proxy-Cache", cache);
  await jetstream(rig.nc).publish(`openai.requests.${id}`, enc.encode(JSON.stringify(body)), {
    msgID: id,
    headers: h,
  });
  const timer = setTimeout(() => sub.unsubscribe(), 15_000);
  try {
    for await (const m of sub) {
      const kind = m.headers?.get("Openai-Stream") ?? "";
      if (kind === "delta") deltas.push(m);
      else if (kind !== "restart")
        return {
          final: m,
          deltas,
          cache: m.headers?.get("Proxy-Cache") ?? "",
          code: m.headers?.get("Nats-Service-Error-Code") ?? "",
        };
    }
    throw new Error(`no reply for ${id}`);
  } finally {
    clearTimeout(timer);
    sub.unsubscribe();
  }
}

const content = (a: Answer) =>
  a.final.json<{ choices: { message: { content: string } }[] }>().choices[0]!.message.content;

async function cacheMetric(p: Proxy, result: string): Promise<number> {
  const m = await p.metrics.registry.getSingleMetric("openai_proxy_cache_total")?.get();
  return m?.values.find((v) => v.labels.result === result)?.value ?? 0;
}

describe("Proxy-Cache", () => {
  it("a repeat is answered from the cache with no API call (hit), also streamed; user, metadata and stream do not matter", async () => {
    const p = await rig.proxy();
    const msgs = [{ role: "user", content: "cache me please" }];
    const first = await ask({ messages: msgs, user: "a" }, "30s");
    expect(first.code).toBe("");
    expect(first.cache).toBe("miss");
    expect(rig.dev.stats().calls).toBe(1);
    const second = await ask({ messages: msgs, user: "b", metadata: { k: "v" } }, "30s");
    expect(second.cache).toBe("hit");
    expect(content(second)).toBe(answer("cache me please"));
    expect(second.final.headers?.get("Proxy-Attempts")).toBe("1");
    // A streaming client gets the cached answer as deltas, then done.
    const streamed = await ask({ messages: msgs, stream: true }, "30s");
    expect(streamed.cache).toBe("hit");
    expect(streamed.final.headers?.get("Openai-Stream")).toBe("done");
    expect(streamed.deltas.length).toBeGreaterThanOrEqual(1);
    expect(streamed.deltas.map((m) => chunkText(m.json())).join("")).toBe(
      answer("cache me please"),
    );
    expect(rig.dev.stats().calls).toBe(1);
    // The hit is the stored result too.
    const id = streamed.final.headers?.get("Nats-Msg-Id") ?? "";
    expect((await rig.client.result(id))?.completion?.choices?.[0]?.message?.content).toBe(
      answer("cache me please"),
    );
    // Another generation parameter is another request.
    const other = await ask({ messages: msgs, max_tokens: 50 }, "30s");
    expect(other.cache).toBe("miss");
    expect(rig.dev.stats().calls).toBe(2);
    expect(await cacheMetric(p, "hit")).toBe(2);
    expect(await cacheMetric(p, "miss")).toBe(2);
    const bytes = await p.metrics.registry.getSingleMetric("openai_proxy_cache_bytes_total")?.get();
    expect(bytes?.values[0]?.value ?? 0).toBeGreaterThan(100);
  });

  it("never caches an error", async () => {
    await rig.proxy();
    const msgs = [{ role: "user", content: "[[status:400x1]] fails once" }];
    const first = await ask({ messages: msgs }, "30s");
    expect(first.code).toBe("400");
    expect(first.cache).toBe("");
    const second = await ask({ messages: msgs }, "30s");
    expect(second.code).toBe("");
    expect(second.cache).toBe("miss");
    const third = await ask({ messages: msgs }, "30s");
    expect(third.cache).toBe("hit");
    expect(rig.dev.stats().calls).toBe(2);
  });

  it("an entry expires after its TTL: the next request calls the API again", async () => {
    await rig.proxy();
    const msgs = [{ role: "user", content: "short lived" }];
    const t0 = Date.now();
    expect((await ask({ messages: msgs }, "1s")).cache).toBe("miss");
    expect((await ask({ messages: msgs }, "1s")).cache).toBe("hit");
    // 2.11+: the server expires the entry itself (per-message TTL); 2.10: the entry's own expiry.
    const jsm = await jetstreamManager(rig.nc);
    const ttlServer = !/^2\.10\./.test(rig.nc.info?.version ?? "");
    const kvInfo = await jsm.streams.info("KV_OPENAI_CACHE");
    expect(kvInfo.config.allow_msg_ttl === true).toBe(ttlServer);
    const entry = await jsm.streams.getMessage("KV_OPENAI_CACHE", {
      last_by_subj: `$KV.OPENAI_CACHE.${cacheKey({ model: "gpt-4o-mini", messages: msgs })}`,
    });
    expect(entry?.header.get("Nats-TTL") ?? "").toBe(ttlServer ? "1s" : "");
    // Poll until the entry has expired (bounded): hits call no API.
    let last = "hit";
    for (let i = 0; i < 100 && last === "hit"; i++) {
      last = (await ask({ messages: msgs }, "1s")).cache;
      if (last === "hit") await new Promise((r) => setTimeout(r, 100));
    }
    expect(last).toBe("miss");
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1000);
    expect(Date.now() - t0).toBeLessThan(12_000);
    expect(rig.dev.stats().calls).toBe(2);
  });

  it("an unparsable TTL is a 400, dead-lettered, with no API call", async () => {
    await rig.proxy();
    const a = await ask({ messages: [{ role: "user", content: "bad ttl" }] }, "soon");
    expect(a.code).toBe("400");
    expect(a.final.headers?.get("Nats-Service-Error")).toMatch(/Proxy-Cache "soon" is not a TTL/);
    expect(rig.dev.stats().calls).toBe(0);
    const id = a.final.headers?.get("Nats-Msg-Id") ?? "";
    const jsm = await jetstreamManager(rig.nc);
    const dl = await jsm.streams.getMessage("OPENAI_DLQ", { last_by_subj: `openai.dlq.${id}` });
    expect(dl?.header.get("Nats-Service-Error-Code")).toBe("400");
  });
});

describe("cache.models", () => {
  it("caches only deterministic requests (temperature 0 or a seed) to the listed models", async () => {
    await rig.proxy({ "cache.models": ["gpt-4o-mini"], "cache.ttl_ms": 60_000 });
    const msgs = [{ role: "user", content: "deterministic?" }];
    const loose = [await ask({ messages: msgs }), await ask({ messages: msgs })];
    expect(loose.map((a) => a.cache)).toEqual(["", ""]);
    expect(rig.dev.stats().calls).toBe(2);
    const cold = [
      await ask({ messages: msgs, temperature: 0 }),
      await ask({ messages: msgs, temperature: 0 }),
    ];
    expect(cold.map((a) => a.cache)).toEqual(["miss", "hit"]);
    const seeded = [
      await ask({ messages: msgs, seed: 7, temperature: 0.9 }),
      await ask({ messages: msgs, seed: 7, temperature: 0.9 }),
    ];
    expect(seeded.map((a) => a.cache)).toEqual(["miss", "hit"]);
    const otherModel = [
      await ask({ model: "gpt-4o", messages: msgs, temperature: 0 }),
      await ask({ model: "gpt-4o", messages: msgs, temperature: 0 }),
    ];
    expect(otherModel.map((a) => a.cache)).toEqual(["", ""]);
    expect(rig.dev.stats().calls).toBe(6);
  });
});

describe("client and CLI", () => {
  it("the client's cache option sets Proxy-Cache; a bad TTL is refused before submitting", async () => {
    await rig.proxy();
    const input = { messages: [{ role: "user" as const, content: "client cached" }] };
    const a = await rig.client.request(input, { cache: "1m", timeoutMs: 10_000 });
    const b = await rig.client.request(input, { cache: "1m", timeoutMs: 10_000 });
    expect(a.ok && b.ok).toBe(true);
    expect(b.body).toBe(a.body);
    expect(rig.dev.stats().calls).toBe(1);
    await expect(rig.client.submit(input, { cache: "forever" })).rejects.toThrow(/not a TTL/);
  });

  it("submit --file --cache: a batch run again is answered from the cache; a bad TTL is a usage error", async () => {
    await rig.proxy();
    const dir = mkdtempSync(join(tmpdir(), "cache-batch-"));
    try {
      const input = join(dir, "requests.jsonl");
      const line = (i: number) =>
        JSON.stringify({
          custom_id: `c${i}`,
          method: "POST",
          url: "/v1/chat/completions",
          body: { model: "gpt-4o-mini", messages: [{ role: "user", content: `batch line ${i}` }] },
        });
      writeFileSync(input, `${[1, 2, 3].map(line).join("\n")}\n`);
      const env = serveEnv(rig.server.url, rig.dev.url, rig.streamsDir);
      const run = async (out: string) => {
        const p = spawnCli(
          ["submit", "--file", input, "--wait", "--out", out, "--cache", "10m"],
          env,
        );
        expect(await p.exited).toBe(0);
        return readFileSync(out, "utf8")
          .trimEnd()
          .split("\n")
          .map((l) => JSON.parse(l) as { custom_id: string; response: { body: unknown } })
          .sort((a, b) => a.custom_id.localeCompare(b.custom_id));
      };
      const first = await run(join(dir, "out1.jsonl"));
      expect(rig.dev.stats().calls).toBe(3);
      const again = await run(join(dir, "out2.jsonl"));
      expect(rig.dev.stats().calls).toBe(3); // every line a hit
      expect(again.map((l) => l.response.body)).toEqual(first.map((l) => l.response.body));
      const bad = spawnCli(["submit", "--file", input, "--cache", "forever"], env);
      expect(await bad.exited).toBe(2);
      expect(bad.stderr()).toMatch(/--cache: .*not a TTL/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("an answer too large for the cache", () => {
  it("is answered and stored but not cached (debug line), never an error", async () => {
    // A small max_payload: the result fits, the cache entry (with its room for headers) not.
    const small = await startNatsServer({ maxPayload: 16_384 });
    const { log, lines } = memoryLogger("debug");
    const p = await rig.startProxy({ natsUrl: small.url, log });
    const { client: c2, nc: nc2 } = await testClient(small.url);
    try {
      const input = { messages: [{ role: "user" as const, content: "[[size:15200]] big" }] };
      const a = await c2.request(input, { cache: "1m", timeoutMs: 10_000 });
      const b = await c2.request(input, { cache: "1m", timeoutMs: 10_000 });
      expect(a.ok && b.ok).toBe(true);
      expect(a.completion?.choices?.[0]?.message?.content?.length).toBe(15_200);
      expect(rig.dev.stats().calls).toBe(2);
      expect(lines.some((l) => l.includes("answer too large for the response cache"))).toBe(true);
    } finally {
      await p.stop(500);
      await nc2.close();
      await small.stop();
    }
  });
});
