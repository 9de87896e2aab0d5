/**
 * DESIGN.md "Configuration": secrets (API key, nkey seed, creds) never appear in logs, errors or
 * debug output. Runs the real CLI with --debug against a nats-server that requires nkey auth and
 * the local OpenAI test double, and searches everything the processes printed.
 */
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  makeNkeyUser,
  nkeyAuthConfig,
  startNatsServer,
  type NatsServerHandle,
  type NkeyUser,
} from "../helpers/nats-server.js";
import { makeStreamsDir, serveEnv, spawnCli, type ServeProcess } from "../helpers/proxy.js";
import { startDevOpenAI, type DevOpenAI } from "../../src/dev-openai/server.js";

/**
 * A distinctive fake key. Its secret part mixes cases and digits on purpose: a run like
 * "1234567890" would make the 6-character-substring check flaky, because any 6 digits of it
 * can turn up by chance in the millisecond timestamps of hundreds of log lines.
 */
const KEY_PREFIX = "sk-test-";
const SECRET_PART = "SECRETq7ZxW9kPm2RtYbN8cLdHsVf";
const API_KEY = KEY_PREFIX + SECRET_PART;
const ANSWER = "(dev-openai test double) You said: hi";

const streams = makeStreamsDir();
let user: NkeyUser;
let stranger: NkeyUser;
let nats: NatsServerHandle;
let devOpen: DevOpenAI;
let devReject: DevOpenAI;
let devKeyed: DevOpenAI;
let scratch: string;
/** Short breaker probe and shutdown grace, so the 401 path logs its probes quickly. */
let fastConfig: string;
const procs: ServeProcess[] = [];

beforeAll(async () => {
  [user, stranger, devOpen, devReject, devKeyed] = await Promise.all([
    makeNkeyUser(),
    makeNkeyUser(),
    startDevOpenAI(),
    startDevOpenAI({ apiKey: "other" }),
    startDevOpenAI({ apiKey: API_KEY }),
  ]);
  nats = await startNatsServer({ extraConfig: nkeyAuthConfig([{ publicKey: user.publicKey }]) });
  scratch = await mkdtemp(join(tmpdir(), "secrets-test-"));
  fastConfig = join(scratch, "fast.yaml");
  await writeFile(
    fastConfig,
    "worker:\n  shutdown_grace_ms: 2000\n  breaker:\n    probe_interval_ms: 300\nhttp:\n  port: 0\n",
  );
});

afterEach(async () => {
  await Promise.all(procs.splice(0).map((p) => p.kill("SIGKILL")));
});

afterAll(async () => {
  await Promise.all([nats.stop(), devOpen.close(), devReject.close(), devKeyed.close()]);
  await rm(scratch, { recursive: true, force: true });
  streams.cleanup();
});

function cli(args: string[], env: Record<string, string>): ServeProcess {
  const p = spawnCli(args, env);
  procs.push(p);
  return p;
}

/** Runs a CLI verb to completion; returns its exit code and stdout+stderr. */
async function run(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number | null; out: string }> {
  const p = cli(args, env);
  const code = await p.exited;
  return { code, out: p.output() };
}

/** Every window of `n` characters of `s`. */
function windows(s: string, n: number): string[] {
  const out: string[] = [];
  for (let i = 0; i + n <= s.length; i++) out.push(s.slice(i, i + n));
  return out;
}

/** Asserts that none of the API key and the nkey seed (nor recognisable parts) is in `out`. */
function expectNoSecrets(out: string): void {
  const leaks = [
    API_KEY,
    ...windows(SECRET_PART, 6),
    user.seed,
    user.seed.slice(0, 12),
    stranger.seed,
    stranger.seed.slice(0, 12),
  ].filter((s) => out.includes(s));
  expect(leaks, `secrets leaked into the output:\n${out}`).toEqual([]);
}

describe("serve --debug never prints the API key or the nkey seed", () => {
  it.each([
    { via: "environment", dev: () => devOpen, rejects: false },
    { via: "flag", dev: () => devOpen, rejects: false },
    { via: "environment", dev: () => devReject, rejects: true },
    { via: "flag", dev: () => devReject, rejects: true },
  ])("key from the $via, upstream rejects it: $rejects", async ({ via, dev, rejects }) => {
    // A fresh consumer state per run: a request left queued by a rejecting run must not
    // be answered by the next run's worker.
    const s = await startNatsServer({
      extraConfig: nkeyAuthConfig([{ publicKey: user.publicKey }]),
    });
    try {
      const env = serveEnv(s.url, dev().url, streams.dir, {
        OPENAI_API_KEY: via === "environment" ? API_KEY : "",
      });
      const keyFlag = via === "flag" ? ["--openai_api_key", API_KEY] : [];
      const serve = cli(
        ["serve", "--debug", "--config", fastConfig, "--nkey_seed_file", user.seedFile, ...keyFlag],
        env,
      );
      await serve.waitFor(/nats-openai-proxy serving/);

      // The client verbs get the key in their environment too: they must not print it either.
      const clientEnv = { OPENAI_API_KEY: API_KEY, STREAMS_DIR: streams.dir };
      const conn = ["--nats_server", s.url, "--nkey_seed_file", user.seedFile, "--debug"];
      let clientOut: string;
      if (rejects) {
        const sub = await run(["submit", "hi", ...conn], clientEnv);
        expect(sub.code, sub.out).toBe(0);
        clientOut = sub.out;
        await serve.waitFor(/pausing intake/);
        await serve.waitFor(/probe failed/);
        expect(serve.output()).toMatch(/\(401\)/);
      } else {
        const req = await run(["request", "hi", "--timeout", "15000", ...conn], clientEnv);
        expect(req.code, req.out).toBe(0);
        expect(req.out).toContain(ANSWER);
        clientOut = req.out;
        await serve.waitFor(/request finished/);
      }

      expect(await serve.kill("SIGTERM"), serve.output()).toBe(0);
      const out = serve.output();
      // Not vacuous: debug lines (the redacted configuration among them) were printed.
      expect(out).toMatch(/"level":20/);
      expect(out).toMatch(/"msg":"configuration"/);
      expectNoSecrets(out + clientOut);
    } finally {
      await s.stop();
    }
  });
});

describe("a config file holding openai.api_key", () => {
  async function serveWithFile(mode: number): Promise<string> {
    const file = join(scratch, `config-${mode.toString(8)}.yaml`);
    await writeFile(
      file,
      `openai:\n  api_key: ${API_KEY}\n  base_url: ${devKeyed.url}\nhttp:\n  port: 0\n` +
        `worker:\n  shutdown_grace_ms: 2000\n`,
    );
    await chmod(file, mode); // explicit: writeFile's mode is subject to the umask
    const conn = ["--nats_server", nats.url, "--nkey_seed_file", user.seedFile];
    const serve = cli(["serve", "--debug", "--config", file, ...conn], {
      STREAMS_DIR: streams.dir,
    });
    await serve.waitFor(/nats-openai-proxy serving/);
    // The double only accepts API_KEY, so an answer proves the key from the file is in use.
    const req = await run(["request", "hi", "--timeout", "15000", ...conn], {
      STREAMS_DIR: streams.dir,
    });
    expect(req.code, `${req.out}\nserve:\n${serve.output()}`).toBe(0);
    expect(req.out).toContain(ANSWER);
    expect(await serve.kill("SIGTERM"), serve.output()).toBe(0);
    const out = serve.output();
    expect(out).toMatch(/"level":20/);
    expectNoSecrets(out + req.out);
    return out;
  }

  it("warns to chmod 600 when others can read it", async () => {
    const out = await serveWithFile(0o644);
    expect(out).toMatch(/chmod 600/);
  });

  it("does not warn when the file is 0600", async () => {
    const out = await serveWithFile(0o600);
    expect(out).not.toMatch(/chmod 600/);
    expect(out).not.toMatch(/readable by other users/);
  });
});

describe("a NATS authentication failure with a seed configured", () => {
  it("names the seed file but never prints the seed", async () => {
    const conn = ["--nats_server", nats.url, "--nkey_seed_file", stranger.seedFile];
    const env = { OPENAI_API_KEY: API_KEY, STREAMS_DIR: streams.dir, OPENAI_BASE_URL: devOpen.url };
    const results = await Promise.all([
      run(["serve", "--debug", ...conn], env),
      run(["streams", "apply", "--debug", ...conn], env),
      run(["request", "hi", "--timeout", "2000", "--debug", ...conn], env),
    ]);
    for (const r of results) {
      expect(r.code, r.out).toBe(1);
      expect(r.out).not.toMatch(/^\s+at /m);
      expect(r.out).toMatch(/authentication/i);
      expect(r.out).toContain(stranger.seedFile);
      expectNoSecrets(r.out);
    }
  });
});
