import { headers as natsHeaders, type MsgHdrsImpl } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import {
  assistantText,
  encodeError,
  encodeSuccess,
  encodedSize,
  formatUsage,
  parseUsage,
  readResult,
  type CompletionLike,
} from "../../src/protocol/result.js";

const dec = new TextDecoder();

const completion: CompletionLike = {
  id: "chatcmpl-123",
  object: "chat.completion",
  model: "gpt-4o-mini-2024-07-18",
  choices: [{ message: { content: "Hello there" } }],
  usage: { prompt_tokens: 12, completion_tokens: 30, total_tokens: 42 },
};

describe("formatUsage / parseUsage", () => {
  it("formats the Openai-Usage header value", () => {
    expect(formatUsage({ prompt_tokens: 12, completion_tokens: 30, total_tokens: 42 })).toBe(
      "prompt=12 completion=30 total=42",
    );
  });

  it("parses what it formats", () => {
    const u = { prompt_tokens: 1, completion_tokens: 0, total_tokens: 1 };
    expect(parseUsage(formatUsage(u))).toEqual(u);
  });

  it("returns undefined for an absent or unreadable value", () => {
    expect(parseUsage("")).toBeUndefined();
    expect(parseUsage("prompt=a completion=1 total=2")).toBeUndefined();
    expect(parseUsage("total=3")).toBeUndefined();
  });
});

describe("assistantText", () => {
  it("is the first choice's content, or empty", () => {
    expect(assistantText(completion)).toBe("Hello there");
    expect(assistantText({ choices: [{ message: { content: null } }] })).toBe("");
    expect(assistantText({})).toBe("");
  });
});

describe("encodeSuccess", () => {
  it("encodes a text reply: the assistant's text and all metadata headers", () => {
    const e = encodeSuccess("text", completion, {
      id: "req1",
      attempts: 2,
      upstreamRequestId: "req_abc",
    });
    expect(dec.decode(e.data)).toBe("Hello there");
    expect(e.headers.get("Content-Type")).toMatch(/^text\/plain/);
    expect(e.headers.get("Nats-Msg-Id")).toBe("req1");
    expect(e.headers.get("Openai-Model")).toBe("gpt-4o-mini-2024-07-18");
    expect(e.headers.get("Openai-Request-Id")).toBe("req_abc");
    expect(e.headers.get("Openai-Usage")).toBe("prompt=12 completion=30 total=42");
    expect(e.headers.get("Proxy-Attempts")).toBe("2");
    expect(e.headers.has("Nats-Service-Error")).toBe(false);
    expect(e.headers.has("Nats-Service-Error-Code")).toBe(false);
  });

  it("encodes a JSON reply: the whole ChatCompletion", () => {
    const e = encodeSuccess("json", completion, { id: "req2", attempts: 1 });
    expect(e.headers.get("Content-Type")).toBe("application/json");
    expect(JSON.parse(dec.decode(e.data))).toEqual(completion);
    expect(e.headers.get("Proxy-Attempts")).toBe("1");
  });

  it("omits headers it has no value for", () => {
    const e = encodeSuccess("json", { choices: [] }, { id: "req3", attempts: 1 });
    expect(e.headers.has("Openai-Model")).toBe(false);
    expect(e.headers.has("Openai-Usage")).toBe(false);
    expect(e.headers.has("Openai-Request-Id")).toBe(false);
  });
});

describe("encodeError", () => {
  it("sets the NATS micro error headers and a text body", () => {
    const e = encodeError("text", {
      id: "r1",
      attempts: 3,
      code: 429,
      message: "rate limited",
      model: "gpt-x",
    });
    expect(e.headers.get("Nats-Service-Error")).toBe("rate limited");
    expect(e.headers.get("Nats-Service-Error-Code")).toBe("429");
    expect(e.headers.get("Nats-Msg-Id")).toBe("r1");
    expect(e.headers.get("Proxy-Attempts")).toBe("3");
    expect(e.headers.get("Openai-Model")).toBe("gpt-x");
    expect(e.headers.get("Content-Type")).toMatch(/^text\/plain/);
    expect(dec.decode(e.data)).toBe("error 429: rate limited");
  });

  it("strips line breaks from the header message", () => {
    const e = encodeError("text", {
      id: "r1",
      attempts: 1,
      code: 400,
      message: "line one\r\nline two\nthree",
    });
    const h = e.headers.get("Nats-Service-Error");
    expect(h).toBe("line one line two three");
    expect(h).not.toMatch(/[\r\n]/);
  });

  it("encodes a JSON error body {error:{code,message}}", () => {
    const e = encodeError("json", { id: "r2", attempts: 1, code: 404, message: "no such model" });
    expect(e.headers.get("Content-Type")).toBe("application/json");
    expect(JSON.parse(dec.decode(e.data))).toEqual({
      error: { code: 404, message: "no such model" },
    });
    expect(e.headers.has("Openai-Model")).toBe(false);
  });
});

describe("encodedSize", () => {
  it("counts what nats.js puts on the wire: encoded headers plus body", () => {
    const r = encodeSuccess("json", { ...completion, model: "gpt-4ö" }, { id: "x", attempts: 2 });
    const wire = (r.headers as MsgHdrsImpl).encode().length + r.data.length;
    expect(encodedSize(r)).toBe(wire);
  });
});

describe("header values from outside", () => {
  it("a model name with line breaks or control characters still encodes", () => {
    const ok = encodeSuccess(
      "text",
      { ...completion, model: "evil\r\nNats-Rollup: all" },
      {
        id: "x",
        attempts: 1,
      },
    );
    expect(ok.headers.get("Openai-Model")).toBe("evil Nats-Rollup: all");
    expect(ok.headers.get("Nats-Rollup")).toBe("");
    const err = encodeError("json", {
      id: "x",
      attempts: 1,
      code: 400,
      message: "m",
      model: "a\u0000b\nc",
    });
    expect(err.headers.get("Openai-Model")).toBe("a b c");
  });
});

describe("readResult", () => {
  it("round-trips a JSON success", () => {
    const e = encodeSuccess("json", completion, {
      id: "ok1",
      attempts: 2,
      upstreamRequestId: "req_9",
    });
    const v = readResult("ok1", e.headers, e.data);
    expect(v.ok).toBe(true);
    expect(v.id).toBe("ok1");
    expect(v.code).toBeUndefined();
    expect(v.error).toBeUndefined();
    expect(v.completion).toEqual(completion);
    expect(v.model).toBe("gpt-4o-mini-2024-07-18");
    expect(v.usage).toEqual(completion.usage);
    expect(v.attempts).toBe(2);
    expect(v.upstreamRequestId).toBe("req_9");
  });

  it("round-trips a text success without parsing the body", () => {
    const e = encodeSuccess("text", completion, { id: "ok2", attempts: 1 });
    const v = readResult("ok2", e.headers, e.data);
    expect(v.ok).toBe(true);
    expect(v.body).toBe("Hello there");
    expect(v.completion).toBeUndefined();
  });

  it("round-trips an error (text and JSON)", () => {
    for (const kind of ["text", "json"] as const) {
      const e = encodeError(kind, { id: "bad", attempts: 5, code: 503, message: "down" });
      const v = readResult("bad", e.headers, e.data);
      expect(v.ok).toBe(false);
      expect(v.code).toBe(503);
      expect(v.error).toBe("down");
      expect(v.attempts).toBe(5);
      expect(v.completion).toBeUndefined();
    }
  });

  it("reads a message without headers as a plain success", () => {
    const v = readResult("x", undefined, new TextEncoder().encode("plain"));
    expect(v).toEqual({ id: "x", ok: true, body: "plain" });
  });

  it("keeps a JSON-typed body that is not JSON as text", () => {
    const h = natsHeaders();
    h.set("Content-Type", "application/json");
    const v = readResult("y", h, new TextEncoder().encode("not json"));
    expect(v.ok).toBe(true);
    expect(v.body).toBe("not json");
    expect(v.completion).toBeUndefined();
  });
});
