/**
 * `request`: like `nats request openai_requests "..."`, but durable: the request goes
 * into the work queue with an inbox as Reply-To, and the reply is printed.
 */
import { Command } from "commander";
import type { ResultView } from "../protocol/result.js";
import {
  action,
  addCommonOptions,
  CliError,
  laneOptions,
  withClient,
  type CommonFlags,
} from "./common.js";
import { readInput } from "./input.js";

interface RequestFlags extends CommonFlags {
  json?: string;
  timeout: string;
  stream?: boolean;
  id?: string;
  priority?: string;
  tenant?: string;
}

/** Prints a reply: the text, or the ChatCompletion JSON; an error result fails. */
export function printResult(r: ResultView): void {
  if (!r.ok) throw new CliError(`error ${r.code}: ${r.error}`);
  process.stdout.write(r.body.endsWith("\n") ? r.body : `${r.body}\n`);
}

export function requestCommand(): Command {
  const cmd = new Command("request")
    .description("send a request and wait for its reply")
    .argument("[prompt]", "the prompt (text request)");
  addCommonOptions(cmd)
    .option("--json <file>", "Chat Completions params as JSON ('-' for stdin)")
    .option("--timeout <ms>", "how long to wait for the reply", "60000")
    .option("--stream", "print tokens as they arrive (JSON requests get stream: true)")
    .option("--id <id>", "request id (default: a fresh one)")
    .option("--priority <p>", "high, normal or low (default high: someone is waiting)")
    .option("--tenant <t>", "who is served and charged (default: default)")
    .action(
      action(async (prompt: string | undefined, f: RequestFlags) => {
        const input = readInput(prompt, f.json);
        const timeoutMs = Number(f.timeout);
        if (!Number.isFinite(timeoutMs) || timeoutMs <= 0)
          throw new CliError(`--timeout must be a positive number of ms, got ${f.timeout}`, 2);
        await withClient(f, async (client) => {
          if (f.stream) {
            const params =
              typeof input === "string" ? { messages: [{ role: "user", content: input }] } : input;
            const it = client.stream(params, {
              timeoutMs,
              ...(f.id ? { id: f.id } : {}),
              ...laneOptions(f, "high"),
            });
            for (;;) {
              const n = await it.next();
              if (n.done) {
                if (!n.value.ok) throw new CliError(`error ${n.value.code}: ${n.value.error}`);
                process.stdout.write("\n");
                return;
              }
              const delta = (n.value as { choices?: { delta?: { content?: string } }[] })
                .choices?.[0]?.delta?.content;
              if (delta) process.stdout.write(delta);
            }
          }
          printResult(
            await client.request(input, {
              timeoutMs,
              ...(f.id ? { id: f.id } : {}),
              ...laneOptions(f, "high"),
            }),
          );
        });
      }),
    );
  return cmd;
}
