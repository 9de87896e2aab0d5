/**
 * Keeps secrets out of logs, errors and debug output.
 */
import { SCHEMA, type Config } from "./schema.js";

const SECRET_PATTERNS: RegExp[] = [
  /\bsk-[A-Za-z0-9_*-]{3,}/g, // OpenAI keys, including the partly starred form the API echoes
  /\bS[A-Z][A-Z2-7]{50,}\b/g, // nkey seeds (base32, "S" + type)
  /-----BEGIN [A-Z ]*NKEY SEED-----[\s\S]*?------END [A-Z ]*NKEY SEED------/g,
  /Bearer\s+[A-Za-z0-9._~+/=-]{8,}/gi,
];

/** The configuration as it may be shown: every secret replaced by "[redacted]". */
export function redactConfig(c: Config): unknown {
  const copy = JSON.parse(JSON.stringify(c)) as Record<string, Record<string, unknown>>;
  for (const [k, leaf] of Object.entries(SCHEMA)) {
    if (!leaf.secret) continue;
    const [section, key] = k.split(".") as [string, string];
    const s = copy[section];
    if (s && s[key]) s[key] = "[redacted]";
  }
  return copy;
}

/**
 * Removes secrets from a text that may reach a log or the wire: the given values
 * verbatim, and anything shaped like an API key or an nkey seed.
 */
export function scrub(text: string, secrets: readonly string[] = []): string {
  let out = text;
  for (const s of secrets) {
    if (s.length >= 4) out = out.split(s).join("[redacted]");
  }
  for (const re of SECRET_PATTERNS) out = out.replace(re, "[redacted]");
  return out;
}
