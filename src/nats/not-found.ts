/**
 * A JetStream lookup that found nothing: `404` from a message get or direct get (the
 * two APIs shape it differently, but both carry code "404").
 */
export function isNotFound(e: unknown): boolean {
  return (e as { code?: string } | null)?.code === "404";
}
