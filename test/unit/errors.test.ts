import { describe, expect, it } from "vitest";
import { UpstreamError } from "../../src/llm/chat-client.js";
import { RequestError } from "../../src/protocol/codes.js";
import { classify, Failure } from "../../src/worker/errors.js";
import { errors, headers } from "@nats-io/transport-node";

const http = (status: number, headers: Record<string, string> = {}, message = "boom") =>
  new UpstreamError(message, "http", status, headers);

describe("classify", () => {
  it("RequestError 400 is permanent 400 with the same message", () => {
    const cause = new RequestError(400, "no messages: fix it");
    const f = classify(cause);
    expect(f).toBeInstanceOf(Failure);
    expect(f.kind).toBe("permanent");
    expect(f.code).toBe(400);
    expect(f.message).toBe("no messages: fix it");
    expect(f.cause).toBe(cause);
    expect(f.retryAfterMs).toBeUndefined();
  });

  it("a header nats.js cannot encode is permanent 400, never retried", () => {
    let thrown: unknown;
    try {
      headers().set("Openai-Model", "a\nb");
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(errors.InvalidArgumentError);
    const f = classify(thrown);
    expect([f.kind, f.code]).toEqual(["permanent", 400]);
    expect(f.message).toMatch(/cannot be encoded/);
  });

  it("a message over max_payload is permanent 413, saying what to do", () => {
    const f = classify(errors.InvalidArgumentError.format("payload", "max_payload size exceeded"));
    expect([f.kind, f.code]).toEqual(["permanent", 413]);
    expect(f.message).toMatch(/max_tokens/);
  });

  it("RequestError 408 is expired", () => {
    const f = classify(new RequestError(408, "expired at …"));
    expect(f.kind).toBe("expired");
    expect(f.code).toBe(408);
  });

  it("RequestError 413 is permanent 413", () => {
    const f = classify(new RequestError(413, "too large"));
    expect([f.kind, f.code]).toEqual(["permanent", 413]);
  });

  it.each([401, 403])("upstream %d is auth", (status) => {
    const f = classify(http(status, {}, "Incorrect API key provided"));
    expect(f.kind).toBe("auth");
    expect(f.code).toBe(status);
    expect(f.message).toContain("openai.api_key");
    expect(f.message).toContain("Incorrect API key provided");
  });

  it("upstream 404 is permanent 404 naming the model", () => {
    const f = classify(http(404, {}, "The model does not exist"), "gpt-nope");
    expect(f.kind).toBe("permanent");
    expect(f.code).toBe(404);
    expect(f.message).toContain('model "gpt-nope"');
    expect(f.message).toContain("The model does not exist");
  });

  it("upstream 404 without a model still says not found", () => {
    const f = classify(http(404));
    expect(f.code).toBe(404);
    expect(f.message).toMatch(/^not found/);
  });

  it.each([400, 413, 422])("upstream %d is permanent with that code", (status) => {
    const f = classify(http(status));
    expect(f.kind).toBe("permanent");
    expect(f.code).toBe(status);
    expect(f.retryAfterMs).toBeUndefined();
  });

  it("another upstream 4xx is permanent 400", () => {
    const f = classify(http(415));
    expect([f.kind, f.code]).toEqual(["permanent", 400]);
    expect(f.message).toContain("415");
  });

  it.each([
    [408, 504],
    [409, 502],
    [429, 429],
    [500, 500],
    [502, 502],
    [503, 503],
    [504, 504],
  ])("upstream %d is transient, answered as %d", (status, code) => {
    const f = classify(http(status));
    expect(f.kind).toBe("transient");
    expect(f.code).toBe(code);
    expect(f.message).toContain(String(status));
  });

  it("upstream 429 carries the Retry-After delay", () => {
    const f = classify(http(429, { "retry-after": "2" }));
    expect(f.kind).toBe("transient");
    expect(f.code).toBe(429);
    expect(f.retryAfterMs).toBe(2000);
  });

  it("upstream 503 carries retry-after-ms", () => {
    expect(classify(http(503, { "retry-after-ms": "750" })).retryAfterMs).toBe(750);
  });

  it("an http error without a status is transient 500", () => {
    const f = classify(new UpstreamError("weird", "http", undefined, {}));
    expect([f.kind, f.code]).toEqual(["transient", 500]);
  });

  it("a timeout is transient 504", () => {
    const e = new UpstreamError("upstream call timed out", "timeout", undefined, {});
    const f = classify(e);
    expect([f.kind, f.code]).toEqual(["transient", 504]);
    expect(f.cause).toBe(e);
  });

  it("a connection failure is transient 502", () => {
    const f = classify(new UpstreamError("ECONNREFUSED", "connection", undefined, {}));
    expect([f.kind, f.code]).toEqual(["transient", 502]);
  });

  it("an aborted call is transient 503", () => {
    const f = classify(new UpstreamError("aborted", "aborted", undefined, {}));
    expect([f.kind, f.code]).toEqual(["transient", 503]);
  });

  it("a plain Error is transient 500", () => {
    const f = classify(new Error("kaputt"));
    expect(f.kind).toBe("transient");
    expect(f.code).toBe(500);
    expect(f.message).toContain("kaputt");
  });

  it("a thrown non-Error is transient 500", () => {
    const f = classify("a string");
    expect([f.kind, f.code]).toEqual(["transient", 500]);
    expect(f.message).toContain("a string");
  });

  it("returns a Failure unchanged", () => {
    const f = new Failure("poison", 500, "crashed workers", 10);
    expect(classify(f)).toBe(f);
    expect(classify(f, "some-model")).toBe(f);
  });
});
