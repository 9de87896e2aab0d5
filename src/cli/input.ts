/**
 * Reads the request a verb was given: a prompt argument or a `--json` params file.
 */
import { readFileSync } from "node:fs";
import type { RequestInput } from "../client/client.js";
import { CliError } from "./common.js";

export function readInput(prompt: string | undefined, jsonFile: string | undefined): RequestInput {
  if (prompt !== undefined && jsonFile !== undefined)
    throw new CliError("give either a prompt or --json, not both", 2);
  if (jsonFile !== undefined) {
    let text: string;
    try {
      text = jsonFile === "-" ? readFileSync(0, "utf8") : readFileSync(jsonFile, "utf8");
    } catch (e) {
      throw new CliError(
        `--json ${jsonFile}: ${(e as NodeJS.ErrnoException).code === "ENOENT" ? "file not found" : (e as Error).message}`,
      );
    }
    try {
      return JSON.parse(text) as Exclude<RequestInput, string>;
    } catch (e) {
      throw new CliError(`--json ${jsonFile}: invalid JSON: ${(e as Error).message}`);
    }
  }
  if (prompt === undefined || prompt === "")
    throw new CliError('give a prompt ("...") or --json params.json', 2);
  return prompt;
}
