/**
 * `serve`: run the proxy until SIGTERM/SIGINT. The first signal stops intake,
 * finishes in-flight work within the grace period and exits 0; a second exits at once.
 */
import { Command } from "commander";
import { redactConfig } from "../config/redact.js";
import { startProxy } from "../main.js";
import { action, addCommonOptions, configFrom, loggerFor, type CommonFlags } from "./common.js";

export function serveCommand(): Command {
  const cmd = new Command("serve").description(
    "consume the request queue, call the API, store and deliver replies; serve the compat subject",
  );
  addCommonOptions(cmd)
    .option("--subject <subject>", "compat core subject (nats.subject)")
    .option("--openai-api-key <key>", "API key (openai.api_key, OPENAI_API_KEY)")
    .option(
      "--openai-base-url <url>",
      "OpenAI-compatible base URL (openai.base_url, OPENAI_BASE_URL)",
    )
    .option("--engine <model>", "default model (openai.engine)")
    .option("--concurrency <n>", "requests handled at once (worker.concurrency)")
    .option("--http-port <port>", "metrics and health port, 0 = any (http.port)")
    .action(
      action(async (f: CommonFlags) => {
        const { config, warnings } = configFrom(f);
        const log = loggerFor(config);
        for (const w of warnings) log.warn(w);
        log.debug({ config: redactConfig(config) }, "configuration");
        const proxy = await startProxy(config, log);
        let signals = 0;
        await new Promise<void>((resolve) => {
          const onSignal = (sig: NodeJS.Signals) => {
            signals++;
            if (signals > 1) {
              log.warn(
                { signal: sig },
                "second signal: exiting now; unfinished requests will be redelivered",
              );
              log.flush();
              process.exit(1);
            }
            log.info({ signal: sig }, "stopping: no new requests, finishing in-flight work");
            void proxy.stop().then(resolve);
          };
          process.on("SIGTERM", onSignal);
          process.on("SIGINT", onSignal);
        });
        log.flush();
        process.exitCode = 0;
      }),
    );
  return cmd;
}
