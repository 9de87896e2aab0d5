/**
 * W3C trace context end to end, against real servers: the caller's traceparent reaches
 * the upstream HTTP call (the test double records it), the reply and the stored result;
 * the shim, the client library and the CLI start one when there is none; with an OTLP
 * endpoint the proxy exports the queue-wait, upstream and store-and-reply spans, children
 * of the caller's span, to an in-test OTLP/HTTP (JSON) receiver.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createInbox, headers, type Msg } from "@nats-io/transport-node";
import { serveEnv, spawnCli } from "../helpers/proxy.js";
import { useRig } from "../helpers/rig.js";
import type { Proxy } from "../../src/main.js";
import { parseTraceparent } from "../../src/protocol/traceparent.js";

interface OtlpValue {
  stringValue?: string;
  intValue?: number | string;
  doubleValue?: number;
  boolValue?: boolean;
}
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: { key: string; value: OtlpValue }[];
  status?: { code?: number };
}

/** A tiny OTLP/HTTP receiver: POST /v1/traces with the JSON encoding. */
function otlpReceiver() {
  const spans: OtlpSpan[] = [];
  const resources: Record<string, OtlpValue>[] = [];
  const waiters: { want: (s: OtlpSpan[]) => boolean; resolve: () => void }[] = [];
  const server: Server = createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString()));
    req.on("end", () => {
      if (req.method !== "POST" || req.url !== "/v1/traces") {
        res.writeHead(404).end();
        return;
      }
      const doc = JSON.parse(body) as {
        resourceSpans: {
          resource: { attributes: { key: string; value: OtlpValue }[] };
          scopeSpans: { spans: OtlpSpan[] }[];
        }[];
      };
      for (const rs of doc.resourceSpans) {
        resources.push(Object.fromEntries(rs.resource.attributes.map((a) => [a.key, a.value])));
        for (const ss of rs.scopeSpans) spans.push(...ss.spans);
      }
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
      for (const w of [...waiters])
        if (w.want(spans)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve();
        }
    });
  });
  return {
    spans,
    resources,
    async start(): Promise<string> {
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    },
    /** Resolves once the spans received satisfy `want` (bounded). */
    until(want: (s: OtlpSpan[]) => boolean, timeoutMs = 15_000): Promise<void> {
      if (want(spans)) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const t = setTimeout(
          () =>
            reject(
              new Error(`spans not received in time; got ${spans.map((s) => s.name).join(", ")}`),
            ),
          timeoutMs,
        );
        waiters.push({
          want,
          resolve: () => {
            clearTimeout(t);
            resolve();
          },
        });
      });
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

const attr = (s: OtlpSpan, k: string): string | number | boolean | undefined => {
  const v = s.attributes.find((a) => a.key === k)?.value;
  if (!v) return undefined;
  if (v.intValue !== undefined) return Number(v.intValue);
  return v.stringValue ?? v.doubleValue ?? v.boolValue;
};

const rig = useRig({ streams: { ackWaitMs: 5000 }, resetDev: false });

/** Submits with a Reply-To inbox and returns the reply message itself (headers included). */
async function requestRaw(
  prompt: string,
  id: string,
  extra: Record<string, string> = {},
): Promise<Msg> {
  const inbox = createInbox();
  const sub = rig.nc.subscribe(inbox, { max: 1, timeout: 15_000 });
  await rig.nc.flush();
  await rig.client.submit(prompt, { id, replyTo: inbox, headers: extra, priority: "high" });
  for await (const m of sub) return m;
  throw new Error(`no reply for ${id}`);
}

async function storedTraceparent(id: string): Promise<string | undefined> {
  const sm = await rig.jsm.direct.getMessage("OPENAI_RESULTS", {
    last_by_subj: `openai.results.${id}`,
  });
  return sm?.header.get("traceparent");
}

describe("with an OTLP endpoint", () => {
  const otlp = otlpReceiver();
  let proxy: Proxy;
  beforeAll(async () => {
    const endpoint = await otlp.start();
    proxy = await rig.startProxy({
      flags: { "tracing.otlp_endpoint": endpoint, "tracing.service_name": "proxy-under-test" },
    });
  });
  afterAll(async () => {
    await proxy.stop(500);
    await otlp.close();
  });

  it("exports queue wait, upstream call and store-and-reply as children of the caller's span", async () => {
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const callerSpan = "00f067aa0ba902b7";
    const caller = `00-${traceId}-${callerSpan}-01`;
    const prompt = "traced request";
    const reply = await requestRaw(prompt, "traced-1", {
      traceparent: caller,
      tracestate: "vendor=abc",
    });
    // The reply and the stored result carry the caller's trace context as it came.
    expect(reply.headers?.get("traceparent")).toBe(caller);
    expect(reply.headers?.get("tracestate")).toBe("vendor=abc");
    expect(await storedTraceparent("traced-1")).toBe(caller);

    await otlp.until((s) => s.filter((x) => x.traceId === traceId).length >= 3);
    const mine = otlp.spans.filter((s) => s.traceId === traceId);
    expect(mine.map((s) => s.name).sort()).toEqual(
      ["chat gpt-4o-mini", "queue wait", "store and reply"].sort(),
    );
    for (const s of mine) expect(s.parentSpanId).toBe(callerSpan);
    const chat = mine.find((s) => s.name === "chat gpt-4o-mini")!;
    expect(attr(chat, "gen_ai.operation.name")).toBe("chat");
    expect(attr(chat, "gen_ai.request.model")).toBe("gpt-4o-mini");
    expect(attr(chat, "gen_ai.usage.input_tokens")).toBeGreaterThan(0);
    expect(attr(chat, "gen_ai.usage.output_tokens")).toBeGreaterThan(0);
    expect(chat.kind).toBe(3); // CLIENT
    const wait = mine.find((s) => s.name === "queue wait")!;
    expect(attr(wait, "messaging.message.id")).toBe("traced-1");
    expect(BigInt(wait.endTimeUnixNano)).toBeGreaterThanOrEqual(BigInt(wait.startTimeUnixNano));
    const settle = mine.find((s) => s.name === "store and reply")!;
    expect(attr(settle, "proxy.outcome")).toBe("ok");
    // Ordered in time: waited, called, then stored and replied.
    // (to the millisecond: some span times are taken from Date.now(), others at sub-ms
    // precision, so two instants inside one millisecond can come out either way round)
    const ms = (t: string) => BigInt(t) / 1_000_000n;
    expect(ms(wait.endTimeUnixNano)).toBeLessThanOrEqual(ms(chat.startTimeUnixNano));
    expect(ms(chat.endTimeUnixNano)).toBeLessThanOrEqual(ms(settle.startTimeUnixNano));
    expect(otlp.resources.some((r) => r["service.name"]?.stringValue === "proxy-under-test")).toBe(
      true,
    );

    // The upstream call carried the upstream span's context: same trace, parent = that span.
    const sent = parseTraceparent(rig.dev.stats().traceByPrompt[prompt]?.traceparent);
    expect(sent).toMatchObject({ traceId, spanId: chat.spanId, flags: 1 });
    expect(rig.dev.stats().traceByPrompt[prompt]?.tracestate).toBe("vendor=abc");
  });

  it("marks a failed upstream call and a dead-lettered request as errors", async () => {
    const traceId = "0af7651916cd43dd8448eb211c80319c";
    const reply = await requestRaw("[[status:400x1]] traced failure", "traced-2", {
      traceparent: `00-${traceId}-b7ad6b7169203331-01`,
    });
    expect(reply.headers?.get("Nats-Service-Error-Code")).toBe("400");
    expect(reply.headers?.get("traceparent")).toBe(`00-${traceId}-b7ad6b7169203331-01`);
    await otlp.until((s) => s.filter((x) => x.traceId === traceId).length >= 3);
    const mine = otlp.spans.filter((s) => s.traceId === traceId);
    const chat = mine.find((s) => s.name.startsWith("chat "))!;
    expect(chat.status?.code).toBe(2); // ERROR
    expect(attr(chat, "error.type")).toBe("400");
    const settle = mine.find((s) => s.name === "store and reply")!;
    expect(attr(settle, "proxy.outcome")).toBe("error");
  });
});

describe("without an OTLP endpoint (propagation only)", () => {
  let proxy: Proxy;
  beforeAll(async () => {
    proxy = await rig.startProxy();
  });
  afterAll(() => proxy.stop(500));

  it("passes the caller's traceparent unchanged to the API, the reply and the result", async () => {
    const caller = "00-11111111111111111111111111111111-2222222222222222-01";
    const reply = await requestRaw("propagated as is", "plain-1", { Traceparent: caller });
    expect(rig.dev.stats().traceByPrompt["propagated as is"]?.traceparent).toBe(caller);
    expect(reply.headers?.get("traceparent")).toBe(caller);
    expect(await storedTraceparent("plain-1")).toBe(caller);
  });

  it("starts a trace in the client library, the shim and the CLI when the caller has none", async () => {
    const viaClient = await requestRaw("started by the client", "plain-2");
    const started = viaClient.headers?.get("traceparent");
    expect(parseTraceparent(started)).toBeDefined();
    expect(rig.dev.stats().traceByPrompt["started by the client"]?.traceparent).toBe(started);

    const h = headers();
    const viaShim = await rig.nc.request(
      "openai_requests",
      new TextEncoder().encode("started by the shim"),
      { timeout: 15_000, headers: h },
    );
    const shimTrace = viaShim.headers?.get("traceparent");
    expect(parseTraceparent(shimTrace)).toBeDefined();
    expect(rig.dev.stats().traceByPrompt["started by the shim"]?.traceparent).toBe(shimTrace);

    // An invalid traceparent is replaced, not passed on.
    await requestRaw("bad trace replaced", "plain-3", { traceparent: "00-zz-yy-01" });
    const replaced = rig.dev.stats().traceByPrompt["bad trace replaced"]?.traceparent;
    expect(parseTraceparent(replaced)).toBeDefined();

    const cli = spawnCli(
      ["request", "started by the cli"],
      serveEnv(rig.server.url, rig.dev.url, rig.streamsDir),
    );
    expect(await cli.exited).toBe(0);
    expect(cli.stdout()).toContain("started by the cli");
    expect(
      parseTraceparent(rig.dev.stats().traceByPrompt["started by the cli"]?.traceparent),
    ).toBeDefined();
  });
});
