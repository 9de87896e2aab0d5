/**
 * Subject naming of the wire contract. A request id is always the last token of
 * `openai.requests.<id>`, `openai.results.<id>` and `openai.dlq.<id>`.
 */
import { nuid } from "@nats-io/transport-node";

/** Subject prefixes and the compat shim's core subject. */
export interface SubjectNames {
  readonly requests: string;
  readonly results: string;
  readonly dlq: string;
  readonly shim: string;
}

export const DEFAULT_SUBJECTS: SubjectNames = Object.freeze({
  requests: "openai.requests",
  results: "openai.results",
  dlq: "openai.dlq",
  shim: "openai_requests",
});

// Safe as a single subject token and as a file-name-ish identifier: no '.', '*', '>',
// whitespace or control characters, and short enough to sit inside a header.
const ID_RE = /^[A-Za-z0-9_\-:=+@~]{1,200}$/;

/** True when `id` can be used as a request id (one subject token, no wildcards). */
export function isValidId(id: string): boolean {
  return ID_RE.test(id);
}

/** Explains why an id is refused, naming what to fix. */
export function idProblem(id: string): string | undefined {
  if (id.length === 0) return "request id is empty";
  if (id.length > 200) return `request id is ${id.length} characters long; the limit is 200`;
  if (!isValidId(id))
    return `request id "${printable(id)}" may only contain letters, digits and _ - : = + @ ~ (no '.', '*', '>' or whitespace)`;
  return undefined;
}

/**
 * Why a Reply-To subject is refused, or undefined when it is acceptable. The proxy
 * publishes replies with its own permissions, so a reply may not go to system or
 * JetStream API subjects (`$…`) nor into the proxy's own streams, where it would forge
 * results, dead letters or requests.
 */
export function replyToProblem(
  subject: string,
  reservedPrefixes: readonly string[],
): string | undefined {
  if (subject.length > 512) return "Reply-To is longer than 512 characters";
  // eslint-disable-next-line no-control-regex
  if (/[\s*>\x00-\x1f]/.test(subject) || subject.split(".").some((t) => t === "")) {
    return `Reply-To "${printable(subject)}" is not a valid subject (no wildcards, whitespace or empty tokens)`;
  }
  if (subject.startsWith("$"))
    return `Reply-To "${printable(subject)}" is a system subject; reply to an inbox or an application subject`;
  for (const p of reservedPrefixes) {
    if (subject === p || subject.startsWith(`${p}.`)) {
      return `Reply-To "${printable(subject)}" is inside the proxy's own subjects (${p}.>); reply to an inbox or an application subject`;
    }
  }
  return undefined;
}

/** A fresh, unique, subject-safe request id. */
export function newId(): string {
  return nuid.next();
}

/** `<prefix>.<id>` */
export function subjectFor(prefix: string, id: string): string {
  return `${prefix}.${id}`;
}

/** The request id carried by a request, result or dead-letter subject. */
export function idFromSubject(subject: string): string {
  const i = subject.lastIndexOf(".");
  return i < 0 ? subject : subject.slice(i + 1);
}

function printable(s: string): string {
  const cut = s.length > 60 ? `${s.slice(0, 60)}…` : s;
  // eslint-disable-next-line no-control-regex
  return cut.replace(/[\x00-\x1f\x7f]/g, "?");
}
