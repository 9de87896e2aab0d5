/**
 * What every verb shares: connection flags (the original snake_case spellings too),
 * configuration loading with flags > env > file > defaults, and error reporting as
 * one line on stderr with exit code 1.
 */
import { isPriority, priorityProblem, type Priority } from "../protocol/lanes.js";
import type { Command } from "commander";
import { loadConfig, type Loaded } from "../config/load.js";
import { scrub } from "../config/redact.js";
import type { Config } from "../config/schema.js";
import { createLogger, type Logger } from "../log.js";
import { connectNats } from "../nats/connect.js";
import { createClient, namesFromConfig, type ProxyClient } from "../client/client.js";

/** Rewrites `--nats_server=x` to `--nats-server=x`, so the original flags keep working. */
export function normaliseArgv(argv: readonly string[]): string[] {
  const end = argv.indexOf("--");
  return argv.map((a, i) => {
    if (!a.startsWith("--") || (end >= 0 && i >= end)) return a;
    const eq = a.indexOf("=");
    const name = eq < 0 ? a : a.slice(0, eq);
    return name.replace(/_/g, "-") + (eq < 0 ? "" : a.slice(eq));
  });
}

export interface CommonFlags {
  config?: string;
  natsServer?: string;
  subject?: string;
  nkeySeedFile?: string;
  creds?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  openaiApiKey?: string;
  openaiBaseUrl?: string;
  engine?: string;
  concurrency?: string;
  httpPort?: string;
  debug?: boolean;
  logLevel?: string;
  pretty?: boolean;
}

/** Adds the connection and logging flags every verb takes. */
export function addCommonOptions(cmd: Command): Command {
  return cmd
    .option("--config <file>", "configuration file (default: config/config.yaml if present)")
    .option("--nats-server <url>", "NATS server URL(s), comma-separated (nats.server, NATS_URL)")
    .option("--nkey-seed-file <file>", "nkey seed file (nats.nkey_seed_file)")
    .option("--creds <file>", "NATS creds file (nats.creds_file, NATS_CREDS)")
    .option("--tls-cert <file>", "client certificate (nats.tls.cert)")
    .option("--tls-key <file>", "client key (nats.tls.key)")
    .option("--tls-ca <file>", "CA to trust (nats.tls.ca)")
    .option("--debug", "log at debug level")
    .option("--log-level <level>", "fatal|error|warn|info|debug|trace|silent (log.level)")
    .option("--pretty", "human-readable logs");
}

/** Loads the configuration from flags, environment and file. */
export function configFrom(f: CommonFlags): Loaded {
  const flags: Record<string, unknown> = {
    "nats.server": f.natsServer,
    "nats.subject": f.subject,
    "nats.nkey_seed_file": f.nkeySeedFile,
    "nats.creds_file": f.creds,
    "nats.tls.cert": f.tlsCert,
    "nats.tls.key": f.tlsKey,
    "nats.tls.ca": f.tlsCa,
    "openai.api_key": f.openaiApiKey,
    "openai.base_url": f.openaiBaseUrl,
    "openai.engine": f.engine,
    "worker.concurrency": f.concurrency,
    "http.port": f.httpPort,
    "log.level": f.debug ? "debug" : f.logLevel,
    "log.pretty": f.pretty,
  };
  if (f.tlsCert || f.tlsCa) flags["nats.tls.enabled"] = true;
  return loadConfig({ file: f.config, flags });
}

/** The logger for a configuration, scrubbing its secrets. */
export function loggerFor(c: Config): Logger {
  return createLogger({
    level: c.log.level,
    pretty: c.log.pretty,
    secrets: [c.openai.api_key, c.http.token],
  });
}

/** Loads config, connects, runs `fn` with a client, and closes. */
export async function withClient<T>(
  f: CommonFlags,
  fn: (client: ProxyClient, config: Config, log: Logger) => Promise<T>,
): Promise<T> {
  const { config, warnings } = configFrom(f);
  const log = loggerFor(config);
  for (const w of warnings) log.warn(w);
  const nc = await connectNats(config.nats, log, `${config.nats.name}-cli`);
  const client = await createClient(nc, namesFromConfig(config));
  try {
    return await fn(client, config, log);
  } finally {
    await client.close();
  }
}

/**
 * `--priority` and `--tenant` as client options; a bad priority is a usage error.
 * The tenant is checked against the deployed tenants at submission.
 */
export function laneOptions(
  f: { priority?: string; tenant?: string },
  defaultPriority: Priority,
): { priority: Priority; tenant?: string } {
  const p = f.priority ?? defaultPriority;
  if (!isPriority(p)) throw new CliError(`--priority: ${priorityProblem(p)}`, 2);
  return { priority: p, ...(f.tenant !== undefined ? { tenant: f.tenant } : {}) };
}

/** A user-facing failure: printed as one line, exit code 1 (or as given). */
export class CliError extends Error {
  override readonly name = "CliError";
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

const USER_ERRORS = new Set([
  "ConfigError",
  "NatsConnectError",
  "ClientError",
  "RequestTimeoutError",
  "StreamsError",
  "CliError",
  "RequestError",
  "ResumeError",
]);

/** Wraps an action: user errors become one line on stderr, never a stack trace. */
export function action<A extends unknown[]>(
  fn: (...args: A) => Promise<void>,
): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (e) {
      const err = e as Error & { exitCode?: number };
      const known = USER_ERRORS.has(err.name);
      const text = known ? err.message : `unexpected error: ${err.message ?? String(e)}`;
      process.stderr.write(
        `nats-openai-proxy: ${scrub(text, [process.env.OPENAI_API_KEY ?? ""])}\n`,
      );
      if (!known && process.env.DEBUG_STACK) process.stderr.write(`${scrub(err.stack ?? "")}\n`);
      process.exitCode = err.exitCode ?? 1;
    }
  };
}
