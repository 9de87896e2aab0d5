/**
 * W3C Trace Context on NATS headers: `traceparent` (and `tracestate`) as HTTP carries them.
 * A request keeps its caller's; the shim, the CLI and the client library start one when
 * there is none. Pure: parsing, formatting and header access.
 */
import { randomBytes } from "node:crypto";
import { Match, type MsgHdrs } from "@nats-io/transport-node";
import { H } from "./headers.js";

export interface TraceParent {
  /** 32 lower-case hex digits, not all zero */
  traceId: string;
  /** 16 lower-case hex digits, not all zero: the caller's span */
  spanId: string;
  /** trace flags; bit 0 = sampled */
  flags: number;
}

const RE = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/** The parsed header, or undefined when it is absent or invalid (then a new trace starts). */
export function parseTraceparent(v: string | undefined): TraceParent | undefined {
  const m = RE.exec((v ?? "").trim());
  if (!m) return undefined;
  const [, version, traceId, spanId, flags, rest] = m;
  // Version ff is forbidden; version 00 has exactly four fields; later ones may add more.
  if (version === "ff" || (version === "00" && rest !== undefined)) return undefined;
  if (/^0+$/.test(traceId!) || /^0+$/.test(spanId!)) return undefined;
  return { traceId: traceId!, spanId: spanId!, flags: parseInt(flags!, 16) };
}

/** `00-<trace id>-<span id>-<flags>` */
export function formatTraceparent(t: TraceParent): string {
  return `00-${t.traceId}-${t.spanId}-${(t.flags & 0xff).toString(16).padStart(2, "0")}`;
}

/** A new, sampled trace: what a client starts when its caller gave none. */
export function newTraceparent(): string {
  return formatTraceparent({
    traceId: randomBytes(16).toString("hex"),
    spanId: randomBytes(8).toString("hex"),
    flags: 1,
  });
}

/** A header's value whatever its case (nats.go canonicalises names to `Traceparent`). */
function get(h: MsgHdrs | undefined, k: string): string {
  return h?.values(k, Match.IgnoreCase)[0] ?? "";
}

/** The trace headers of a message: a valid traceparent and its tracestate, or undefined. */
export function traceHeaders(
  h: MsgHdrs | undefined,
): { traceparent: string; tracestate: string; parent: TraceParent } | undefined {
  const raw = get(h, H.traceparent);
  if (raw === "") return undefined;
  const parent = parseTraceparent(raw);
  if (!parent) return undefined;
  return { traceparent: raw.trim(), tracestate: get(h, H.tracestate), parent };
}

/**
 * Starts a trace on outgoing request headers when they carry no valid traceparent (an
 * invalid one and its tracestate are replaced, as W3C asks).
 */
export function ensureTraceparent(h: MsgHdrs): void {
  if (traceHeaders(h)) return;
  h.delete(H.traceparent, Match.IgnoreCase);
  h.delete(H.tracestate, Match.IgnoreCase);
  h.set(H.traceparent, newTraceparent());
}
