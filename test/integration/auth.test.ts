/**
 * Connecting to secured NATS servers through the CLI, as DESIGN.md "CLI / Connecting" demands:
 * nkey seeds, operator-mode creds, TLS with client verification. A failed first connect exits 1
 * with one line on stderr naming the cause (no stack trace); after a first successful connect
 * `serve` reconnects and keeps working when the server goes away and comes back.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  makeNkeyUser,
  makeOperatorFixtures,
  makeTlsFixtures,
  nkeyAuthConfig,
  startNatsServer,
  type NatsServerHandle,
  type TlsFixtures,
} from "../helpers/nats-server.js";
import { makeStreamsDir, serveEnv, spawnCli, type ServeProcess } from "../helpers/proxy.js";
import { startDevOpenAI, type DevOpenAI } from "../../src/dev-openai/server.js";

const ANSWER = "(dev-openai test double) You said: hi";

const streams = makeStreamsDir();
let dev: DevOpenAI;
let scratch: string;
/** A config file that only shortens the first-connect timeout (TLS refusals end in a timeout). */
let shortTimeoutConfig: string;

const servers: NatsServerHandle[] = [];
const procs: ServeProcess[] = [];

beforeAll(async () => {
  dev = await startDevOpenAI();
  scratch = await mkdtemp(join(tmpdir(), "auth-test-"));
  shortTimeoutConfig = join(scratch, "short-timeout.yaml");
  await writeFile(shortTimeoutConfig, "nats:\n  connect_timeout_ms: 1500\n");
});

afterEach(async () => {
  await Promise.all(procs.splice(0).map((p) => p.kill("SIGKILL")));
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});

afterAll(async () => {
  await dev.close();
  await rm(scratch, { recursive: true, force: true });
  streams.cleanup();
});

async function server(opts: Parameters<typeof startNatsServer>[0]): Promise<NatsServerHandle> {
  const s = await startNatsServer(opts);
  servers.push(s);
  return s;
}

function cli(args: string[], env: Record<string, string> = {}): ServeProcess {
  const p = spawnCli(args, { STREAMS_DIR: streams.dir, ...env });
  procs.push(p);
  return p;
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a CLI verb to completion, keeping stdout and stderr apart. */
async function run(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const p = cli(args, env);
  let stdout = "";
  let stderr = "";
  p.proc.stdout?.on("data", (b: Buffer) => (stdout += b.toString()));
  p.proc.stderr?.on("data", (b: Buffer) => (stderr += b.toString()));
  const code = await p.exited;
  return { code, stdout, stderr };
}

/** Asserts the DESIGN.md first-connect failure contract and returns the one stderr line. */
function expectConnectFailure(r: Run): string {
  const context = `stdout:\n${r.stdout}\nstderr:\n${r.stderr}`;
  expect(r.code, context).toBe(1);
  expect(r.stderr, context).not.toMatch(/^\s+at /m);
  const lines = r.stderr.trim().split("\n");
  expect(lines, context).toHaveLength(1);
  return lines[0] ?? "";
}

describe("nkey authentication", () => {
  it("refuses a missing, foreign or absent seed and works with the right one", async () => {
    const [user, stranger] = await Promise.all([makeNkeyUser(), makeNkeyUser()]);
    const s = await server({ extraConfig: nkeyAuthConfig([{ publicKey: user.publicKey }]) });
    const url = ["--nats_server", s.url];
    const missingFile = join(scratch, "no-such-seed.nk");

    const [noSeed, foreign, missing] = await Promise.all([
      run(["streams", "apply", ...url]),
      run(["streams", "apply", ...url, "--nkey_seed_file", stranger.seedFile]),
      run(["streams", "apply", ...url, "--nkey_seed_file", missingFile]),
    ]);
    expect(expectConnectFailure(noSeed)).toMatch(/authentication/i);
    expect(noSeed.stderr).toMatch(/nkey/i);
    const foreignLine = expectConnectFailure(foreign);
    expect(foreignLine).toMatch(/authentication/i);
    expect(foreignLine).toContain(stranger.seedFile);
    const missingLine = expectConnectFailure(missing);
    expect(missingLine).toContain("nats.nkey_seed_file");
    expect(missingLine).toContain(missingFile);

    const applied = await run(["streams", "apply", ...url, "--nkey_seed_file", user.seedFile]);
    expect(applied.code, applied.stderr).toBe(0);
    expect(applied.stdout).toMatch(/OPENAI_REQUESTS/);

    const serve = cli(
      ["serve", "--nkey_seed_file", user.seedFile],
      serveEnv(s.url, dev.url, streams.dir),
    );
    await serve.waitFor(/nats-openai-proxy serving/);
    const reply = await run([
      "request",
      "hi",
      "--timeout",
      "15000",
      ...url,
      "--nkey_seed_file",
      user.seedFile,
    ]);
    expect(reply.code, reply.stderr).toBe(0);
    expect(reply.stdout.trim()).toBe(ANSWER);
  });

  it("refuses `request` without a seed with one line naming the missing nkey", async () => {
    const user = await makeNkeyUser();
    const s = await server({ extraConfig: nkeyAuthConfig([{ publicKey: user.publicKey }]) });
    const r = await run(["request", "hi", "--timeout", "2000", "--nats_server", s.url]);
    const line = expectConnectFailure(r);
    expect(line).toMatch(/authentication/i);
    expect(line).toMatch(/nkey/i);
  });
});

describe("creds (operator mode)", () => {
  it("works with the account's creds and refuses foreign creds naming the file", async () => {
    const op = await makeOperatorFixtures();
    const s = await server({ extraConfig: op.config });
    const url = ["--nats_server", s.url];
    const [good, foreign] = await Promise.all([
      run(["streams", "apply", ...url, "--creds", op.credsFile]),
      run(["streams", "apply", ...url, "--creds", op.foreignCredsFile]),
    ]);
    expect(good.code, good.stderr).toBe(0);
    expect(good.stdout).toMatch(/OPENAI_REQUESTS/);
    const line = expectConnectFailure(foreign);
    expect(line).toContain(op.foreignCredsFile);
    expect(line).toMatch(/creds/i);
  });
});

describe("TLS with client verification", () => {
  let tls: TlsFixtures;
  let s: NatsServerHandle;

  beforeAll(async () => {
    tls = await makeTlsFixtures();
  });

  async function tlsServer(): Promise<NatsServerHandle> {
    return server({
      tls: { cert: tls.serverCert, key: tls.serverKey, ca: tls.ca, verify: true },
    });
  }

  it("connects with a client certificate signed by the server's CA", async () => {
    s = await tlsServer();
    const r = await run([
      "streams",
      "apply",
      "--nats_server",
      s.url,
      "--tls_cert",
      tls.clientCert,
      "--tls_key",
      tls.clientKey,
      "--tls_ca",
      tls.ca,
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/OPENAI_REQUESTS/);
  });

  it("fails clearly for a plaintext client, a foreign client certificate and an untrusted server", async () => {
    s = await tlsServer();
    // Only the refused client certificate ends in a timeout (nats.js sees no TLS alert).
    const short = ["--config", shortTimeoutConfig];
    const [plain, foreignCert, noCa] = await Promise.all([
      run(["streams", "apply", "--nats_server", `nats://127.0.0.1:${s.port}`]),
      run([
        "streams",
        "apply",
        ...short,
        "--nats_server",
        s.url,
        "--tls_cert",
        tls.foreignClientCert,
        "--tls_key",
        tls.foreignClientKey,
        "--tls_ca",
        tls.ca,
      ]),
      run([
        "streams",
        "apply",
        "--nats_server",
        s.url,
        "--tls_cert",
        tls.clientCert,
        "--tls_key",
        tls.clientKey,
      ]),
    ]);
    expect(expectConnectFailure(plain)).toMatch(/TLS/);
    expect(expectConnectFailure(foreignCert)).toMatch(/client certificate/i);
    expect(foreignCert.stderr).toMatch(/refused/i);
    expect(expectConnectFailure(noCa)).toMatch(/nats\.tls\.ca|trust/i);
  });
});

describe("reconnect after a first successful connect", () => {
  it("serve survives the server going away and answers again after it returns", async () => {
    const s = await server({});
    const serve = cli(["serve"], serveEnv(s.url, dev.url, streams.dir));
    await serve.waitFor(/nats-openai-proxy serving/);
    await serve.waitFor(/worker started/);

    await s.kill();
    await serve.waitFor(/disconnected from NATS/);
    await s.restart();
    await serve.waitFor(/reconnected to NATS/);
    expect(serve.proc.exitCode).toBeNull();
    expect(serve.proc.signalCode).toBeNull();

    const reply = await run(["request", "hi", "--timeout", "20000", "--nats_server", s.url]);
    expect(reply.code, `${reply.stderr}\nserve:\n${serve.output()}`).toBe(0);
    expect(reply.stdout.trim()).toBe(ANSWER);
    expect(serve.proc.exitCode).toBeNull();
  });
});
