import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createUser } from "@nats-io/nkeys";
import { afterAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config/load.js";
import { redactConfig, scrub } from "../../src/config/redact.js";

const dir = mkdtempSync(join(tmpdir(), "proxy-redact-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const seed = new TextDecoder().decode(createUser().getSeed());

describe("redactConfig", () => {
  it("hides openai.api_key and keeps everything else", () => {
    const { config } = loadConfig({
      defaultFile: join(dir, "absent.yaml"),
      env: { OPENAI_API_KEY: "sk-live-abcdefghijkl", NATS_URL: "nats://h:4222" },
    });
    const shown = redactConfig(config) as {
      openai: { api_key: string; engine: string };
      nats: { server: string[] };
    };
    expect(shown.openai.api_key).toBe("[redacted]");
    expect(shown.openai.engine).toBe("gpt-4o-mini");
    expect(shown.nats.server).toEqual(["nats://h:4222"]);
    expect(JSON.stringify(shown)).not.toContain("sk-live-abcdefghijkl");
    // the original stays intact
    expect(config.openai.api_key).toBe("sk-live-abcdefghijkl");
  });

  it("leaves an empty key empty", () => {
    const { config } = loadConfig({ defaultFile: join(dir, "absent.yaml"), env: {} });
    const shown = redactConfig(config) as { openai: { api_key: string } };
    expect(shown.openai.api_key).toBe("");
  });
});

describe("scrub", () => {
  it("removes the given secret values verbatim, wherever they appear", () => {
    const out = scrub("key=hunter2secret; again hunter2secret.", ["hunter2secret"]);
    expect(out).toBe("key=[redacted]; again [redacted].");
  });

  it("ignores given secrets shorter than 4 characters and empty ones", () => {
    expect(scrub("abc and ab", ["abc", ""])).toBe("abc and ab");
  });

  it("removes OpenAI-shaped keys, including the starred form the API echoes", () => {
    const out = scrub(
      "Incorrect API key provided: sk-proj-****abcd. Also sk-abcDEF123_xyz-789 here.",
    );
    expect(out).not.toContain("sk-proj");
    expect(out).not.toContain("abcd.");
    expect(out).not.toContain("sk-abcDEF123_xyz-789");
    expect(out).toBe("Incorrect API key provided: [redacted]. Also [redacted] here.");
  });

  it("removes nkey seeds", () => {
    expect(seed).toMatch(/^SU[A-Z2-7]{50,}$/);
    const out = scrub(`bad seed ${seed} in file`);
    expect(out).toBe("bad seed [redacted] in file");
  });

  it("removes a creds file seed block", () => {
    const creds = [
      "-----BEGIN NATS USER JWT-----",
      "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.payload.sig",
      "------END NATS USER JWT------",
      "",
      "-----BEGIN USER NKEY SEED-----",
      seed,
      "------END USER NKEY SEED------",
    ].join("\n");
    const out = scrub(`creds:\n${creds}\ndone`);
    expect(out).not.toContain(seed);
    expect(out).not.toContain("NKEY SEED");
    expect(out).toContain("BEGIN NATS USER JWT");
    expect(out.endsWith("[redacted]\ndone")).toBe(true);
  });

  it("removes bearer tokens", () => {
    expect(scrub("Authorization: Bearer xyz.abc-123")).toBe("Authorization: [redacted]");
    expect(scrub("authorization: bearer tok_12345678")).toBe("authorization: [redacted]");
    expect(scrub("Bearer of bad news")).toBe("Bearer of bad news");
  });

  it("leaves ordinary text alone", () => {
    const text = "model gpt-4o-mini answered 42 tokens in 1.2 s (status 200, id chatcmpl-9)";
    expect(scrub(text, ["not-present-secret"])).toBe(text);
  });

  // so any word ending in "sk" followed by "-" is mangled: scrub("low disk-space on a
  // risk-free task-queue") returns "low di[redacted] on a ri[redacted] ta[redacted]"
  // instead of the unchanged text.
  it("does not mangle ordinary words that contain sk-", () => {
    const text = "low disk-space on a risk-free task-queue";
    expect(scrub(text)).toBe(text);
  });
});
