/**
 * Test harness for real nats-server processes (integration tests and benchmarks).
 *
 * Starts nats-server with a generated config file, waits for "Server is ready" in its log,
 * supports kill/restart on the same port and store dir, 3-node JetStream clusters on loopback,
 * and auth fixtures (TLS certificates via openssl, nkey users, operator-mode creds).
 *
 * Every server and temporary directory created here is tracked. On process 'exit' and on
 * SIGTERM/SIGINT/SIGHUP the harness SIGKILLs servers that are still running and removes the
 * temporary directories (including fixture dirs), so a test that forgets to clean up does not
 * leak processes. Fixture dirs (TLS, nkey, creds) live until then unless the caller removes them.
 */
import { spawn, execFile, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, rmSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { StorageType, jetstreamManager } from "@nats-io/jetstream";
import { createAccount, createOperator, createUser, type KeyPair } from "@nats-io/nkeys";

const execFileAsync = promisify(execFile);

/** Debian installs nats-server into /usr/sbin, which is not on every user's PATH. */
const NATS_SERVER_BIN =
  process.env.NATS_SERVER_BIN ??
  (existsSync("/usr/sbin/nats-server") ? "/usr/sbin/nats-server" : "nats-server");

const READY_MARKER = "Server is ready";
const READY_TIMEOUT_MS = 10_000;
/** Graceful shutdown (SIGTERM) escalates to SIGKILL after this long so stop() always ends. */
const STOP_TIMEOUT_MS = 10_000;
/** Keep only the tail of very chatty logs so a long benchmark cannot grow memory without bound. */
const MAX_LOG_CHARS = 2_000_000;
/** Bounded backoff for "address already in use" on a fixed port (sum is about 3 s). */
const ADDR_IN_USE_BACKOFF_MS = [100, 200, 400, 800, 1600];

// ---------------------------------------------------------------------------------------------
// Leak protection
// ---------------------------------------------------------------------------------------------

const liveServers = new Set<ChildProcess>();
const tempDirs = new Set<string>();
let exitHookInstalled = false;

/** SIGKILLs every live server and removes every temp dir; synchronous so 'exit' can run it. */
function cleanupSync(): void {
  for (const child of liveServers) {
    try {
      child.kill("SIGKILL");
    } catch {
      // The process may already be gone; nothing else to do during exit.
    }
  }
  liveServers.clear();
  for (const dir of tempDirs) {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // Best effort: a leftover temp dir is not worth failing process exit for.
    }
  }
  tempDirs.clear();
}

/**
 * Installed lazily so importing the module has no side effects. 'exit' alone is not enough:
 * vitest ends its fork workers with SIGTERM, and a process killed by a signal never emits
 * 'exit'. So the hook also listens for SIGTERM/SIGINT/SIGHUP, cleans up, and then re-raises the
 * signal if nobody else handles it, keeping the default "terminate" behaviour (the signal-exit
 * pattern). A SIGKILL of the test process itself cannot be caught; servers would leak then.
 */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", cleanupSync);
  for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"] as const) {
    process.once(sig, () => {
      cleanupSync();
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    });
  }
}

async function makeTempDir(prefix: string): Promise<string> {
  installExitHook();
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

async function removeTempDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

// ---------------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------------

/** Returns a TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read, close). */
export async function freePort(): Promise<number> {
  const [port] = await freePorts(1);
  if (port === undefined) throw new Error("freePort: no port allocated");
  return port;
}

/**
 * Allocates n distinct free ports. All listeners stay open until every port is known, so the
 * kernel cannot hand out the same port twice (separate freePort() calls could collide).
 */
async function freePorts(n: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < n; i++) {
      const srv = net.createServer();
      servers.push(srv);
      ports.push(
        await new Promise<number>((resolve, reject) => {
          srv.once("error", reject);
          srv.listen(0, "127.0.0.1", () => {
            const addr = srv.address();
            if (addr !== null && typeof addr === "object") resolve(addr.port);
            else reject(new Error("freePort: unexpected server address"));
          });
        }),
      );
    }
    return ports;
  } finally {
    await Promise.all(
      servers.map((srv) => new Promise<void>((resolve) => srv.close(() => resolve()))),
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Single server
// ---------------------------------------------------------------------------------------------

/** Options for {@link startNatsServer}. All paths are file-system paths. */
export interface NatsServerOptions {
  /** Enable JetStream with a file store in `storeDir`. Default true. */
  jetstream?: boolean;
  /** Client port on 127.0.0.1. Default: a free port. */
  port?: number;
  /** JetStream store dir. Default: a fresh temp dir, removed by stop(). A given dir is kept. */
  storeDir?: string;
  /** Raw nats-server config text appended to the generated config (authorization, accounts...). */
  extraConfig?: string;
  /** TLS for client connections; `verify: true` requires client certificates signed by `ca`. */
  tls?: { cert: string; key: string; ca?: string; verify?: boolean };
  /** Server max_payload in bytes. */
  maxPayload?: number;
  /** called when a launch found its fixed port in use, before the retry (tests) */
  onAddrInUse?: (attempt: number) => void;
  /** server_name; required by nats-server for clustered JetStream. */
  serverName?: string;
  /** Cluster block; `routes` are the route ports of all nodes (this one may be included). */
  cluster?: { name: string; port: number; routes: number[] };
}

/** A running (or stopped) nats-server started by {@link startNatsServer}. */
export interface NatsServerHandle {
  /** "nats://127.0.0.1:<port>", or "tls://127.0.0.1:<port>" when TLS is configured. */
  url: string;
  port: number;
  storeDir: string;
  /** pid of the current server process; undefined while it is not running. */
  pid: number | undefined;
  /** Everything the server printed so far (stdout + stderr, all runs). */
  logs(): string;
  /** SIGTERM and wait for exit; idempotent; removes temp dirs the harness created. Final. */
  stop(): Promise<void>;
  /** SIGKILL and wait for exit; keeps the store dir so restart() finds the data. */
  kill(): Promise<void>;
  /** Start again on the same port and store dir (SIGTERM first if still running). */
  restart(): Promise<void>;
}

/** Thrown when one launch attempt fails; `addrInUse` tells the caller whether a retry may help. */
class LaunchError extends Error {
  constructor(
    message: string,
    readonly addrInUse: boolean,
  ) {
    super(message);
    this.name = "LaunchError";
  }
}

/** Quote a value for the nats-server config format (JSON strings are valid there). */
function q(value: string): string {
  return JSON.stringify(value);
}

interface ResolvedOptions {
  jetstream: boolean;
  port: number;
  storeDir: string;
  extraConfig: string | undefined;
  tls: NatsServerOptions["tls"];
  maxPayload: number | undefined;
  serverName: string | undefined;
  cluster: NatsServerOptions["cluster"];
}

function buildConfig(o: ResolvedOptions): string {
  const lines: string[] = [];
  if (o.serverName !== undefined) lines.push(`server_name: ${q(o.serverName)}`);
  lines.push(`listen: ${q(`127.0.0.1:${o.port}`)}`);
  if (o.maxPayload !== undefined) lines.push(`max_payload: ${o.maxPayload}`);
  if (o.jetstream) lines.push(`jetstream { store_dir: ${q(o.storeDir)} }`);
  if (o.tls) {
    const t = [`cert_file: ${q(o.tls.cert)}`, `key_file: ${q(o.tls.key)}`];
    if (o.tls.ca !== undefined) t.push(`ca_file: ${q(o.tls.ca)}`);
    t.push(`verify: ${o.tls.verify === true ? "true" : "false"}`);
    // The default 0.5 s handshake timeout is tight on a loaded 2-core CI box.
    t.push("timeout: 2");
    lines.push(`tls {\n  ${t.join("\n  ")}\n}`);
  }
  if (o.cluster) {
    const routes = o.cluster.routes.map((p) => q(`nats-route://127.0.0.1:${p}`)).join(", ");
    lines.push(
      `cluster {\n  name: ${q(o.cluster.name)}\n  listen: ${q(`127.0.0.1:${o.cluster.port}`)}\n` +
        `  routes: [${routes}]\n}`,
    );
  }
  if (o.extraConfig !== undefined) lines.push(o.extraConfig);
  return lines.join("\n") + "\n";
}

function tail(text: string, lines = 30): string {
  return text.trimEnd().split("\n").slice(-lines).join("\n");
}

/**
 * Starts a nats-server on 127.0.0.1 and resolves once it logged "Server is ready".
 * Rejects with the log tail if the process exits first or is not ready within 10 s.
 */
export async function startNatsServer(opts: NatsServerOptions = {}): Promise<NatsServerHandle> {
  installExitHook();
  const baseDir = await makeTempDir("nats-harness-");
  const confPath = path.join(baseDir, "server.conf");
  const storeDir = opts.storeDir ?? path.join(baseDir, "store");

  let log = "";
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let stopped = false;
  let stopping: Promise<void> | undefined;

  const appendLog = (chunk: string): void => {
    log += chunk;
    if (log.length > MAX_LOG_CHARS) log = log.slice(log.length - MAX_LOG_CHARS);
  };

  /** One attempt: spawn with the current config and wait for readiness or failure. */
  const launch = (): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      let runLog = "";
      let ready = false;
      let settled = false;
      const proc = spawn(NATS_SERVER_BIN, ["-c", confPath], {
        stdio: ["ignore", "pipe", "pipe"],
      });
      child = proc;
      liveServers.add(proc);

      let markExited!: () => void;
      exited = new Promise<void>((r) => (markExited = r));

      const timer = setTimeout(() => {
        proc.kill("SIGKILL");
        fail(`not ready after ${READY_TIMEOUT_MS} ms`);
      }, READY_TIMEOUT_MS);

      // A hoisted function because the timer above and the event handlers below both use it.
      function fail(reason: string): void {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        const addrInUse = /address already in use/i.test(runLog);
        reject(
          new LaunchError(`nats-server ${reason}\n--- log tail ---\n${tail(runLog)}`, addrInUse),
        );
      }

      const onData = (buf: Buffer): void => {
        const text = buf.toString("utf8");
        appendLog(text);
        if (ready) return;
        runLog += text;
        if (runLog.includes(READY_MARKER)) {
          ready = true;
          settled = true;
          clearTimeout(timer);
          resolve();
        }
      };
      proc.stdout?.on("data", onData);
      proc.stderr?.on("data", onData);

      // 'close' (not 'exit') so the log tail in the error message is complete.
      proc.once("close", (code, signal) => {
        liveServers.delete(proc);
        if (child === proc) child = undefined;
        markExited();
        fail(`exited before ready (code ${String(code)}, signal ${String(signal)})`);
      });
      proc.once("error", (err) => {
        // spawn failures (ENOENT) may not be followed by 'close'.
        liveServers.delete(proc);
        if (child === proc) child = undefined;
        markExited();
        fail(`failed to spawn ${NATS_SERVER_BIN}: ${err.message}`);
      });
    });

  const resolved: ResolvedOptions = {
    jetstream: opts.jetstream ?? true,
    port: opts.port ?? 0,
    storeDir,
    extraConfig: opts.extraConfig,
    tls: opts.tls,
    maxPayload: opts.maxPayload,
    serverName: opts.serverName,
    cluster: opts.cluster,
  };

  /**
   * Launch with bounded retries on "address already in use". A port we picked ourselves is
   * replaced by a new free one (someone else grabbed it); a fixed port (caller's, or restart)
   * gets a short backoff because the previous owner may still be releasing it.
   */
  const launchWithRetry = async (pickPort: boolean): Promise<void> => {
    for (let attempt = 0; ; attempt++) {
      if (pickPort) resolved.port = await freePort();
      await writeFile(confPath, buildConfig(resolved));
      try {
        await launch();
        return;
      } catch (err) {
        const delay = ADDR_IN_USE_BACKOFF_MS[attempt];
        if (!(err instanceof LaunchError) || !err.addrInUse || delay === undefined) throw err;
        appendLog(`--- nats-harness: address in use, retry ${attempt + 1} ---\n`);
        opts.onAddrInUse?.(attempt + 1);
        if (!pickPort) await new Promise((r) => setTimeout(r, delay));
      }
    }
  };

  const terminate = async (signal: NodeJS.Signals): Promise<void> => {
    const proc = child;
    if (proc === undefined) return;
    proc.kill(signal);
    if (signal === "SIGKILL") {
      await exited;
      return;
    }
    const escalate = setTimeout(() => proc.kill("SIGKILL"), STOP_TIMEOUT_MS);
    try {
      await exited;
    } finally {
      clearTimeout(escalate);
    }
  };

  try {
    await launchWithRetry(opts.port === undefined);
  } catch (err) {
    await terminate("SIGKILL");
    await removeTempDir(baseDir);
    throw err;
  }

  const handle: NatsServerHandle = {
    url: `${opts.tls ? "tls" : "nats"}://127.0.0.1:${resolved.port}`,
    port: resolved.port,
    storeDir,
    get pid(): number | undefined {
      return child?.pid;
    },
    logs: () => log,
    stop: () => {
      stopping ??= (async () => {
        stopped = true;
        await terminate("SIGTERM");
        // The store dir lives inside baseDir unless the caller supplied it.
        await removeTempDir(baseDir);
      })();
      return stopping;
    },
    kill: () => terminate("SIGKILL"),
    restart: async () => {
      if (stopped) throw new Error("restart() after stop(): the temp dirs are gone; use kill()");
      await terminate("SIGTERM");
      appendLog("--- nats-harness: restart ---\n");
      await launchWithRetry(false);
    },
  };
  return handle;
}

// ---------------------------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------------------------

/** A JetStream cluster started by {@link startCluster}. nodes[i] has server_name `n${i+1}`. */
export interface ClusterHandle {
  nodes: NatsServerHandle[];
  urls: string[];
  /** Stops every node (idempotent). */
  stop(): Promise<void>;
}

const CLUSTER_READY_TIMEOUT_MS = 20_000;

/**
 * Starts `size` (>= 2) JetStream nodes (server_name n1..nN) routed to each other on loopback and
 * resolves once a stream with num_replicas = min(size, 3) can be created, i.e. the meta leader
 * is elected and every peer is known (right after start the server answers "no suitable peers
 * for placement" for about a second).
 */
export async function startCluster(size = 3): Promise<ClusterHandle> {
  // A 1-node "cluster" never elects a meta leader on 2.9.10 (it logs "Waiting for routing to be
  // established..." forever); use startNatsServer() for a single node.
  if (!Number.isInteger(size) || size < 2) throw new Error(`startCluster: size must be >= 2`);
  // A port picked by freePorts can be taken by someone else before the node binds it; the route
  // ports are baked into every node's config, so the only fix is a new set of ports.
  for (let attempt = 1; ; attempt++) {
    const ports = await freePorts(size * 2);
    const clientPorts = ports.slice(0, size);
    const routePorts = ports.slice(size);
    const name = `c-${randomBytes(4).toString("hex")}`;
    const started = await Promise.allSettled(
      clientPorts.map((port, i) =>
        startNatsServer({
          serverName: `n${i + 1}`,
          port,
          // n1 is the seed the others route to (gossip links n2 and n3): nodes dialling
          // each other at once make duplicate routes, after which a 2.10 meta leader
          // sometimes never counts its peers ("no suitable peers for placement").
          cluster: { name, port: routePorts[i] ?? 0, routes: routePorts.slice(0, 1) },
        }),
      ),
    );
    const nodes = started.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    const stop = async (): Promise<void> => {
      await Promise.all(nodes.map((n) => n.stop()));
    };
    const failure = started.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failure !== undefined) {
      await stop();
      const reason: unknown = failure.reason;
      const retryable = reason instanceof LaunchError && reason.addrInUse;
      if (retryable && attempt < 3) continue;
      throw reason;
    }
    const urls = nodes.map((n) => n.url);
    try {
      await waitForJetStreamCluster(urls, Math.min(size, 3));
    } catch (err) {
      await stop();
      // Seen on 2.10.27 about once in 15 starts with every node routing to every other: a
      // meta leader that never counts its peers. A new cluster is the way out.
      if (attempt < 3) continue;
      throw err;
    }
    return { nodes, urls, stop };
  }
}

/** Retries creating (then deleting) a throwaway replicated stream until it succeeds. */
async function waitForJetStreamCluster(urls: string[], replicas: number): Promise<void> {
  const deadline = Date.now() + CLUSTER_READY_TIMEOUT_MS;
  const nc: NatsConnection = await connect({ servers: urls, maxReconnectAttempts: -1 });
  try {
    const id = randomBytes(4).toString("hex");
    const streamName = `HARNESS_PROBE_${id}`;
    let lastError: unknown;
    let delay = 100;
    while (Date.now() < deadline) {
      try {
        // checkAPI: false because the account-info probe itself fails until the meta leader exists.
        const jsm = await jetstreamManager(nc, { checkAPI: false, timeout: 2000 });
        await jsm.streams.add({
          name: streamName,
          subjects: [`_harness.probe.${id}`],
          num_replicas: replicas,
          storage: StorageType.Memory,
        });
        await jsm.streams.delete(streamName);
        return;
      } catch (err) {
        lastError = err;
      }
      // Polling is unavoidable here: there is no client-visible event for "peers placeable".
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 500);
    }
    throw new Error(
      `JetStream cluster not ready after ${CLUSTER_READY_TIMEOUT_MS} ms: ${String(lastError)}`,
    );
  } finally {
    await nc.close();
  }
}

// ---------------------------------------------------------------------------------------------
// TLS fixtures
// ---------------------------------------------------------------------------------------------

/** Absolute paths of PEM files made by {@link makeTlsFixtures}. */
export interface TlsFixtures {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A second, unrelated CA and a client certificate it signed (must be refused). */
  foreignCa: string;
  foreignClientCert: string;
  foreignClientKey: string;
}

const EC_ARGS = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

async function openssl(cwd: string, args: string[]): Promise<void> {
  await execFileAsync("openssl", args, { cwd });
}

/** CA + leaf certificate signed by it; the leaf's extensions come from `ext`. */
async function makeCaAndLeaf(
  dir: string,
  caName: string,
  leafName: string,
  leafCn: string,
  ext: string,
): Promise<void> {
  await openssl(dir, [
    "req",
    "-x509",
    ...EC_ARGS,
    "-keyout",
    `${caName}.key`,
    "-out",
    `${caName}.pem`,
    "-days",
    "2",
    "-subj",
    `/CN=${caName}`,
  ]);
  await makeLeaf(dir, caName, leafName, leafCn, ext);
}

async function makeLeaf(
  dir: string,
  caName: string,
  leafName: string,
  leafCn: string,
  ext: string,
): Promise<void> {
  await writeFile(path.join(dir, `${leafName}.ext`), ext);
  await openssl(dir, [
    "req",
    ...EC_ARGS,
    "-keyout",
    `${leafName}.key`,
    "-out",
    `${leafName}.csr`,
    "-subj",
    `/CN=${leafCn}`,
  ]);
  await openssl(dir, [
    "x509",
    "-req",
    "-in",
    `${leafName}.csr`,
    "-CA",
    `${caName}.pem`,
    "-CAkey",
    `${caName}.key`,
    // A random serial instead of -CAcreateserial: no shared .srl file between parallel calls.
    "-set_serial",
    `0x${randomBytes(8).toString("hex")}`,
    "-out",
    `${leafName}.pem`,
    "-days",
    "2",
    "-extfile",
    `${leafName}.ext`,
  ]);
}

/**
 * Creates EC P-256 certificates in a temp dir: a CA, a server cert for IP:127.0.0.1 and
 * DNS:localhost, a client cert, plus a foreign CA with its own client cert.
 */
export async function makeTlsFixtures(): Promise<TlsFixtures> {
  const dir = await makeTempDir("nats-harness-tls-");
  const serverExt = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n";
  const clientExt = "extendedKeyUsage=clientAuth\n";
  await Promise.all([
    (async () => {
      await makeCaAndLeaf(dir, "ca", "server", "localhost", serverExt);
      await makeLeaf(dir, "ca", "client", "worker", clientExt);
    })(),
    makeCaAndLeaf(dir, "foreign-ca", "foreign-client", "intruder", clientExt),
  ]);
  const p = (name: string): string => path.join(dir, name);
  return {
    dir,
    ca: p("ca.pem"),
    serverCert: p("server.pem"),
    serverKey: p("server.key"),
    clientCert: p("client.pem"),
    clientKey: p("client.key"),
    foreignCa: p("foreign-ca.pem"),
    foreignClientCert: p("foreign-client.pem"),
    foreignClientKey: p("foreign-client.key"),
  };
}

// ---------------------------------------------------------------------------------------------
// nkey users
// ---------------------------------------------------------------------------------------------

/** An nkey user; pass `seed` to nkeyAuthenticator() and `publicKey` to nkeyAuthConfig(). */
export interface NkeyUser {
  seed: string;
  publicKey: string;
  /** File containing the seed (mode 0600), for code that reads the seed from disk. */
  seedFile: string;
}

/** Creates a user nkey (nkeys.js createUser) and writes its seed to a 0600 temp file. */
export async function makeNkeyUser(): Promise<NkeyUser> {
  const kp = createUser();
  const seed = new TextDecoder().decode(kp.getSeed());
  const dir = await makeTempDir("nats-harness-nkey-");
  const seedFile = path.join(dir, "user.nk");
  await writeFile(seedFile, seed + "\n", { mode: 0o600 });
  return { seed, publicKey: kp.getPublicKey(), seedFile };
}

type SubjectPermission = string[] | { allow?: string[]; deny?: string[] };

/**
 * Returns an `authorization { users = [...] }` block for nkey users. Note that a user with
 * permissions who uses JetStream needs publish on `$JS.API.>` and subscribe on `_INBOX.>`.
 */
export function nkeyAuthConfig(
  users: {
    publicKey: string;
    permissions?: { publish?: SubjectPermission; subscribe?: SubjectPermission };
  }[],
): string {
  const entries = users.map((u) =>
    u.permissions === undefined
      ? { nkey: u.publicKey }
      : { nkey: u.publicKey, permissions: u.permissions },
  );
  // JSON is valid nats-server config syntax, which avoids hand-quoting subjects like "$JS.>".
  return `authorization {\n  users = ${JSON.stringify(entries, null, 2)}\n}\n`;
}

// ---------------------------------------------------------------------------------------------
// Operator mode (JWT + creds)
// ---------------------------------------------------------------------------------------------

/** Operator-mode fixtures made by {@link makeOperatorFixtures}. */
export interface OperatorFixtures {
  /** `operator`, `resolver: MEMORY` and `resolver_preload` text for `extraConfig`. */
  config: string;
  /** Creds file of a user in the preloaded (JetStream-enabled) account, mode 0600. */
  credsFile: string;
  credsText: string;
  /** Creds of a user signed by an account the server does not know (must be refused). */
  foreignCredsFile: string;
}

function b64url(data: string | Uint8Array): string {
  return Buffer.from(data).toString("base64url");
}

/** Encodes and signs a NATS v2 JWT (ed25519-nkey) for `subject`, issued by `issuer`. */
function signJwt(
  issuer: KeyPair,
  subject: string,
  name: string,
  nats: Record<string, unknown>,
): string {
  const body = {
    iat: Math.floor(Date.now() / 1000),
    iss: issuer.getPublicKey(),
    sub: subject,
    name,
    nats,
  };
  // nsc derives jti from a hash of the claims; uniqueness is all the server needs.
  const jti = createHash("sha256")
    .update(JSON.stringify(body) + randomBytes(8).toString("hex"))
    .digest("hex")
    .toUpperCase();
  const header = b64url(JSON.stringify({ typ: "JWT", alg: "ed25519-nkey" }));
  const claims = b64url(JSON.stringify({ jti, ...body }));
  const signingInput = `${header}.${claims}`;
  const sig = b64url(issuer.sign(new TextEncoder().encode(signingInput)));
  return `${signingInput}.${sig}`;
}

function userJwt(account: KeyPair, user: KeyPair, name: string): string {
  return signJwt(account, user.getPublicKey(), name, {
    pub: {},
    sub: {},
    subs: -1,
    data: -1,
    payload: -1,
    type: "user",
    version: 2,
  });
}

function credsText(jwt: string, seed: string): string {
  return `-----BEGIN NATS USER JWT-----
${jwt}
------END NATS USER JWT------

************************* IMPORTANT *************************
NKEY Seed printed below can be used to sign and prove identity.
NKEYs are sensitive and should be treated as secrets.

-----BEGIN USER NKEY SEED-----
${seed}
------END USER NKEY SEED------

*************************************************************
`;
}

/**
 * Builds an operator, a JetStream-enabled account (preloaded via resolver: MEMORY) with one
 * user, a system account (needed for JetStream in operator mode), and a foreign account/user
 * pair the server has never heard of. Put `config` into
 * `extraConfig`; operator mode cannot be combined with an `authorization` block.
 */
export async function makeOperatorFixtures(): Promise<OperatorFixtures> {
  const operator = createOperator();
  const account = createAccount();
  const user = createUser();
  const foreignAccount = createAccount();
  const foreignUser = createUser();

  const operatorJwt = signJwt(operator, operator.getPublicKey(), "harness-operator", {
    type: "operator",
    version: 2,
  });
  const accountNats = (): Record<string, unknown> => ({
    limits: {
      subs: -1,
      data: -1,
      payload: -1,
      imports: -1,
      exports: -1,
      wildcards: true,
      conn: -1,
      leaf: -1,
      // Without non-zero JetStream limits the account has JetStream disabled.
      mem_storage: -1,
      disk_storage: -1,
      streams: -1,
      consumer: -1,
    },
    default_permissions: { pub: {}, sub: {} },
    type: "account",
    version: 2,
  });
  const accountJwt = signJwt(operator, account.getPublicKey(), "harness-account", accountNats());
  // nats-server 2.9.10 refuses to start JetStream in operator mode without a system account
  // ("setting up internal jetstream subscriptions failed: system account not setup").
  const systemAccount = createAccount();
  const systemJwt = signJwt(operator, systemAccount.getPublicKey(), "SYS", {
    limits: { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true },
    type: "account",
    version: 2,
  });
  // The foreign account gets no JWT in resolver_preload, so the server cannot resolve its users.

  const decoder = new TextDecoder();
  const text = credsText(userJwt(account, user, "harness-user"), decoder.decode(user.getSeed()));
  const foreignText = credsText(
    userJwt(foreignAccount, foreignUser, "foreign-user"),
    decoder.decode(foreignUser.getSeed()),
  );

  const dir = await makeTempDir("nats-harness-creds-");
  const credsFile = path.join(dir, "user.creds");
  const foreignCredsFile = path.join(dir, "foreign.creds");
  await writeFile(credsFile, text, { mode: 0o600 });
  await writeFile(foreignCredsFile, foreignText, { mode: 0o600 });

  const config =
    `operator: ${q(operatorJwt)}\n` +
    `resolver: MEMORY\n` +
    `system_account: ${systemAccount.getPublicKey()}\n` +
    `resolver_preload: {\n` +
    `  ${account.getPublicKey()}: ${q(accountJwt)}\n` +
    `  ${systemAccount.getPublicKey()}: ${q(systemJwt)}\n` +
    `}\n`;
  return { config, credsFile, credsText: text, foreignCredsFile };
}
