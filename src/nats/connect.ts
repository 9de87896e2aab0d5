/**
 * Connecting to NATS: nkey seed file, creds file, TLS / mutual TLS; reconnect
 * forever once connected, logging each status change. A first-connect failure
 * becomes one clear line naming the cause.
 */
import { readFileSync } from "node:fs";
import {
  connect,
  credsAuthenticator,
  nkeyAuthenticator,
  type ConnectionOptions,
  type NatsConnection,
} from "@nats-io/transport-node";
import type { Config } from "../config/schema.js";
import type { Logger } from "../log.js";

/** A connection problem the user must fix; the message names the setting. */
export class NatsConnectError extends Error {
  override readonly name = "NatsConnectError";
}

/** Builds nats.js connection options from the configuration. */
export function connectionOptions(c: Config["nats"], name?: string): ConnectionOptions {
  const opts: ConnectionOptions = {
    servers: [...c.server],
    name: name ?? c.name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    timeout: c.connect_timeout_ms,
    // Without this a server-side error before the first PONG throws a generic timeout.
    waitOnFirstConnect: false,
    // nats.js otherwise builds an Error (a stack capture) for every request — every
    // publish and pull — just in case it times out: measurable CPU at high rates.
    noAsyncTraces: true,
  };
  if (c.nkey_seed_file && c.creds_file) {
    throw new NatsConnectError(
      "both nats.nkey_seed_file and nats.creds_file are set: use one of them",
    );
  }
  if (c.nkey_seed_file) {
    const seed = readSecretFile(c.nkey_seed_file, "nats.nkey_seed_file").trim();
    if (!/^S[A-Z][A-Z2-7]+$/.test(seed)) {
      throw new NatsConnectError(
        `nats.nkey_seed_file ${c.nkey_seed_file} does not hold an nkey seed (expected one line starting with "SU")`,
      );
    }
    opts.authenticator = nkeyAuthenticator(new TextEncoder().encode(seed));
  }
  if (c.creds_file) {
    const creds = readSecretFile(c.creds_file, "nats.creds_file");
    if (!creds.includes("BEGIN NATS USER JWT") || !creds.includes("NKEY SEED")) {
      throw new NatsConnectError(
        `nats.creds_file ${c.creds_file} is not a NATS creds file (no user JWT and seed blocks)`,
      );
    }
    opts.authenticator = credsAuthenticator(new TextEncoder().encode(creds));
  }
  const tlsWanted = c.tls.enabled || c.tls.cert !== "" || c.tls.ca !== "";
  if (tlsWanted) {
    if ((c.tls.cert === "") !== (c.tls.key === "")) {
      throw new NatsConnectError("nats.tls.cert and nats.tls.key must be set together");
    }
    for (const [k, f] of [
      ["nats.tls.cert", c.tls.cert],
      ["nats.tls.key", c.tls.key],
      ["nats.tls.ca", c.tls.ca],
    ] as const) {
      if (f) readSecretFile(f, k); // fail early with the key's name, not a TLS stack
    }
    opts.tls = {
      ...(c.tls.cert ? { certFile: c.tls.cert, keyFile: c.tls.key } : {}),
      ...(c.tls.ca ? { caFile: c.tls.ca } : {}),
    };
  }
  return opts;
}

function readSecretFile(path: string, key: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why =
      code === "ENOENT" ? "file not found" : code === "EACCES" ? "permission denied" : String(code);
    throw new NatsConnectError(`${key}: cannot read ${path}: ${why}`);
  }
}

/**
 * Connects, translating first-connect failures into `NatsConnectError`, and logs
 * every later status change (disconnect, reconnecting, reconnect, errors).
 */
export async function connectNats(
  c: Config["nats"],
  log: Logger,
  name?: string,
): Promise<NatsConnection> {
  const opts = connectionOptions(c, name);
  let nc: NatsConnection;
  try {
    nc = await connect(opts);
  } catch (e) {
    throw new NatsConnectError(describeConnectError(e, c));
  }
  void watchStatus(nc, log);
  log.debug({ server: nc.getServer() }, "connected to NATS");
  return nc;
}

async function watchStatus(nc: NatsConnection, log: Logger): Promise<void> {
  for await (const s of nc.status()) {
    switch (s.type) {
      case "ping":
      case "update":
      case "ldm":
        log.debug({ nats: s.type, ...("server" in s ? { server: s.server } : {}) }, "nats status");
        break;
      case "reconnecting":
        log.debug({ nats: s.type }, "nats reconnecting");
        break;
      case "close":
        // The process closed its own connection (end of a CLI verb, shutdown).
        log.debug({ nats: s.type }, "nats connection closed");
        break;
      case "disconnect":
        log.warn({ nats: s.type, server: s.server }, "disconnected from NATS; reconnecting");
        break;
      case "reconnect":
        log.info({ nats: s.type, server: s.server }, "reconnected to NATS");
        break;
      case "error":
        log.warn({ nats: s.type, err: s.error }, "nats error");
        break;
      case "slowConsumer":
        log.warn(
          { nats: s.type, subject: s.sub.getSubject(), pending: s.pending },
          "nats slow consumer",
        );
        break;
      default:
        log.warn({ nats: s.type }, "nats status change");
    }
  }
}

/** The oldest nats-server this project supports (2.9 is end of life, with work-queue bugs). */
export const MIN_SERVER = "2.10.0";

/** Compares dotted versions ("2.10.27" vs "2.11.0"); a pre-release suffix is ignored. */
export function versionAtLeast(have: string, want: string): boolean {
  const p = (v: string) => v.replace(/^v/, "").split(/[-+]/)[0]!.split(".").map(Number);
  const a = p(have);
  const b = p(want);
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const x = a[i] ?? 0;
    const y = b[i] ?? 0;
    if (x !== y) return x > y;
  }
  return true;
}

/** What the connected server offers that the proxy uses when present. */
export interface ServerFeatures {
  version: string;
  /** consumer pause / resume (2.11) */
  consumerPause: boolean;
  /** per-message TTL and KV per-key TTL (2.11) */
  messageTtl: boolean;
}

/**
 * The connected server's version and features.
 * @throws NatsConnectError when the server is older than {@link MIN_SERVER}
 */
export function checkServer(nc: NatsConnection): ServerFeatures {
  const version = nc.info?.version ?? "0.0.0";
  if (!versionAtLeast(version, MIN_SERVER)) {
    throw new NatsConnectError(
      `nats-server ${version} at ${nc.getServer()} is too old: nats-openai-proxy needs nats-server ${MIN_SERVER} or newer (2.9 is end of life and has work-queue bugs); upgrade the server`,
    );
  }
  return {
    version,
    consumerPause: versionAtLeast(version, "2.11.0"),
    messageTtl: versionAtLeast(version, "2.11.0"),
  };
}

/** One line naming what went wrong on the first connect. */
export function describeConnectError(e: unknown, c: Config["nats"]): string {
  // nats.js v3 reports by class (AuthorizationError, TimeoutError, ConnectionError…);
  // TLS failures surface as Node's errors with a code.
  const err = e as { name?: string; code?: string; message?: string; cause?: unknown };
  const cause = err.cause as { code?: string; message?: string } | undefined;
  const code = err.code ?? cause?.code ?? (err.name === "TimeoutError" ? "TIMEOUT" : "");
  const msg = [err.message ?? String(e), cause?.message].filter(Boolean).join(": ");
  const servers = c.server.join(",");
  const auth = c.nkey_seed_file
    ? `the nkey seed in nats.nkey_seed_file (${c.nkey_seed_file})`
    : c.creds_file
      ? `the creds file nats.creds_file (${c.creds_file})`
      : "no credentials (set nats.nkey_seed_file or nats.creds_file)";
  if (err.name === "AuthorizationError" || /authorization/i.test(msg)) {
    return `NATS at ${servers} refused authentication with ${auth}`;
  }
  if (code === "UNABLE_TO_VERIFY_LEAF_SIGNATURE" || /verify|self.signed|certificate/i.test(msg)) {
    return c.tls.ca
      ? `TLS: the certificate of NATS at ${servers} is not signed by nats.tls.ca (${c.tls.ca}): ${msg}`
      : `TLS: NATS at ${servers} requires TLS and its certificate is not trusted: set nats.tls.ca (and nats.tls.cert/key if it verifies clients)`;
  }
  if (code === "TIMEOUT" && (c.tls.enabled || c.tls.ca || c.tls.cert)) {
    return c.tls.cert
      ? `timed out connecting to NATS at ${servers} over TLS: the server may have refused the client certificate nats.tls.cert (${c.tls.cert}) — is it signed by the CA the server trusts?`
      : `timed out connecting to NATS at ${servers} over TLS: the server may require a client certificate (set nats.tls.cert and nats.tls.key)`;
  }
  if (code === "CONNECTION_REFUSED" || /ECONNREFUSED/.test(msg)) {
    return `cannot connect to NATS at ${servers}: connection refused (is nats-server running? set nats.server or NATS_URL)`;
  }
  if (/tls/i.test(code) || /tls|ssl/i.test(msg)) {
    return `TLS error connecting to NATS at ${servers}: ${msg} (check nats.tls.*)`;
  }
  return `cannot connect to NATS at ${servers}: ${msg}${code && code !== msg ? ` (${code})` : ""}`;
}
