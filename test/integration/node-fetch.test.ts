/**
 * The node:http transport under the openai SDK behaves like the built-in fetch:
 * answers, streams, API errors, dropped connections, timeouts and aborts.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import OpenAI from "openai";
import { startDevOpenAI, type DevOpenAI } from "../../src/dev-openai/server.js";
import { createNodeFetch } from "../../src/llm/node-fetch.js";

let dev: DevOpenAI;
let client: OpenAI;

beforeAll(async () => {
  dev = await startDevOpenAI();
  client = new OpenAI({
    apiKey: "sk-test-node-fetch-000000000000",
    baseURL: dev.url,
    maxRetries: 0,
    timeout: 2000,
    fetch: createNodeFetch(),
  });
});

afterAll(async () => {
  await dev.close();
});

const ask = (content: string, extra: Partial<OpenAI.ChatCompletionCreateParamsNonStreaming> = {}) =>
  client.chat.completions.create({
    model: "gpt-4o-mini",
    messages: [{ role: "user", content }],
    ...extra,
  });

describe("node:http transport", () => {
  it("returns the completion and the response headers", async () => {
    const { data, response } = await ask("hello node").withResponse();
    expect(data.choices[0]?.message.content).toBe("(dev-openai test double) You said: hello node");
    expect(response.headers.get("x-request-id")).toMatch(/^req_dev_/);
  });

  it("streams server-sent events chunk by chunk", async () => {
    const stream = await client.chat.completions.create({
      model: "gpt-4o-mini",
      stream: true,
      messages: [{ role: "user", content: "one two three" }],
    });
    const parts: string[] = [];
    for await (const c of stream) parts.push(c.choices[0]?.delta?.content ?? "");
    expect(parts.filter(Boolean).length).toBeGreaterThanOrEqual(3);
    expect(parts.join("")).toBe("(dev-openai test double) You said: one two three");
  });

  it("turns API errors into the SDK's typed errors with their headers", async () => {
    const e404 = await ask("x", { model: "no-such" }).catch((e: unknown) => e);
    expect(e404).toBeInstanceOf(OpenAI.NotFoundError);
    const e429 = await ask("limited [[status:429,retry:3]]").catch((e: unknown) => e);
    expect(e429).toBeInstanceOf(OpenAI.RateLimitError);
    expect((e429 as InstanceType<typeof OpenAI.RateLimitError>).headers.get("retry-after")).toBe(
      "3",
    );
  });

  it("reports a dropped connection, a timeout and an abort like fetch does", async () => {
    expect(await ask("gone [[drop]]").catch((e: unknown) => e)).toBeInstanceOf(
      OpenAI.APIConnectionError,
    );
    const slow = await ask("slow [[latency:5000]]").catch((e: unknown) => e);
    expect(slow).toBeInstanceOf(OpenAI.APIConnectionTimeoutError);
    const ctl = new AbortController();
    const p = client.chat.completions.create(
      { model: "gpt-4o-mini", messages: [{ role: "user", content: "abort [[latency:5000]]" }] },
      { signal: ctl.signal },
    );
    ctl.abort();
    expect(await p.catch((e: unknown) => e)).toBeInstanceOf(OpenAI.APIUserAbortError);
  });
});
