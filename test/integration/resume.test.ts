/**
 * Streams that survive a disconnect (issue 14): every delta of a streaming request is
 * stored in OPENAI_STREAMS with Openai-Stream-Seq, readers resume from the start or
 * after delta n and follow live, several at once, and a worker killed mid-stream makes
 * the redelivered attempt open with a restart, so every reader assembles one answer.
 */
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import { createInbox, headers, type Msg } from "@nats-io/transport-node";
import { applyStreams, eventually, serveEnv, spawnCli } from "../helpers/proxy.js";
import { useRig } from "../helpers/rig.js";
import { ResumeError } from "../../src/client/resume.js";
import { chunkText, isStreamRestart } from "../../src/protocol/stream.js";
import type { ResultView } from "../../src/protocol/result.js";

const enc = new TextEncoder();
// A short ack_wait: the request of a killed worker comes back quickly.
const rig = useRig({
  streams: { ackWaitMs: 1500 },
  devReset: (dev) => dev.setStreamChunkDelay(0),
});
const WORDS = "one two three four five six seven eight nine ten eleven twelve";
const answer = (prompt: string) => `(dev-openai test double) You said: ${prompt}`;

interface Read {
  text: string;
  chunks: number;
  restarts: number;
  final: ResultView;
}

/** Drains a stream()/resume() iterator as a reader would: a restart drops the text so far. */
async function assemble(
  it: AsyncGenerator<unknown, ResultView>,
  onChunk?: (n: number) => void,
): Promise<Read> {
  let text = "";
  let chunks = 0;
  let restarts = 0;
  for (;;) {
    const n = await it.next();
    if (n.done) return { text, chunks, restarts, final: n.value };
    if (isStreamRestart(n.value)) {
      restarts++;
      text = "";
      continue;
    }
    text += chunkText(n.value);
    chunks++;
    onChunk?.(chunks);
  }
}

/** Every message stored for `id` in OPENAI_STREAMS, in order. */
async function stored(id: string): Promise<Msg[]> {
  const jsm = await jetstreamManager(rig.nc);
  const info = await jsm.streams.info("OPENAI_STREAMS", {
    subjects_filter: `openai.streams.${id}`,
  });
  const count = info.state.subjects?.[`openai.streams.${id}`] ?? 0;
  const c = await jetstream(rig.nc).consumers.get("OPENAI_STREAMS", {
    filter_subjects: [`openai.streams.${id}`],
  });
  const out: Msg[] = [];
  while (out.length < count) {
    const m = await c.next({ expires: 2000 });
    if (!m) break;
    out.push(m as unknown as Msg);
  }
  return out;
}

function publishStreaming(id: string, prompt: string, replyTo?: string) {
  const h = headers();
  h.set("Content-Type", "application/json");
  if (replyTo) h.set("Reply-To", replyTo);
  const body = { stream: true, messages: [{ role: "user", content: prompt }] };
  return jetstream(rig.nc).publish(`openai.requests.${id}`, enc.encode(JSON.stringify(body)), {
    msgID: id,
    headers: h,
  });
}

describe("deltas stored in OPENAI_STREAMS", () => {
  it("stores every delta with Openai-Stream-Seq 1..n and Proxy-Attempts, the same numbers as the live copies, then done", async () => {
    await rig.proxy();
    const inbox = createInbox();
    const live: Msg[] = [];
    const done = new Promise<void>((resolve) => {
      rig.nc.subscribe(inbox, {
        callback: (_e, m) => {
          live.push(m);
          if (m.headers?.get("Openai-Stream") === "done") resolve();
        },
      });
    });
    await publishStreaming("st-1", WORDS, inbox);
    await done;
    const msgs = await stored("st-1");
    const deltas = msgs.filter((m) => m.headers?.get("Openai-Stream") === "delta");
    expect(deltas.length).toBeGreaterThanOrEqual(12);
    expect(deltas.map((m) => Number(m.headers?.get("Openai-Stream-Seq")))).toEqual(
      deltas.map((_, i) => i + 1),
    );
    expect(deltas.every((m) => m.headers?.get("Proxy-Attempts") === "1")).toBe(true);
    const liveDeltas = live.filter((m) => m.headers?.get("Openai-Stream") === "delta");
    expect(liveDeltas.map((m) => m.headers?.get("Openai-Stream-Seq"))).toEqual(
      deltas.map((m) => m.headers?.get("Openai-Stream-Seq")),
    );
    expect(deltas.map((m) => chunkText(m.json())).join("")).toBe(answer(WORDS));
    const last = msgs.at(-1)!;
    expect(last.headers?.get("Openai-Stream")).toBe("done");
    expect(msgs.length).toBe(deltas.length + 1);
    const completion = last.json<{ choices: { message: { content: string } }[] }>();
    expect(completion.choices[0]!.message.content).toBe(answer(WORDS));
    // The result is stored as before.
    expect((await rig.client.result("st-1"))?.completion?.choices?.[0]?.message?.content).toBe(
      answer(WORDS),
    );
  });
});

describe("resume", () => {
  it("from the start and after n, while it runs and after it ended, two readers at once, equal the live text", async () => {
    rig.dev.setStreamChunkDelay(40);
    await rig.proxy();
    let liveChunks = 0;
    let started!: () => void;
    const threeSeen = new Promise<void>((r) => (started = r));
    const liveRead = assemble(
      rig.client.stream(
        { messages: [{ role: "user", content: WORDS }] },
        { id: "rs-1", timeoutMs: 20_000 },
      ),
      (n) => {
        liveChunks = n;
        if (n === 3) started();
      },
    );
    await threeSeen;
    // Two readers join while it runs: one from the start, one after delta 2.
    const [live, fromStart, after2] = await Promise.all([
      liveRead,
      assemble(rig.client.resume("rs-1", { timeoutMs: 20_000 })),
      assemble(
        rig.client.stream({ messages: [] }, { resume: "rs-1", after: 2, timeoutMs: 20_000 }),
      ),
    ]);
    expect(liveChunks).toBeGreaterThanOrEqual(12);
    expect(live.text).toBe(answer(WORDS));
    expect(fromStart.text).toBe(live.text);
    expect(fromStart.restarts).toBe(0);
    expect(fromStart.final.ok).toBe(true);
    expect(fromStart.final.completion?.choices?.[0]?.message?.content).toBe(live.text);
    const msgs = await stored("rs-1");
    const first2 = msgs
      .filter((m) => m.headers?.get("Openai-Stream") === "delta")
      .slice(0, 2)
      .map((m) => chunkText(m.json()))
      .join("");
    expect(first2 + after2.text).toBe(live.text);
    expect(after2.chunks).toBe(live.chunks - 2);
    // After the end: the backlog, then done, at once.
    const late = await assemble(rig.client.resume("rs-1", { after: 5 }));
    expect(late.chunks).toBe(live.chunks - 5);
    const beyond = await assemble(rig.client.resume("rs-1", { after: 1000 }));
    expect(beyond.chunks).toBe(0);
    expect(beyond.final.ok).toBe(true);
  });

  it("the CLI prints the answer from the start or after n, and an unknown id fails at once with 404", async () => {
    await rig.proxy();
    await assemble(
      rig.client.stream(
        { messages: [{ role: "user", content: "alpha beta gamma delta" }] },
        {
          id: "rs-cli",
          timeoutMs: 10_000,
        },
      ),
    );
    const env = { NATS_URL: rig.server.url };
    const all = spawnCli(["request", "--resume", "rs-cli"], env);
    const after = spawnCli(["request", "--resume", "rs-cli", "--after", "2"], env);
    const t0 = Date.now();
    const unknown = await assemble(rig.client.resume("no-such-stream")).catch((e: unknown) => e);
    expect(unknown).toBeInstanceOf(ResumeError);
    expect((unknown as ResumeError).code).toBe(404);
    expect(Date.now() - t0).toBeLessThan(2000);
    const cliUnknown = spawnCli(["request", "--resume", "no-such-stream"], env);
    expect(await all.exited).toBe(0);
    expect(all.stdout()).toBe(`${answer("alpha beta gamma delta")}\n`);
    expect(await after.exited).toBe(0);
    const msgs = await stored("rs-cli");
    const rest = msgs
      .filter((m) => m.headers?.get("Openai-Stream") === "delta")
      .slice(2)
      .map((m) => chunkText(m.json()))
      .join("");
    expect(after.stdout()).toBe(`${rest}\n`);
    expect(await cliUnknown.exited).toBe(1);
    expect(cliUnknown.stderr()).toMatch(
      /no streamed answer, no result and no queued request for "no-such-stream"/,
    );
  });
});

describe("resuming a request that has not started", () => {
  it("waits while it is queued: a streaming one is followed from its first delta, one that does not stream returns its result", async () => {
    // No proxy yet: both requests wait in the queue when the readers come.
    await applyStreams(rig.nc, rig.streamsDir);
    await publishStreaming("rs-queued", WORDS);
    await rig.client.submit("not streamed", { id: "rs-queued-plain" });
    let settled = 0;
    const streamed = assemble(rig.client.resume("rs-queued", { timeoutMs: 20_000 }));
    const plain = assemble(rig.client.resume("rs-queued-plain", { timeoutMs: 20_000 }));
    for (const p of [streamed, plain])
      p.then(
        () => settled++,
        () => settled++,
      );
    // Each reader, having found neither a stream nor a result, follows the stream with its
    // own consumer: both are waiting (neither settled, no 404) until a worker starts.
    const jsm = await jetstreamManager(rig.nc);
    const following = async () => {
      const filters: string[] = [];
      for await (const c of jsm.consumers.list("OPENAI_STREAMS"))
        filters.push(c.config.filter_subject ?? "", ...(c.config.filter_subjects ?? []));
      return ["rs-queued", "rs-queued-plain"].every((id) =>
        filters.includes(`openai.streams.${id}`),
      );
    };
    await eventually(following, 10_000, "both readers following");
    expect(settled).toBe(0);
    await rig.proxy();
    const a = await streamed;
    expect(a.text).toBe(answer(WORDS));
    expect(a.chunks).toBeGreaterThan(1);
    expect(a.final.ok).toBe(true);
    const b = await plain;
    expect(b.chunks).toBe(0);
    expect(b.final.ok).toBe(true);
    expect(b.final.body).toBe(answer("not streamed"));
  });
});

describe("a stored delta that gets no PubAck", () => {
  it("fails the attempt (transient): the redelivery opens with a restart and the stream has no hole", async () => {
    let failed = 0;
    await rig.proxy(
      {},
      {
        // The third delta of the first attempt is lost.
        wrapStreamStore: (store) => (subject, r, key) => {
          if (key.endsWith(".1.3") && failed++ === 0)
            return Promise.reject(new Error("injected: no PubAck"));
          return store(subject, r, key);
        },
      },
    );
    const live = await assemble(
      rig.client.stream(
        { messages: [{ role: "user", content: WORDS }] },
        { id: "lost-1", timeoutMs: 20_000 },
      ),
    );
    expect(failed).toBe(1);
    expect(live.text).toBe(answer(WORDS));
    expect(live.restarts).toBe(1);
    expect(live.final.attempts).toBe(2);
    const msgs = await stored("lost-1");
    const kinds = msgs.map(
      (m) =>
        `${m.headers?.get("Proxy-Attempts")}:${m.headers?.get("Openai-Stream")}${m.headers?.get("Openai-Stream-Seq") ?? ""}`,
    );
    // Attempt 1 stored 1, 2, then (3 lost) the rest; attempt 2 restarts and is whole.
    expect(kinds).not.toContain("1:delta3");
    expect(kinds).not.toContain("1:done");
    const restart = kinds.indexOf("2:restart");
    expect(restart).toBeGreaterThan(0);
    const second = kinds.slice(restart + 1);
    expect(second.at(-1)).toBe("2:done");
    expect(second.slice(0, -1)).toEqual(second.slice(0, -1).map((_, i) => `2:delta${i + 1}`));
    const resumed = await assemble(rig.client.resume("lost-1"));
    expect(resumed.text).toBe(answer(WORDS));
  });
});

describe("a worker killed mid-stream", () => {
  it("the redelivered attempt opens with a restart; live, resumed and late readers each assemble the answer exactly once", async () => {
    rig.dev.setStreamChunkDelay(150);
    const serve = spawnCli(["serve"], serveEnv(rig.server.url, rig.dev.url, rig.streamsDir));
    try {
      await serve.waitFor(/nats-openai-proxy serving/, 30_000);
      let killAt!: () => void;
      const fourSeen = new Promise<void>((r) => (killAt = r));
      const live = assemble(
        rig.client.stream(
          { messages: [{ role: "user", content: WORDS }] },
          { id: "kill-1", timeoutMs: 30_000 },
        ),
        (n) => n === 4 && killAt(),
      );
      await fourSeen;
      const resumed = assemble(rig.client.resume("kill-1", { timeoutMs: 30_000 }));
      await eventually(
        async () => (await stored("kill-1")).length >= 4,
        5000,
        "deltas of the first attempt stored",
      );
      expect(await serve.kill("SIGKILL")).not.toBe(0);
      const callsBefore = rig.dev.stats().calls;
      await rig.proxy(); // takes the request over once ack_wait expires
      const [a, b] = await Promise.all([live, resumed]);
      const late = await assemble(rig.client.resume("kill-1"));
      expect(rig.dev.stats().calls).toBe(callsBefore + 1);
      for (const r of [a, b, late]) {
        expect(r.text).toBe(answer(WORDS));
        expect(r.final.ok).toBe(true);
        expect(r.final.attempts).toBe(2);
      }
      expect(a.restarts).toBe(1);
      expect(b.restarts).toBe(1);
      expect(late.restarts).toBe(0); // the failed attempt is behind the restart: skipped
      const msgs = await stored("kill-1");
      const restart = msgs.findIndex((m) => m.headers?.get("Openai-Stream") === "restart");
      expect(restart).toBeGreaterThanOrEqual(4);
      expect(msgs[restart]!.headers?.get("Proxy-Attempts")).toBe("2");
      const second = msgs
        .slice(restart + 1)
        .filter((m) => m.headers?.get("Openai-Stream") === "delta");
      expect(second.map((m) => Number(m.headers?.get("Openai-Stream-Seq")))).toEqual(
        second.map((_, i) => i + 1),
      );
      expect(second.every((m) => m.headers?.get("Proxy-Attempts") === "2")).toBe(true);
    } finally {
      await serve.kill("SIGKILL");
    }
  }, 60_000);
});
