// Tests for the dev-openai LOCAL TEST DOUBLE (not OpenAI), driven through the real openai SDK.
import OpenAI from "openai";
import type { APIError } from "openai";
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { startDevOpenAI } from "../src/dev-openai/server.js";
import type { DevOpenAI } from "../src/dev-openai/server.js";

const PREFIX = "(dev-openai test double) You said: ";

/** Resolves with the error a promise rejects with, failing the test if it resolves. */
async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error("expected the call to fail");
}

describe("dev-openai test double", () => {
  let srv: DevOpenAI;
  let client: OpenAI;

  const ask = (content: string, model = "gpt-4o-mini") =>
    client.chat.completions.create({ model, messages: [{ role: "user", content }] });

  beforeAll(async () => {
    srv = await startDevOpenAI();
    client = new OpenAI({ apiKey: "test-key", baseURL: srv.url, maxRetries: 0 });
  });

  afterAll(async () => {
    await srv.close();
  });

  beforeEach(() => {
    srv.reset();
    srv.setLatency(0);
    srv.setApiKey(undefined);
    srv.setRpm(undefined);
  });

  it("answers deterministically with usage and OpenAI-style headers", async () => {
    const { data, response } = await client.chat.completions
      .create({
        model: "gpt-4o-mini",
        messages: [
          { role: "system", content: "be brief" },
          { role: "user", content: "hello there world" },
        ],
      })
      .withResponse();

    expect(srv.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/v1$/);
    expect(data.object).toBe("chat.completion");
    expect(data.id).toMatch(/^chatcmpl-dev-\d+$/);
    expect(data.model).toBe("gpt-4o-mini");
    expect(data.choices).toHaveLength(1);
    expect(data.choices[0]?.message.content).toBe(`${PREFIX}hello there world`);
    expect(data.choices[0]?.finish_reason).toBe("stop");
    // Words: "be brief" + "hello there world" = 5; answer = 5 prefix words + 3 echoed.
    expect(data.usage).toEqual({ prompt_tokens: 5, completion_tokens: 8, total_tokens: 13 });
    expect(response.headers.get("x-request-id")).toMatch(/^req_dev_\d+$/);
    expect(response.headers.get("openai-processing-ms")).toMatch(/^\d+$/);

    const s = srv.stats();
    expect(s).toMatchObject({ calls: 1, ok: 1, failed: 0, maxInFlight: 1 });
    expect(s.byModel).toEqual({ "gpt-4o-mini": 1 });
    expect(s.byPrompt).toEqual({ "hello there world": 1 });
    expect(s.callTimes).toHaveLength(1);
  });

  it("returns n identical choices and joins text parts", async () => {
    const res = await client.chat.completions.create({
      model: "gpt-4o",
      n: 3,
      messages: [
        {
          role: "user",
          content: [
            { type: "text", text: "part one" },
            { type: "text", text: "part two" },
          ],
        },
      ],
    });
    expect(res.choices.map((c) => c.index)).toEqual([0, 1, 2]);
    for (const c of res.choices) expect(c.message.content).toBe(`${PREFIX}part one part two`);
  });

  it("streams one chunk per word, then finish_reason and usage", async () => {
    const stream = await client.chat.completions.create({
      model: "gpt-4o",
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: "user", content: "stream me please" }],
    });
    const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);

    // role chunk + 8 word chunks + finish chunk + usage chunk
    expect(chunks).toHaveLength(11);
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
    expect(chunks.every((c) => c.object === "chat.completion.chunk")).toBe(true);
    expect(chunks[0]?.choices[0]?.delta.role).toBe("assistant");
    const text = chunks.map((c) => c.choices[0]?.delta.content ?? "").join("");
    expect(text).toBe(`${PREFIX}stream me please`);
    expect(chunks[9]?.choices[0]?.finish_reason).toBe("stop");
    expect(chunks[10]?.choices).toEqual([]);
    expect(chunks[10]?.usage?.completion_tokens).toBe(8);
  });

  it("answers 404 model_not_found for an unknown model", async () => {
    const err = await rejection(ask("hi", "gpt-nonexistent"));
    expect(err).toBeInstanceOf(OpenAI.NotFoundError);
    const e = err as InstanceType<typeof OpenAI.NotFoundError>;
    expect(e.status).toBe(404);
    expect(e.code).toBe("model_not_found");
    expect(e.message).toContain("The model `gpt-nonexistent` does not exist");
    expect(e.headers.get("x-request-id")).toMatch(/^req_dev_\d+$/);
  });

  it("enforces the API key without echoing the key that was sent", async () => {
    srv.setApiKey("test-key");
    await expect(ask("authorised")).resolves.toBeDefined();

    const wrong = new OpenAI({ apiKey: "sk-wrong-secret-123", baseURL: srv.url, maxRetries: 0 });
    const err = await rejection(
      wrong.chat.completions.create({
        model: "gpt-4o",
        messages: [{ role: "user", content: "x" }],
      }),
    );
    expect(err).toBeInstanceOf(OpenAI.AuthenticationError);
    const e = err as InstanceType<typeof OpenAI.AuthenticationError>;
    expect(e.status).toBe(401);
    expect(e.code).toBe("invalid_api_key");
    expect(e.message).not.toContain("sk-wrong-secret-123");
    expect(JSON.stringify(e.error)).not.toContain("wrong-secret");
  });

  it("consumes queued faults in order, then succeeds", async () => {
    srv.injectFaults({ status: 500 }, { status: 503, message: "overloaded" });
    const first = await rejection(ask("queued"));
    expect(first).toBeInstanceOf(OpenAI.InternalServerError);
    expect((first as APIError).status).toBe(500);
    const second = await rejection(ask("queued"));
    expect((second as APIError).status).toBe(503);
    expect((second as APIError).message).toContain("overloaded");
    await expect(ask("queued")).resolves.toBeDefined();
    expect(srv.stats()).toMatchObject({ calls: 3, ok: 1, failed: 2 });
  });

  it("[[status:500x2]] fails the first two calls with that prompt, then succeeds", async () => {
    const prompt = "flaky [[status:500x2]]";
    expect(((await rejection(ask(prompt))) as APIError).status).toBe(500);
    expect(((await rejection(ask(prompt))) as APIError).status).toBe(500);
    const ok = await ask(prompt);
    expect(ok.choices[0]?.message.content).toBe(PREFIX + prompt);
    // Other prompts are unaffected by the marker's counter.
    await expect(ask("unrelated")).resolves.toBeDefined();
    expect(srv.stats().byPrompt[prompt]).toBe(3);
  });

  it("[[stall:2x1]] streams two events, then keeps the connection open and sends nothing", async () => {
    const prompt = "stall here [[stall:2x1]]";
    const stream = await client.chat.completions.create({
      model: "gpt-4o",
      stream: true,
      messages: [{ role: "user", content: prompt }],
    });
    const it = stream[Symbol.asyncIterator]();
    const chunk = async (): Promise<OpenAI.Chat.Completions.ChatCompletionChunk | undefined> => {
      const r = await it.next();
      return r.done ? undefined : r.value;
    };
    expect((await chunk())?.choices[0]?.delta.role).toBe("assistant");
    expect((await chunk())?.choices[0]?.delta.content).toBe("(dev-openai ");
    // Absence of data can only be shown by waiting a while.
    const third = it.next();
    const quiet = new Promise((r) => setTimeout(() => r("silence"), 300));
    expect(await Promise.race([third.then(() => "a chunk"), quiet])).toBe("silence");
    expect(srv.stats()).toMatchObject({ calls: 1, ok: 0, inFlight: 1 });
    stream.controller.abort();
    await third.catch(() => undefined);
    await vi.waitFor(() => expect(srv.stats().inFlight).toBe(0));
    expect(srv.stats().failed).toBe(1);
    // x1: the second call with this prompt streams to the end.
    const again = await client.chat.completions.create({
      model: "gpt-4o",
      stream: true,
      messages: [{ role: "user", content: prompt }],
    });
    let text = "";
    for await (const c of again) text += c.choices[0]?.delta.content ?? "";
    expect(text).toBe(PREFIX + prompt);
    expect(srv.stats()).toMatchObject({ calls: 2, ok: 1 });
  });

  it("[[stall:0]] on a plain call sends the headers and then nothing", async () => {
    const ac = new AbortController();
    const r = await fetch(`${srv.url}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "gpt-4o",
        messages: [{ role: "user", content: "headers only [[stall:0]]" }],
      }),
      signal: ac.signal,
    });
    expect(r.status).toBe(200);
    const read = r.body!.getReader().read();
    const quiet = new Promise((res) => setTimeout(() => res("silence"), 300));
    expect(await Promise.race([read.then(() => "data"), quiet])).toBe("silence");
    ac.abort();
    await read.catch(() => undefined);
    await vi.waitFor(() => expect(srv.stats().inFlight).toBe(0));
    expect(srv.stats()).toMatchObject({ calls: 1, ok: 0, failed: 1 });
  });

  it("[[size:N]] answers with exactly N characters of content", async () => {
    const big = await ask("make it big [[size:5000]]");
    const content = big.choices[0]?.message.content ?? "";
    expect(content).toHaveLength(5000);
    expect(content.startsWith(`${PREFIX}make it big`)).toBe(true);
    expect(big.usage?.completion_tokens).toBeGreaterThan(700);
    const small = await ask("cut [[size:10]]");
    expect(small.choices[0]?.message.content).toBe(PREFIX.slice(0, 10));
  });

  it("exposes Retry-After on injected 429s (queue and marker)", async () => {
    srv.injectFaults({ status: 429, retryAfter: 7 });
    const err = await rejection(ask("limited"));
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    expect((err as APIError).headers?.get("retry-after")).toBe("7");

    const marked = await rejection(ask("limited [[status:429x1,retry:2]]"));
    expect(marked).toBeInstanceOf(OpenAI.RateLimitError);
    expect((marked as APIError).headers?.get("retry-after")).toBe("2");
  });

  it("applies the rpm limit over accepted requests", async () => {
    srv.setRpm(5);
    let last: Response | undefined;
    for (let i = 0; i < 5; i++) last = (await ask(`rpm ${i}`).withResponse()).response;
    expect(last?.headers.get("x-ratelimit-limit-requests")).toBe("5");
    expect(last?.headers.get("x-ratelimit-remaining-requests")).toBe("0");
    expect(last?.headers.get("x-ratelimit-reset-requests")).toMatch(/^(\d+(\.\d+)?s|1m0s)$/);

    const err = await rejection(ask("rpm 6"));
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    const e = err as InstanceType<typeof OpenAI.RateLimitError>;
    expect(e.code).toBe("rate_limit_exceeded");
    const retryAfter = Number(e.headers.get("retry-after"));
    expect(Number.isInteger(retryAfter)).toBe(true);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(srv.stats()).toMatchObject({ calls: 6, ok: 5, failed: 1 });
  });

  it("counts simultaneous calls, including the latency wait", async () => {
    srv.setLatency(100);
    await Promise.all(Array.from({ length: 10 }, (_, i) => ask(`parallel ${i}`)));
    expect(srv.stats().maxInFlight).toBe(10);
    await vi.waitFor(() => expect(srv.stats().inFlight).toBe(0));
  });

  it("[[drop]] destroys the socket, surfacing APIConnectionError", async () => {
    const err = await rejection(ask("bye [[drop]]"));
    expect(err).toBeInstanceOf(OpenAI.APIConnectionError);
    await vi.waitFor(() => expect(srv.stats()).toMatchObject({ failed: 1, inFlight: 0 }));
  });

  it("validates bodies and serves models and control endpoints over HTTP", async () => {
    const post = (path: string, body: string) =>
      fetch(`${srv.url.replace(/\/v1$/, "")}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
      });

    const bad = await post("/v1/chat/completions", "{not json");
    expect(bad.status).toBe(400);
    expect(bad.headers.get("x-request-id")).toMatch(/^req_dev_\d+$/);
    expect(await bad.json()).toMatchObject({ error: { type: "invalid_request_error" } });

    const empty = await post("/v1/chat/completions", '{"model":"gpt-4o","messages":[]}');
    expect(empty.status).toBe(400);
    expect(await empty.json()).toMatchObject({ error: { param: "messages" } });

    const noModel = await post(
      "/v1/chat/completions",
      '{"messages":[{"role":"user","content":"x"}]}',
    );
    expect(noModel.status).toBe(400);
    await noModel.body?.cancel();

    const list = await client.models.list();
    expect(list.data.map((m) => m.id)).toContain("gpt-4o-mini");

    const faults = await post("/_control/faults", JSON.stringify([{ status: 502 }]));
    expect(await faults.json()).toEqual({ queued: 1 });
    expect(((await rejection(ask("via control"))) as APIError).status).toBe(502);

    const config = await post("/_control/config", JSON.stringify({ apiKey: "other" }));
    expect(config.status).toBe(200);
    await config.body?.cancel();
    expect(await rejection(ask("needs key"))).toBeInstanceOf(OpenAI.AuthenticationError);
    await (await post("/_control/config", JSON.stringify({ apiKey: null }))).body?.cancel();
    await expect(ask("open again")).resolves.toBeDefined();

    const stats = (await (
      await fetch(`${srv.url.replace(/\/v1$/, "")}/_control/stats`)
    ).json()) as { calls: number };
    expect(stats.calls).toBe(6);
    await (await post("/_control/reset", "")).body?.cancel();
    expect(srv.stats().calls).toBe(0);
  });
});

describe("dev-openai close()", () => {
  it("resolves while a request is hanging, and the client sees a connection error", async () => {
    const srv = await startDevOpenAI();
    try {
      const client = new OpenAI({ apiKey: "test-key", baseURL: srv.url, maxRetries: 0 });
      srv.injectFaults({ kind: "hang" });
      const pending = rejection(
        client.chat.completions.create({
          model: "gpt-4o",
          messages: [{ role: "user", content: "never answered" }],
        }),
      );
      await vi.waitFor(() => expect(srv.stats().inFlight).toBe(1));
      await srv.close();
      expect(await pending).toBeInstanceOf(OpenAI.APIConnectionError);
      expect(srv.stats().inFlight).toBe(0);
    } finally {
      await srv.close();
    }
  });
});
