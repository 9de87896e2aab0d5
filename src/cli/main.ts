#!/usr/bin/env node
/**
 * The `nats-openai-proxy` command line.
 */
import { Command, CommanderError } from "commander";
import { normaliseArgv } from "./common.js";
import { dlqCommand } from "./dlq.js";
import { requestCommand } from "./request.js";
import { resultCommand } from "./result.js";
import { serveCommand } from "./serve.js";
import { streamsCommand } from "./streams.js";
import { submitCommand } from "./submit.js";

const program = new Command("nats-openai-proxy")
  .description("Durable OpenAI-compatible chat completions behind NATS JetStream")
  .version("0.1.0")
  .exitOverride()
  .configureOutput({ outputError: (s, write) => write(s) });
for (const c of [
  serveCommand(),
  requestCommand(),
  submitCommand(),
  resultCommand(),
  streamsCommand(),
  dlqCommand(),
]) {
  c.exitOverride();
  for (const sub of c.commands) sub.exitOverride();
  program.addCommand(c);
}

try {
  await program.parseAsync(normaliseArgv(process.argv));
} catch (e) {
  if (e instanceof CommanderError) {
    // help and version exit 0; usage errors exit 2
    process.exitCode = e.exitCode === 0 ? 0 : 2;
  } else {
    throw e;
  }
}
