/**
 * CLI for dev-openai, the LOCAL TEST DOUBLE of the OpenAI API (not OpenAI).
 *
 *   tsx src/dev-openai/main.ts --port 8787 --latency 50 --rpm 600 --port-file .data/dev-openai.port
 *
 * stdout carries only the base URL so scripts can capture it; everything human goes to stderr.
 */
import { renameSync, rmSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { DEV_OPENAI_NOTICE, startDevOpenAI } from "./server.js";
import type { DevOpenAIOptions } from "./server.js";

const USAGE = `usage: dev-openai [options]   (${DEV_OPENAI_NOTICE})

  --host H           interface to bind (default 127.0.0.1)
  --port N           port to bind (default 0 = any free port)
  --latency MS       fixed latency per chat call (default 0)
  --rpm N            requests-per-minute limit (default none)
  --tpm N            tokens-per-minute limit (default none)
  --api-key K        require "Authorization: Bearer K"
  --stream-delay MS  delay between streamed SSE chunks (default 0)
  --models A,B,...   comma-separated list of known models
  --port-file F      write the bound port to F once listening
  -h, --help         show this help
`;

function fail(message: string): never {
  process.stderr.write(`dev-openai: ${message}\n\n${USAGE}`);
  process.exit(2);
}

function num(name: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const v = Number(raw);
  if (raw.trim() === "" || !Number.isFinite(v) || v < 0) {
    fail(`--${name} expects a non-negative number, got "${raw}"`);
  }
  return v;
}

/** Parses argv, starts the test double and keeps it running until SIGTERM/SIGINT. */
async function main(argv: string[]): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        host: { type: "string" },
        port: { type: "string" },
        latency: { type: "string" },
        rpm: { type: "string" },
        tpm: { type: "string" },
        "api-key": { type: "string" },
        "stream-delay": { type: "string" },
        models: { type: "string" },
        "port-file": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (err) {
    fail(err instanceof Error ? err.message : String(err));
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }

  const port = num("port", values.port);
  if (port !== undefined && (!Number.isInteger(port) || port > 65535)) {
    fail(`--port expects an integer 0..65535, got "${values.port}"`);
  }
  const opts: DevOpenAIOptions = {
    host: values.host,
    port,
    latencyMs: num("latency", values.latency),
    rpm: num("rpm", values.rpm),
    tpm: num("tpm", values.tpm),
    apiKey: values["api-key"],
    streamChunkDelayMs: num("stream-delay", values["stream-delay"]),
    models: values.models
      ?.split(",")
      .map((m) => m.trim())
      .filter((m) => m !== ""),
  };

  const srv = await startDevOpenAI(opts);
  const portFile = values["port-file"];
  if (portFile !== undefined) {
    // Write-then-rename so a Makefile polling for the file never reads it half-written.
    const tmp = `${portFile}.${process.pid}.tmp`;
    writeFileSync(tmp, `${srv.port}\n`);
    renameSync(tmp, portFile);
  }
  process.stderr.write(`dev-openai: ${DEV_OPENAI_NOTICE} listening on ${srv.url}\n`);
  const host = opts.host ?? "127.0.0.1";
  if (host !== "127.0.0.1" && host !== "localhost" && host !== "::1") {
    process.stderr.write(
      `dev-openai: warning: bound to ${host}, not loopback; this test double has no real security\n`,
    );
  }
  process.stdout.write(`${srv.url}\n`);

  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`dev-openai: ${signal} received, shutting down the test double\n`);
    // A stale port file would point the next run at a dead port.
    if (portFile !== undefined) rmSync(portFile, { force: true });
    srv.close().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`dev-openai: error while closing: ${String(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`dev-openai: failed to start: ${String(err)}\n`);
  process.exit(1);
});
