/**
 * The client side: submit / result (library and CLI), duplicate ids, batch files in
 * the OpenAI Batch API formats, streaming replies, and a request that outlives its
 * timeout because it is durable.
 */
import { jetstreamManager, jetstream } from "@nats-io/jetstream";
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { createInbox, headers, type Msg } from "@nats-io/transport-node";
import { spawnCli } from "../helpers/proxy.js";
import { sc, useRig } from "../helpers/rig.js";
import { RequestTimeoutError } from "../../src/client/client.js";

const rig = useRig({
  streams: { ackWaitMs: 5000 },
  devReset: (dev) => {
    dev.setLatency(0);
    dev.setStreamChunkDelay(0);
  },
});
const tmp = mkdtempSync(join(tmpdir(), "proxy-client-"));

afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const cliEnv = () => ({ NATS_URL: rig.server.url });

describe("submit and result", () => {
  it("prints the id alone on stdout, reports a resubmitted id as a duplicate, and reads the result", async () => {
    await rig.proxy();
    const first = spawnCli(["submit", "cli fire and forget", "--id", "cli-1"], cliEnv());
    expect(await first.exited).toBe(0);
    expect(first.stdout()).toBe("cli-1\n");
    const again = spawnCli(["submit", "cli fire and forget", "--id", "cli-1"], cliEnv());
    expect(await again.exited).toBe(0);
    expect(again.stdout()).toBe("cli-1\n");
    expect(again.stderr()).toMatch(/duplicate/);
    const res = spawnCli(["result", "cli-1", "--wait", "--timeout", "10000"], cliEnv());
    expect(await res.exited).toBe(0);
    expect(res.stdout()).toBe("(dev-openai test double) You said: cli fire and forget\n");
    expect(rig.dev.stats().calls).toBe(1); // the duplicate was not queued twice
  });

  it("queues on the lane --priority and --tenant name, and refuses a bad priority or an unknown tenant", async () => {
    await rig.proxy(); // creates the lanes; stopped below so the request stays queued
    await rig.stopProxies(0);
    const low = spawnCli(["submit", "lane me", "--id", "cli-low", "--priority", "low"], cliEnv());
    expect(await low.exited).toBe(0);
    const jsm = await jetstreamManager(rig.nc);
    const queued = await jsm.streams.getMessage("OPENAI_REQUESTS", {
      last_by_subj: "openai.requests.default.low.cli-low",
    });
    expect(queued?.subject).toBe("openai.requests.default.low.cli-low");
    const bad = spawnCli(["submit", "x", "--priority", "urgent"], cliEnv());
    expect(await bad.exited).toBe(2);
    expect(bad.stderr()).toMatch(/--priority: priority "urgent" must be one of high, normal, low/);
    const unknown = spawnCli(["request", "x", "--tenant", "nobody"], cliEnv());
    expect(await unknown.exited).toBe(1);
    expect(unknown.stderr()).toMatch(/unknown tenant "nobody": the proxy serves default/);
    await jsm.streams.purge("OPENAI_REQUESTS");
  });

  it("exits 1 with the error message for an error result", async () => {
    await rig.proxy();
    await rig.client.submit(
      { model: "no-such-model", messages: [{ role: "user", content: "x" }] },
      { id: "cli-err" },
    );
    await rig.client.result("cli-err", { wait: true, timeoutMs: 10_000 });
    const res = spawnCli(["result", "cli-err"], cliEnv());
    expect(await res.exited).toBe(1);
    expect(res.stderr()).toMatch(/error 404: model "no-such-model" not found/);
  });

  it("times out a request cleanly when no worker runs, and the request completes once one starts", async () => {
    const err = await rig.client
      .request("durable while nobody listens", { timeoutMs: 300 })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RequestTimeoutError);
    const id = (err as RequestTimeoutError).id!;
    expect(rig.dev.stats().calls).toBe(0);
    await rig.proxy();
    const r = await rig.client.result(id, { wait: true, timeoutMs: 10_000 });
    expect(r).toMatchObject({
      ok: true,
      body: "(dev-openai test double) You said: durable while nobody listens",
    });
  });
});

describe("batch files", () => {
  it("turns 1,000 lines with bad lines and upstream failures into a complete output file in input order", async () => {
    await rig.proxy({ "worker.concurrency": 32 });
    const input = join(tmp, "requests.jsonl");
    const out = join(tmp, "results.jsonl");
    const expected: { custom_id: string | null; kind: "ok" | "failed" | "invalid" }[] = [];
    const lines: string[] = [];
    for (let i = 1; i <= 1000; i++) {
      if (i === 500) {
        lines.push("this is not json");
        expected.push({ custom_id: null, kind: "invalid" });
      } else if (i % 250 === 0) {
        lines.push(
          `{"custom_id": "bad-${i}", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": "oops"}}`,
        );
        expected.push({ custom_id: `bad-${i}`, kind: "invalid" });
      } else if (i % 100 === 7) {
        lines.push(
          JSON.stringify({
            custom_id: `r-${i}`,
            method: "POST",
            url: "/v1/chat/completions",
            body: { messages: [{ role: "user", content: `fails ${i} [[status:422]]` }] },
          }),
        );
        expected.push({ custom_id: `r-${i}`, kind: "failed" });
      } else {
        lines.push(
          JSON.stringify({
            custom_id: `r-${i}`,
            method: "POST",
            url: "/v1/chat/completions",
            body: { model: "gpt-4o-mini", messages: [{ role: "user", content: `line ${i}` }] },
          }),
        );
        expected.push({ custom_id: `r-${i}`, kind: "ok" });
      }
    }
    writeFileSync(input, `${lines.join("\n")}\n`);
    const run = spawnCli(
      ["submit", "--file", input, "--wait", "--out", out, "--id", "batch-t1"],
      cliEnv(),
    );
    expect(await run.exited).toBe(0);
    expect(run.stdout()).toBe("batch-t1\n");
    expect(run.stderr()).toMatch(/line 250: .*messages/);
    expect(run.stderr()).toMatch(/line 500: invalid JSON/);
    expect(run.stderr()).toMatch(/986 completed, 10 failed, 4 invalid, 0 missing/);
    const output = readFileSync(out, "utf8")
      .trimEnd()
      .split("\n")
      .map(
        (l) =>
          JSON.parse(l) as {
            custom_id: string | null;
            response: {
              status_code: number;
              body: { choices?: { message: { content: string } }[] };
            } | null;
            error: { code: string } | null;
          },
      );
    expect(output).toHaveLength(1000);
    output.forEach((o, i) => {
      const want = expected[i]!;
      expect(o.custom_id).toBe(want.custom_id);
      if (want.kind === "ok") {
        expect(o.response?.status_code).toBe(200);
        expect(o.response?.body.choices?.[0]?.message.content).toBe(
          `(dev-openai test double) You said: line ${i + 1}`,
        );
      } else if (want.kind === "failed") {
        expect(o.response?.status_code).toBe(422);
      } else {
        expect(o.response).toBeNull();
        expect(o.error?.code).toBe("invalid_request");
      }
    });
    // The same output can be written again later from the stored manifest and results.
    const again = spawnCli(
      ["result", "--batch", "batch-t1", "--out", join(tmp, "again.jsonl")],
      cliEnv(),
    );
    expect(await again.exited).toBe(0);
    expect(readFileSync(join(tmp, "again.jsonl"), "utf8")).toBe(readFileSync(out, "utf8"));
  });

  it("refuses the whole file with --strict and submits nothing", async () => {
    const input = join(tmp, "strict.jsonl");
    writeFileSync(
      input,
      [
        '{"custom_id":"a","body":{"messages":[{"role":"user","content":"x"}]}}',
        '{"custom_id":"b","url":"/v1/embeddings","body":{}}',
      ].join("\n"),
    );
    const jsm = await jetstreamManager(rig.nc);
    await jsm.streams.purge("OPENAI_REQUESTS");
    const run = spawnCli(["submit", "--file", input, "--strict"], cliEnv());
    expect(await run.exited).toBe(1);
    expect(run.stderr()).toMatch(/line 2: "url" "\/v1\/embeddings" is not supported/);
    expect((await jsm.streams.info("OPENAI_REQUESTS")).state.messages).toBe(0);
  });
});

describe("streaming", () => {
  it("publishes content deltas to Reply-To, then the final reply; only the final one is stored", async () => {
    rig.dev.setStreamChunkDelay(5);
    await rig.proxy();
    const inbox = createInbox();
    const got: Msg[] = [];
    const done = new Promise<void>((resolve) => {
      rig.nc.subscribe(inbox, {
        callback: (_e, m) => {
          got.push(m);
          if (m.headers?.get("Openai-Stream") === "done") resolve();
        },
      });
    });
    const h = headers();
    h.set("Content-Type", "application/json");
    h.set("Reply-To", inbox);
    const body = { stream: true, messages: [{ role: "user", content: "one two three four five" }] };
    await jetstream(rig.nc).publish("openai.requests.stream-1", sc.encode(JSON.stringify(body)), {
      msgID: "stream-1",
      headers: h,
    });
    await done;
    const deltas = got.filter((m) => m.headers?.get("Openai-Stream") === "delta");
    expect(deltas.length).toBeGreaterThanOrEqual(5);
    const text = deltas
      .map(
        (m) =>
          m.json<{ choices: { delta: { content?: string } }[] }>().choices[0]?.delta.content ?? "",
      )
      .join("");
    expect(text).toBe("(dev-openai test double) You said: one two three four five");
    const final = got.at(-1)!;
    expect(final.headers?.get("Openai-Stream")).toBe("done");
    const completion = final.json<{
      object: string;
      choices: { message: { content: string } }[];
      usage: unknown;
    }>();
    expect(completion.object).toBe("chat.completion");
    expect(completion.choices[0]!.message.content).toBe(text);
    expect(completion.usage).not.toBeNull();
    const stored = await rig.client.result("stream-1");
    expect(stored?.completion?.choices?.[0]?.message?.content).toBe(text);
    const jsm = await jetstreamManager(rig.nc);
    const info = await jsm.streams.info("OPENAI_RESULTS", {
      subjects_filter: "openai.results.stream-1",
    });
    expect(info.state.subjects?.["openai.results.stream-1"]).toBe(1);
  });

  it("yields the chunks through the client library and returns the final reply", async () => {
    await rig.proxy();
    const it = rig.client.stream(
      { messages: [{ role: "user", content: "alpha beta gamma" }] },
      { timeoutMs: 10_000 },
    );
    const chunks: unknown[] = [];
    let final;
    for (;;) {
      const n = await it.next();
      if (n.done) {
        final = n.value;
        break;
      }
      chunks.push(n.value);
    }
    expect(chunks.length).toBeGreaterThanOrEqual(3);
    expect(final.ok).toBe(true);
    expect(final.completion?.choices?.[0]?.message?.content).toBe(
      "(dev-openai test double) You said: alpha beta gamma",
    );
  });
});
