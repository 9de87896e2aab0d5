/**
 * A progress bar on stderr (cli-progress) when stderr is a terminal; silent otherwise,
 * so logs and CI output stay clean.
 */
import cliProgress from "cli-progress";
import type { BatchProgress } from "../client/batch.js";
import { NO_PROGRESS } from "../client/batch.js";

export function progressBar(): BatchProgress {
  if (!process.stderr.isTTY) return NO_PROGRESS;
  let bar: cliProgress.SingleBar | undefined;
  return {
    start(total, label) {
      bar = new cliProgress.SingleBar(
        {
          stream: process.stderr,
          format: `${label} [{bar}] {percentage}% | {value}/{total} | {eta_formatted} left`,
          hideCursor: true,
          clearOnComplete: false,
        },
        cliProgress.Presets.shades_classic,
      );
      bar.start(total, 0);
    },
    tick(n = 1) {
      bar?.increment(n);
    },
    stop() {
      bar?.stop();
      bar = undefined;
    },
  };
}
