/**
 * Printing a streamed answer (`request --stream`, `request --resume`) so that what ends
 * up on stdout is always one complete answer, never two attempts spliced: on a terminal
 * the text appears as it comes and a restart erases it; piped, each attempt's text is
 * held back and written whole when the answer ends (a pipe cannot take text back).
 */
import { chunkText, isStreamRestart } from "../protocol/stream.js";
import type { ResultView } from "../protocol/result.js";
import { CliError } from "./common.js";

/** Prints the events of `stream()` / `resume()` and fails on an error reply. */
export async function printStream(
  it: AsyncGenerator<unknown, ResultView>,
  out: NodeJS.WriteStream = process.stdout,
): Promise<void> {
  const tty = out.isTTY === true;
  let held = "";
  let printed = 0;
  if (tty) out.write("\x1b7"); // save the cursor: a restart comes back here
  for (;;) {
    const n = await it.next();
    if (n.done) {
      const r = n.value;
      if (!r.ok) throw new CliError(`error ${r.code}: ${r.error}`);
      // Nothing streamed (a resumed request whose stream is gone): print the answer itself.
      const text =
        printed === 0 && held === ""
          ? (r.completion?.choices?.[0]?.message?.content ?? (r.completion ? "" : r.body))
          : held;
      out.write(text.endsWith("\n") ? text : `${text}\n`);
      return;
    }
    if (isStreamRestart(n.value)) {
      process.stderr.write(`attempt ${n.value.attempt} restarted the answer\n`);
      held = "";
      if (tty && printed > 0) out.write("\x1b8\x1b[J");
      printed = 0;
      continue;
    }
    const t = chunkText(n.value);
    if (t === "") continue;
    if (tty) {
      out.write(t);
      printed += t.length;
    } else held += t;
  }
}
