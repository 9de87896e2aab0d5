import { describe, expect, it } from "vitest";
import { RequestError } from "../../src/protocol/codes.js";
import { decodeRequest, parseExpiresAt, validateParams } from "../../src/protocol/request.js";

const MODEL = "gpt-default";
const enc = new TextEncoder();
const bytes = (s: string) => enc.encode(s);

/** Runs `fn`, expecting a RequestError; returns it for further checks. */
function requestError(fn: () => unknown): RequestError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(RequestError);
    return e as RequestError;
  }
  throw new Error("expected a RequestError, nothing was thrown");
}

describe("decodeRequest", () => {
  it("decodes a plain-text prompt as one user message to the default model", () => {
    const r = decodeRequest(bytes("List the last 10 presidents"), "", MODEL);
    expect(r.kind).toBe("text");
    expect(r.params).toEqual({
      model: MODEL,
      messages: [{ role: "user", content: "List the last 10 presidents" }],
    });
  });

  it("keeps non-ASCII UTF-8 text intact", () => {
    const r = decodeRequest(bytes("Grüße, 世界 🚀"), "", MODEL);
    expect(r.params.messages[0]?.content).toBe("Grüße, 世界 🚀");
  });

  it("decodes JSON when Content-Type is application/json (with parameters, any case)", () => {
    const body = JSON.stringify({ messages: [{ role: "user", content: "hi" }] });
    for (const ct of ["application/json", "Application/JSON; charset=utf-8"]) {
      const r = decodeRequest(bytes(body), ct, MODEL);
      expect(r.kind).toBe("json");
      expect(r.params.model).toBe(MODEL);
      expect(r.params.messages).toEqual([{ role: "user", content: "hi" }]);
    }
  });

  it("treats a JSON object with messages as JSON even without a content type", () => {
    const body = `  {"model":"m1","messages":[{"role":"user","content":"x"}]}\n`;
    const r = decodeRequest(bytes(body), "", MODEL);
    expect(r.kind).toBe("json");
    expect(r.params.model).toBe("m1");
  });

  it("keeps a prompt that starts with { but is not an object with messages as text", () => {
    for (const prompt of ['{"a": 1}', "{ not json at all", "{}"]) {
      const r = decodeRequest(bytes(prompt), "", MODEL);
      expect(r.kind).toBe("text");
      expect(r.params.messages).toEqual([{ role: "user", content: prompt }]);
    }
  });

  it("validates an object with messages sent without a content type", () => {
    const e = requestError(() => decodeRequest(bytes('{"messages": []}'), "", MODEL));
    expect(e.code).toBe(400);
    expect(e.message).toContain('"messages"');
  });

  it("refuses an empty body with 400 mentioning empty", () => {
    const e = requestError(() => decodeRequest(new Uint8Array(), "", MODEL));
    expect(e.code).toBe(400);
    expect(e.message).toMatch(/empty/i);
  });

  it("refuses a whitespace-only text body with 400", () => {
    const e = requestError(() => decodeRequest(bytes(" \n\t "), "", MODEL));
    expect(e.code).toBe(400);
    expect(e.message).toMatch(/whitespace/);
  });

  it("refuses invalid UTF-8 with 400 mentioning UTF-8", () => {
    const e = requestError(() => decodeRequest(new Uint8Array([0xff, 0xfe]), "", MODEL));
    expect(e.code).toBe(400);
    expect(e.message).toContain("UTF-8");
  });

  it("refuses malformed JSON with a JSON content type as unparseable", () => {
    const e = requestError(() =>
      decodeRequest(bytes('{"messages": [}'), "application/json", MODEL),
    );
    expect(e.code).toBe(400);
    expect(e.message).toContain("unparseable JSON");
  });

  it("refuses a JSON body that is not an object", () => {
    const e = requestError(() => decodeRequest(bytes("[1,2]"), "application/json", MODEL));
    expect(e.code).toBe(400);
    expect(e.message).toContain("must be an object");
  });
});

describe("validateParams", () => {
  const msgs = [{ role: "user", content: "hi" }];

  it("refuses params without messages", () => {
    const e = requestError(() => validateParams({ model: "m" }, MODEL));
    expect(e.code).toBe(400);
    expect(e.message).toContain("no messages");
  });

  it.each([
    ["a string", "hello"],
    ["an object", { role: "user" }],
    ["an empty array", []],
  ])("refuses messages that are %s", (_what, messages) => {
    const e = requestError(() => validateParams({ messages }, MODEL));
    expect(e.code).toBe(400);
    expect(e.message).toContain('"messages" must be a non-empty array');
  });

  it.each([
    "gpt-4o-mini-2024-07-18",
    "ft:gpt-4o-mini:my-org:custom_suffix:9ABCDEFG",
    "meta-llama/Llama-3.1-8B-Instruct",
    "llama3.1:8b",
    "vertex_ai/gemini-1.5-pro@001",
    "a+b",
    "m".repeat(256),
  ])("accepts the model name %s", (model) => {
    expect(validateParams({ model, messages: msgs }, MODEL).model).toBe(model);
  });

  it.each([
    ["a newline", "gpt-4o\nmini", /may only contain/],
    ["a tab", "gpt-4o\tmini", /may only contain/],
    ["a NUL", "gpt\u0000", /may only contain/],
    ["a space", "gpt 4o", /may only contain/],
    ["a non-ASCII letter", "gpt-4ö", /may only contain/],
    ["257 characters", "m".repeat(257), /257 characters long; the limit is 256/],
  ])("refuses a model name with %s, naming the field", (_what, model, re) => {
    const e = requestError(() => validateParams({ model, messages: msgs }, MODEL));
    expect(e.code).toBe(400);
    expect(e.message).toMatch(/^"model" /);
    expect(e.message).toMatch(re);
    // eslint-disable-next-line no-control-regex
    expect(e.message).not.toMatch(/[\r\n\t\u0000]/);
  });

  it("refuses a message without a role, naming its index", () => {
    const e = requestError(() =>
      validateParams({ messages: [{ role: "system", content: "s" }, { content: "x" }] }, MODEL),
    );
    expect(e.code).toBe(400);
    expect(e.message).toContain("messages[1]");
    expect(e.message).toContain('"role"');
  });

  it("refuses message content that is neither a string nor an array", () => {
    const e = requestError(() =>
      validateParams({ messages: [{ role: "user", content: 5 }] }, MODEL),
    );
    expect(e.message).toContain("messages[0].content");
  });

  it("accepts content parts and null content (tool-call assistant messages)", () => {
    const messages = [
      { role: "user", content: [{ type: "text", text: "hi" }] },
      { role: "assistant", content: null, tool_calls: [] },
    ];
    expect(validateParams({ messages }, MODEL).messages).toEqual(messages);
  });

  it.each([
    ["temperature", "hot"],
    ["stream", "yes"],
    ["max_tokens", 1.5],
    ["stop", [1]],
    ["top_p", "0.9"],
    ["n", "2"],
    ["user", 42],
    ["tools", {}],
    ["response_format", "json"],
  ])("refuses a wrong type for %s, naming the field", (field, value) => {
    const e = requestError(() => validateParams({ messages: msgs, [field]: value }, MODEL));
    expect(e.code).toBe(400);
    expect(e.message).toContain(`"${field}" must be`);
  });

  it("accepts correctly typed optional fields and nulls", () => {
    const p = validateParams(
      {
        messages: msgs,
        temperature: 0.2,
        stream: true,
        max_tokens: 10,
        stop: ["\n", "END"],
        seed: null,
        response_format: { type: "json_object" },
      },
      MODEL,
    );
    expect(p.stream).toBe(true);
    expect(p.stop).toEqual(["\n", "END"]);
  });

  it("applies the default model and keeps an explicit one", () => {
    expect(validateParams({ messages: msgs }, MODEL).model).toBe(MODEL);
    expect(validateParams({ messages: msgs, model: null }, MODEL).model).toBe(MODEL);
    expect(validateParams({ messages: msgs, model: "gpt-4o" }, MODEL).model).toBe("gpt-4o");
  });

  it("refuses a model that is not a non-empty string", () => {
    expect(
      requestError(() => validateParams({ messages: msgs, model: 7 }, MODEL)).message,
    ).toContain('"model"');
    expect(requestError(() => validateParams({ messages: msgs, model: "" }, MODEL)).code).toBe(400);
  });

  it("passes unknown extra fields through unchanged", () => {
    const p = validateParams(
      { messages: msgs, logit_bias: { "50256": -100 }, x_vendor: [1, 2], reasoning_effort: "low" },
      MODEL,
    );
    expect(p.logit_bias).toEqual({ "50256": -100 });
    expect(p.x_vendor).toEqual([1, 2]);
    expect(p.reasoning_effort).toBe("low");
  });
});

describe("parseExpiresAt", () => {
  it("reads RFC 3339 with Z and with an offset", () => {
    expect(parseExpiresAt("2026-01-02T15:04:05Z")).toBe(Date.UTC(2026, 0, 2, 15, 4, 5));
    expect(parseExpiresAt("2026-01-02T17:04:05.250+02:00")).toBe(
      Date.UTC(2026, 0, 2, 15, 4, 5, 250),
    );
  });

  it("reads epoch milliseconds", () => {
    expect(parseExpiresAt("1767366245000")).toBe(1767366245000);
    expect(parseExpiresAt(" 0 ")).toBe(0);
  });

  it("returns undefined for an empty or blank header", () => {
    expect(parseExpiresAt("")).toBeUndefined();
    expect(parseExpiresAt("   ")).toBeUndefined();
  });

  it("refuses garbage with 400 naming Expires-At", () => {
    const e = requestError(() => parseExpiresAt("garbage"));
    expect(e.code).toBe(400);
    expect(e.message).toContain("Expires-At");
  });

  // parser accepts text that is neither RFC 3339 nor epoch ms: parseExpiresAt("garbage 1")
  // returns 978307200000 (2001-01-01 local time) and "never 2030" returns 2030-01-01,
  // instead of throwing RequestError 400 (DESIGN.md: "RFC 3339 or epoch ms").
  it("refuses garbage that merely contains a number", () => {
    expect(() => parseExpiresAt("garbage 1")).toThrow(RequestError);
    expect(() => parseExpiresAt("never 2030")).toThrow(RequestError);
  });
});
