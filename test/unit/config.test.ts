import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ConfigError, loadConfig, type LoadOptions } from "../../src/config/load.js";
import { SCHEMA } from "../../src/config/schema.js";

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "proxy-config-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function yamlFile(text: string, mode = 0o600): string {
  const f = join(dir, "config.yaml");
  writeFileSync(f, text);
  chmodSync(f, mode);
  return f;
}

const noFile = (): LoadOptions => ({ defaultFile: join(dir, "absent.yaml"), env: {} });

function configError(opts: LoadOptions): ConfigError {
  try {
    loadConfig(opts);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error("expected a ConfigError, nothing was thrown");
}

const ORIGINAL = `
nats:
  server: nats://demo.example:4222
  subject: legacy_requests
  nkey_seed_file: /etc/proxy/user.nk
  tls:
    enabled: true
    cert: /etc/proxy/cert.pem
    key: /etc/proxy/key.pem
    ca: /etc/proxy/ca.pem
openai:
  api_key: sk-file-key-123456
  engine: gpt-3.5-turbo
`;

describe("loadConfig defaults", () => {
  it("uses the schema defaults when there is no file and no environment", () => {
    const { config, warnings } = loadConfig(noFile());
    expect(warnings).toEqual([]);
    expect(config.source).toBe("defaults");
    expect(config.nats.server).toEqual(["nats://127.0.0.1:4222"]);
    expect(config.nats.subject).toBe("openai_requests");
    expect(config.nats.tls.enabled).toBe(false);
    expect(config.openai.api_key).toBe("");
    expect(config.openai.engine).toBe("gpt-4o-mini");
    expect(config.worker.concurrency).toBe(64);
    expect(config.worker.breaker.window).toBe(20);
    expect(config.log.level).toBe("info");
    expect(config.http.port).toBe(9464);
  });

  it("builds every schema key into the nested config", () => {
    const { config } = loadConfig(noFile());
    for (const [key, leaf] of Object.entries(SCHEMA)) {
      const value = key
        .split(".")
        .reduce<unknown>((node, part) => (node as Record<string, unknown>)[part], config);
      expect(value, key).toEqual(leaf.default);
    }
  });

  it("reads the default file when it exists", () => {
    const f = yamlFile("worker:\n  concurrency: 3\n");
    const { config } = loadConfig({ defaultFile: f, env: {} });
    expect(config.source).toBe(f);
    expect(config.worker.concurrency).toBe(3);
  });
});

describe("loadConfig file", () => {
  it("loads the original tool's keys", () => {
    const f = yamlFile(ORIGINAL);
    const { config } = loadConfig({ file: f, env: {} });
    expect(config.source).toBe(f);
    expect(config.nats.server).toEqual(["nats://demo.example:4222"]);
    expect(config.nats.subject).toBe("legacy_requests");
    expect(config.nats.nkey_seed_file).toBe("/etc/proxy/user.nk");
    expect(config.nats.tls).toEqual({
      enabled: true,
      cert: "/etc/proxy/cert.pem",
      key: "/etc/proxy/key.pem",
      ca: "/etc/proxy/ca.pem",
    });
    expect(config.openai.api_key).toBe("sk-file-key-123456");
    expect(config.openai.engine).toBe("gpt-3.5-turbo");
    // keys the file does not set keep their defaults
    expect(config.worker.concurrency).toBe(64);
  });

  it("accepts a list of servers and empty sections", () => {
    const f = yamlFile("nats:\n  server: [nats://a:4222, nats://b:4222]\n  tls:\nhttp:\n");
    const { config } = loadConfig({ file: f, env: {} });
    expect(config.nats.server).toEqual(["nats://a:4222", "nats://b:4222"]);
    expect(config.nats.tls.enabled).toBe(false);
  });

  it("loads the shipped config/config.yaml without errors", () => {
    const f = fileURLToPath(new URL("../../config/config.yaml", import.meta.url));
    const { config } = loadConfig({ file: f, env: {} });
    expect(config.source).toBe(f);
    expect(config.streams.requests).toBe("OPENAI_REQUESTS");
  });
});

describe("loadConfig precedence: flags > env > file > defaults", () => {
  it("environment overrides the file", () => {
    const f = yamlFile(ORIGINAL);
    const { config } = loadConfig({
      file: f,
      env: {
        NATS_URL: "nats://env-a:4222, nats://env-b:4222",
        OPENAI_API_KEY: "sk-env-key-abcdef",
        OPENAI_BASE_URL: "http://127.0.0.1:8000/v1",
        PROXY_CONCURRENCY: "8",
      },
    });
    expect(config.nats.server).toEqual(["nats://env-a:4222", "nats://env-b:4222"]);
    expect(config.openai.api_key).toBe("sk-env-key-abcdef");
    expect(config.openai.base_url).toBe("http://127.0.0.1:8000/v1");
    expect(config.worker.concurrency).toBe(8);
    // untouched by env: still from the file
    expect(config.nats.subject).toBe("legacy_requests");
  });

  it("flags override the environment", () => {
    const { config } = loadConfig({
      ...noFile(),
      env: { NATS_URL: "nats://env:4222", PROXY_CONCURRENCY: "8" },
      flags: { "nats.server": "nats://flag:4222", "worker.concurrency": "2" },
    });
    expect(config.nats.server).toEqual(["nats://flag:4222"]);
    expect(config.worker.concurrency).toBe(2);
  });

  it("ignores empty environment variables and undefined flags", () => {
    const f = yamlFile(ORIGINAL);
    const { config } = loadConfig({
      file: f,
      env: { NATS_URL: "", OPENAI_API_KEY: undefined },
      flags: { "nats.server": undefined, "openai.api_key": undefined },
    });
    expect(config.nats.server).toEqual(["nats://demo.example:4222"]);
    expect(config.openai.api_key).toBe("sk-file-key-123456");
  });

  it("parses booleans from flags and env strings", () => {
    const { config } = loadConfig({
      ...noFile(),
      flags: { "nats.tls.enabled": "yes", "log.pretty": true, "http.enabled": "off" },
    });
    expect(config.nats.tls.enabled).toBe(true);
    expect(config.log.pretty).toBe(true);
    expect(config.http.enabled).toBe(false);
  });

  it("names the environment variable when its value is wrong", () => {
    const e = configError({ ...noFile(), env: { PROXY_CONCURRENCY: "lots" } });
    expect(e.message).toContain("PROXY_CONCURRENCY");
    expect(e.message).toContain("worker.concurrency");
  });

  it("refuses an unknown flag key", () => {
    const e = configError({ ...noFile(), flags: { "nats.nope": "x" } });
    expect(e.message).toContain("nats.nope");
  });
});

describe("loadConfig errors", () => {
  it("names the dotted key and the file for an unknown key", () => {
    const f = yamlFile("nats:\n  sever: nats://x:4222\n");
    const e = configError({ file: f, env: {} });
    expect(e.message).toContain('"nats.sever"');
    expect(e.message).toContain(f);
  });

  it("suggests the full key for a known leaf in the wrong section", () => {
    const f = yamlFile("engine: gpt-4o\n");
    const e = configError({ file: f, env: {} });
    expect(e.message).toContain('unknown key "engine"');
    expect(e.message).toContain('did you mean "openai.engine"');
  });

  it("refuses a scalar where a section is expected", () => {
    const f = yamlFile("nats: nats://x:4222\n");
    const e = configError({ file: f, env: {} });
    expect(e.message).toContain('"nats" must be a mapping');
    expect(e.message).toContain(f);
  });

  it("names the key, the file and the expected type for a wrong type", () => {
    const f = yamlFile("worker:\n  concurrency: many\n");
    const e = configError({ file: f, env: {} });
    expect(e.message).toContain('"worker.concurrency"');
    expect(e.message).toContain(f);
    expect(e.message).toContain("a number");
    expect(e.message).toContain('"many"');
  });

  it("refuses a quoted number in the file and a string for a boolean", () => {
    expect(
      configError({ file: yamlFile('worker:\n  concurrency: "8"\n'), env: {} }).message,
    ).toContain("a number");
    expect(
      configError({ file: yamlFile("nats:\n  tls:\n    enabled: maybe\n"), env: {} }).message,
    ).toContain("true or false");
  });

  it("refuses a number below the minimum", () => {
    const f = yamlFile("worker:\n  concurrency: 0\n");
    const e = configError({ file: f, env: {} });
    expect(e.message).toContain('"worker.concurrency"');
    expect(e.message).toContain("≥ 1");
  });

  it("names a missing explicit file", () => {
    const f = join(dir, "nope.yaml");
    const e = configError({ file: f, env: {} });
    expect(e.message).toContain(f);
    expect(e.message).toContain("not found");
  });

  it("names the file for invalid YAML", () => {
    const f = yamlFile("nats:\n  server: [a\n");
    const e = configError({ file: f, env: {} });
    expect(e.message).toContain(f);
    expect(e.message).toContain("invalid YAML");
  });

  // fills `error.linePos` when prettyErrors is on, so `line` (load.ts:222) is always
  // undefined: for "a: 1\nb: 'open\n" the message is
  // "config file <f>: invalid YAML: Missing closing 'quote" without the line number.
  it("names the line of invalid YAML", () => {
    const f = yamlFile("a: 1\nb: 'open\n");
    const e = configError({ file: f, env: {} });
    expect(e.message).toMatch(/line \d+/);
  });

  it("refuses a top level that is not a mapping", () => {
    const e = configError({ file: yamlFile("- a\n- b\n"), env: {} });
    expect(e.message).toContain("top level must be a mapping");
  });

  it("validates log.level against pino's levels", () => {
    const e = configError({ file: yamlFile("log:\n  level: loud\n"), env: {} });
    expect(e.message).toContain('"log.level"');
    expect(e.message).toContain("one of fatal, error, warn, info, debug, trace, silent");
    expect(loadConfig({ ...noFile(), env: { LOG_LEVEL: "debug" } }).config.log.level).toBe("debug");
    expect(() => loadConfig({ ...noFile(), flags: { "log.level": "verbose" } })).toThrow(
      ConfigError,
    );
  });

  // object literal, so inherited names such as "constructor" or "toString" count as
  // known keys: a file "constructor: 1" (or a flag key "toString") is silently accepted
  // (coerce() returns undefined and an extra "constructor" key lands in the config)
  // instead of failing with 'unknown key "constructor"' (DESIGN.md: an unknown key is
  // an error naming the key and the file).
  it("refuses top-level keys that are Object.prototype names", () => {
    const f = yamlFile("constructor: 1\n");
    expect(() => loadConfig({ file: f, env: {} })).toThrow(/unknown key "constructor"/);
  });
});

describe("loadConfig result", () => {
  it("is deeply frozen", () => {
    const { config } = loadConfig({ file: yamlFile(ORIGINAL), env: {} });
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.nats)).toBe(true);
    expect(Object.isFrozen(config.nats.tls)).toBe(true);
    expect(Object.isFrozen(config.nats.server)).toBe(true);
    expect(Object.isFrozen(config.worker.breaker)).toBe(true);
    expect(() => {
      (config.openai as { engine: string }).engine = "other";
    }).toThrow(TypeError);
    expect(() => {
      (config.nats.server as string[]).push("nats://evil:4222");
    }).toThrow(TypeError);
    expect(config.openai.engine).toBe("gpt-3.5-turbo");
  });
});

describe("loadConfig key-file permissions", () => {
  it("warns with chmod 600 when a file holding openai.api_key is readable by others", () => {
    const f = yamlFile(ORIGINAL, 0o644);
    const { warnings } = loadConfig({ file: f, env: {} });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(`chmod 600 ${f}`);
    expect(warnings[0]).not.toContain("sk-file-key-123456");
  });

  it("does not warn for mode 0600", () => {
    const { warnings } = loadConfig({ file: yamlFile(ORIGINAL, 0o600), env: {} });
    expect(warnings).toEqual([]);
  });

  it("does not warn for a readable file without an api key", () => {
    const { warnings } = loadConfig({
      file: yamlFile("worker:\n  concurrency: 2\n", 0o644),
      env: {},
    });
    expect(warnings).toEqual([]);
  });
});
