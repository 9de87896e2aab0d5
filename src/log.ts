/**
 * The process logger: pino JSON on stderr (stdout belongs to command output such as
 * `submit`'s id), with secrets scrubbed from every message and error.
 */
import { pino, type Logger } from "pino";
import { scrub } from "./config/redact.js";

export type { Logger } from "pino";

export interface LogOptions {
  level: string;
  pretty: boolean;
  /** secret values to scrub verbatim (API key, seed) */
  secrets?: readonly string[];
  name?: string;
  /** where lines go (default: stderr) */
  destination?: { write(s: string): void };
}

/** Creates the logger. Secrets are scrubbed from messages, errors and known fields. */
export function createLogger(o: LogOptions): Logger {
  const secrets = (o.secrets ?? []).filter((s) => s.length > 0);
  const clean = (s: string) => scrub(s, secrets);
  const options: pino.LoggerOptions = {
    level: o.level,
    name: o.name ?? "nats-openai-proxy",
    redact: {
      paths: ["api_key", "apiKey", "*.api_key", "*.apiKey", "seed", "*.seed", "creds", "*.creds"],
      censor: "[redacted]",
    },
    serializers: {
      err: (e: unknown) => {
        const s = pino.stdSerializers.err(e as Error);
        return {
          ...s,
          message: clean(s.message ?? ""),
          stack: clean(s.stack ?? ""),
        };
      },
    },
    hooks: {
      logMethod(args, method) {
        const cleaned = args.map((a: unknown) => (typeof a === "string" ? clean(a) : a));
        method.apply(this, cleaned as Parameters<typeof method>);
      },
    },
  };
  if (o.pretty) {
    return pino({
      ...options,
      transport: { target: "pino-pretty", options: { destination: 2, colorize: true } },
    });
  }
  // Synchronous writes: a crash (even SIGKILL) must not swallow the last lines.
  return pino(options, o.destination ?? pino.destination({ dest: 2, sync: true }));
}
