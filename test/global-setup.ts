/**
 * Once per test run: compile the operator page's browser modules (web/ → dist/web) when
 * they are missing or older than their sources, so tests running from src/ with tsx serve
 * the page as the build would.
 */
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

function stale(): boolean {
  const out = join(ROOT, "dist/web/main.js");
  if (!existsSync(out)) return true;
  const built = statSync(out).mtimeMs;
  const web = join(ROOT, "web");
  return readdirSync(web).some((f) => statSync(join(web, f)).mtimeMs > built);
}

export default function setup(): void {
  if (!stale()) return;
  execFileSync(
    process.execPath,
    [join(ROOT, "node_modules/typescript/bin/tsc"), "-p", join(ROOT, "web/tsconfig.json")],
    { stdio: "inherit", timeout: 120_000 },
  );
}
