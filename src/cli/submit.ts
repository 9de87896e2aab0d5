/**
 * `submit`: fire and forget. Prints the request id alone on stdout; a resubmitted
 * id is reported as a duplicate on stderr and is not an error.
 */
import { Command } from "commander";
import { action, addCommonOptions, CliError, withClient, type CommonFlags } from "./common.js";
import { readInput } from "./input.js";
import { printResult } from "./request.js";

interface SubmitFlags extends CommonFlags {
  json?: string;
  id?: string;
  wait?: boolean;
  timeout?: string;
}

export function submitCommand(): Command {
  const cmd = new Command("submit")
    .description("queue a request and print its id")
    .argument("[prompt]", "the prompt (text request)");
  addCommonOptions(cmd)
    .option("--json <file>", "Chat Completions params as JSON ('-' for stdin)")
    .option("--id <id>", "request id (default: a fresh one)")
    .option("--wait", "wait for the result and print it after the id")
    .option("--timeout <ms>", "with --wait: give up after this long")
    .action(
      action(async (prompt: string | undefined, f: SubmitFlags) => {
        const input = readInput(prompt, f.json);
        await withClient(f, async (client) => {
          const s = await client.submit(input, f.id ? { id: f.id } : {});
          process.stdout.write(`${s.id}\n`);
          if (s.duplicate)
            process.stderr.write(
              `duplicate: request ${s.id} was already accepted; not queued again\n`,
            );
          if (f.wait) {
            const timeoutMs = f.timeout ? Number(f.timeout) : undefined;
            const r = await client.result(s.id, {
              wait: true,
              ...(timeoutMs ? { timeoutMs } : {}),
            });
            if (!r)
              throw new CliError(
                `no result for ${s.id} within ${timeoutMs} ms; it is still queued`,
              );
            printResult(r);
          }
        });
      }),
    );
  return cmd;
}
