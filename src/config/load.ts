/**
 * Loads the configuration once, at the edge: defaults < file < environment < flags.
 * Every error names the key and where it came from; nothing returned is mutable.
 */
import { readFileSync, statSync } from "node:fs";
import { parseDocument } from "yaml";
import {
  DEFAULT_LANE_WEIGHTS,
  DEFAULT_TENANT,
  PRIORITIES,
  isPriority,
  tenantProblem,
} from "../protocol/lanes.js";
import { SCHEMA, type Config, type Leaf } from "./schema.js";

/** A configuration problem: the message names the key and the file, flag or variable. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

export const DEFAULT_CONFIG_FILE = "config/config.yaml";

export interface LoadOptions {
  /** `--config`: must exist when given */
  file?: string | undefined;
  /** used when `file` is not given, and only if it exists */
  defaultFile?: string;
  env?: Record<string, string | undefined>;
  /** dotted key → raw flag value */
  flags?: Record<string, unknown>;
}

export interface Loaded {
  config: Config;
  /** non-fatal findings, such as a key file others can read */
  warnings: string[];
}

/**
 * Builds the configuration.
 * @throws ConfigError naming the key and its source
 */
export function loadConfig(opts: LoadOptions = {}): Loaded {
  const values = new Map<string, unknown>();
  for (const [k, leaf] of Object.entries(SCHEMA)) values.set(k, leaf.default);
  const warnings: string[] = [];
  let source = "defaults";

  const file = opts.file ?? existing(opts.defaultFile ?? DEFAULT_CONFIG_FILE);
  if (file !== undefined) {
    source = file;
    const fromFile = readYaml(file);
    for (const [k, v] of fromFile) values.set(k, coerce(k, v, `${file}`, false));
    if ((fromFile.get("openai.api_key") ?? "") !== "" && othersCanRead(file)) {
      warnings.push(
        `${file} holds openai.api_key and is readable by other users: chmod 600 ${file}`,
      );
    }
  }
  const env = opts.env ?? process.env;
  for (const [k, leaf] of Object.entries(SCHEMA)) {
    for (const name of leaf.env ?? []) {
      const v = env[name];
      if (v !== undefined && v !== "") {
        values.set(k, coerce(k, v, `environment variable ${name}`, true));
        break;
      }
    }
  }
  for (const [k, v] of Object.entries(opts.flags ?? {})) {
    if (v === undefined) continue;
    if (!Object.hasOwn(SCHEMA, k))
      throw new ConfigError(`unknown configuration key "${k}" (from a flag)`);
    values.set(k, coerce(k, v, `flag for ${k}`, true));
  }
  return { config: build(values, source), warnings };
}

function existing(path: string): string | undefined {
  try {
    return statSync(path).isFile() ? path : undefined;
  } catch {
    return undefined;
  }
}

function othersCanRead(path: string): boolean {
  try {
    return (statSync(path).mode & 0o044) !== 0;
  } catch {
    return false;
  }
}

function readYaml(file: string): Map<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why =
      code === "ENOENT" ? "file not found" : code === "EACCES" ? "permission denied" : String(code);
    throw new ConfigError(`cannot read config file ${file}: ${why}`);
  }
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const line = e.linePos?.[0]?.line;
    throw new ConfigError(
      `config file ${file}${line ? ` line ${line}` : ""}: invalid YAML: ${e.message.split("\n")[0]}`,
    );
  }
  const root: unknown = doc.toJS();
  const out = new Map<string, unknown>();
  if (root === null || root === undefined) return out;
  if (!isPlainObject(root))
    throw new ConfigError(
      `config file ${file}: the top level must be a mapping of sections (nats, openai, …)`,
    );
  walk(root, "", file, out);
  return out;
}

function walk(
  obj: Record<string, unknown>,
  prefix: string,
  file: string,
  out: Map<string, unknown>,
) {
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (Object.hasOwn(SCHEMA, key)) {
      if (v !== null && v !== undefined) out.set(key, v);
      continue;
    }
    const isSection = Object.keys(SCHEMA).some((s) => s.startsWith(`${key}.`));
    if (isSection && isPlainObject(v)) {
      walk(v, key, file, out);
    } else if (isSection && (v === null || v === undefined)) {
      continue; // an empty section, e.g. "tls:" with everything commented out
    } else if (isSection) {
      throw new ConfigError(`${file}: "${key}" must be a mapping, got ${typeName(v)}`);
    } else {
      throw new ConfigError(`${file}: unknown key "${key}"${suggest(key)}`);
    }
  }
}

function suggest(key: string): string {
  const leaf = key.split(".").pop() ?? key;
  const near = Object.keys(SCHEMA).find((k) => k.endsWith(`.${leaf}`));
  return near ? ` (did you mean "${near}"?)` : "";
}

/** Converts a raw value to the leaf's type; `fromString` allows "64" for numbers etc. */
function coerce(key: string, v: unknown, where: string, fromString: boolean): unknown {
  const leaf: Leaf = SCHEMA[key]!;
  const bad = (what: string) =>
    new ConfigError(`${where}: "${key}" must be ${what}, got ${typeName(v)}`);
  switch (leaf.type) {
    case "string": {
      if (typeof v !== "string") throw bad("a string");
      if (leaf.oneOf && !leaf.oneOf.includes(v)) throw bad(`one of ${leaf.oneOf.join(", ")}`);
      return v;
    }
    case "strings": {
      if (typeof v === "string")
        return v
          .split(",")
          .map((s) => s.trim())
          .filter(Boolean);
      if (Array.isArray(v) && v.every((s) => typeof s === "string")) return v;
      throw bad("a string or a list of strings");
    }
    case "number": {
      let n = v;
      if (fromString && typeof v === "string" && v.trim() !== "") n = Number(v);
      if (typeof n !== "number" || !Number.isFinite(n)) throw bad("a number");
      if (leaf.min !== undefined && n < leaf.min) throw bad(`a number ≥ ${leaf.min}`);
      return n;
    }
    case "limits": {
      let obj = v;
      if (fromString && typeof v === "string") {
        try {
          obj = JSON.parse(v);
        } catch {
          throw bad('JSON such as {"gpt-4o-mini":{"rpm":600,"tpm":200000}}');
        }
      }
      if (!isPlainObject(obj)) throw bad("a mapping of model → {rpm, tpm}");
      for (const [model, l] of Object.entries(obj)) {
        if (!isPlainObject(l))
          throw new ConfigError(
            `${where}: "${key}.${model}" must be a mapping with rpm and/or tpm`,
          );
        for (const [k, n] of Object.entries(l)) {
          if (k !== "rpm" && k !== "tpm")
            throw new ConfigError(`${where}: unknown key "${key}.${model}.${k}" (use rpm or tpm)`);
          if (typeof n !== "number" || !(n > 0))
            throw new ConfigError(
              `${where}: "${key}.${model}.${k}" must be a positive number, got ${typeName(n)}`,
            );
        }
      }
      return obj;
    }
    case "lanes":
      return parseLanes(key, parseJsonFlag(v, fromString, bad, '{"high":{"weight":8}}'), where);
    case "tenants":
      return parseTenants(
        key,
        parseJsonFlag(v, fromString, bad, '{"acme":{"weight":2,"max_concurrency":16}}'),
        where,
      );
    case "boolean": {
      if (typeof v === "boolean") return v;
      if (fromString && typeof v === "string") {
        if (/^(true|1|yes|on)$/i.test(v)) return true;
        if (/^(false|0|no|off)$/i.test(v)) return false;
      }
      throw bad("true or false");
    }
  }
}

function parseJsonFlag(
  v: unknown,
  fromString: boolean,
  bad: (what: string) => ConfigError,
  example: string,
): unknown {
  if (!fromString || typeof v !== "string") return v;
  try {
    return JSON.parse(v);
  } catch {
    throw bad(`JSON such as ${example}`);
  }
}

const TENANT_KEYS = ["weight", "max_concurrency", "rpm", "tpm", "max_queued"];

/** `lanes`: a mapping of priority → {weight}, merged over the defaults. */
function parseLanes(key: string, v: unknown, where: string): unknown {
  if (!isPlainObject(v))
    throw new ConfigError(`${where}: "${key}" must be a mapping of priority → {weight}`);
  const out: Record<string, { weight: number }> = {};
  for (const p of PRIORITIES) out[p] = { weight: DEFAULT_LANE_WEIGHTS[p] };
  for (const [p, l] of Object.entries(v)) {
    if (!isPriority(p))
      throw new ConfigError(`${where}: unknown lane "${key}.${p}" (use ${PRIORITIES.join(", ")})`);
    if (!isPlainObject(l) || Object.keys(l).some((k) => k !== "weight"))
      throw new ConfigError(`${where}: "${key}.${p}" must be a mapping with only "weight"`);
    const w = l.weight;
    if (typeof w !== "number" || !(w > 0))
      throw new ConfigError(
        `${where}: "${key}.${p}.weight" must be a positive number, got ${typeName(w)}`,
      );
    out[p] = { weight: w };
  }
  return out;
}

/** `tenants`: name → {weight, max_concurrency, rpm, tpm, max_queued}; `default` is added when missing. */
function parseTenants(key: string, v: unknown, where: string): unknown {
  if (!isPlainObject(v))
    throw new ConfigError(`${where}: "${key}" must be a mapping of tenant name → settings`);
  const out: Record<string, Record<string, number>> = {};
  for (const [name, t] of Object.entries(v)) {
    const problem = tenantProblem(name);
    if (problem) throw new ConfigError(`${where}: "${key}": ${problem}`);
    if (t !== null && t !== undefined && !isPlainObject(t))
      throw new ConfigError(
        `${where}: "${key}.${name}" must be a mapping (${TENANT_KEYS.join(", ")})`,
      );
    const s: Record<string, number> = { weight: 1 };
    for (const [k, n] of Object.entries(t ?? {})) {
      if (!TENANT_KEYS.includes(k))
        throw new ConfigError(
          `${where}: unknown key "${key}.${name}.${k}" (use ${TENANT_KEYS.join(", ")})`,
        );
      if (typeof n !== "number" || !(n > 0) || (k !== "weight" && !Number.isInteger(n)))
        throw new ConfigError(
          `${where}: "${key}.${name}.${k}" must be a positive ${k === "weight" ? "number" : "integer"}, got ${typeName(n)}`,
        );
      s[k] = n;
    }
    out[name] = s;
  }
  out[DEFAULT_TENANT] ??= { weight: 1 };
  return out;
}

function build(values: Map<string, unknown>, source: string): Config {
  const root: Record<string, unknown> = { source };
  for (const [k, v] of values) {
    const parts = k.split(".");
    let node = root;
    for (const p of parts.slice(0, -1)) {
      node[p] ??= {};
      node = node[p] as Record<string, unknown>;
    }
    node[parts.at(-1)!] = v;
  }
  return deepFreeze(root) as unknown as Config;
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === "object") {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "string") return `the string "${v.length > 40 ? v.slice(0, 40) + "…" : v}"`;
  if (typeof v === "object") return "a mapping";
  return `${typeof v} ${JSON.stringify(v) ?? typeof v}`;
}
