/**
 * Sparklines as inline SVG: one area or line per series over the window's buckets, scaled
 * to the series' maximum. Built with DOM calls, never from markup.
 */

const NS = "http://www.w3.org/2000/svg";
const W = 300;
const H = 64;

export interface Series {
  values: readonly (number | undefined)[];
  /** CSS class: "area" (filled), "line", "line2" or "err" (bars) */
  kind: "area" | "line" | "line2" | "err";
}

function el<K extends keyof SVGElementTagNameMap>(name: K, attrs: Record<string, string>) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

/** An SVG of the series, all on one scale (the largest value of any of them). */
export function sparkline(series: readonly Series[], title: string): SVGSVGElement {
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
  const t = el("title", {});
  t.textContent = title;
  svg.append(t);
  let max = 0;
  for (const s of series) for (const v of s.values) if (v !== undefined && v > max) max = v;
  if (max === 0) max = 1;
  const n = Math.max(1, (series[0]?.values.length ?? 1) - 1);
  const x = (i: number) => ((i / n) * W).toFixed(1);
  const y = (v: number) => (H - 2 - (v / max) * (H - 4)).toFixed(1);
  for (const s of series) {
    if (s.kind === "err") {
      const bw = W / (n + 1);
      s.values.forEach((v, i) => {
        if (!v) return;
        const h = Math.max(1, (v / max) * (H - 4));
        svg.append(
          el("rect", {
            class: "err",
            x: ((i / n) * W - bw / 2).toFixed(1),
            y: (H - h).toFixed(1),
            width: bw.toFixed(1),
            height: h.toFixed(1),
          }),
        );
      });
      continue;
    }
    // Gaps (no sample in a bucket) split a line; an area treats them as 0.
    const parts: string[] = [];
    let open = false;
    s.values.forEach((v, i) => {
      if (v === undefined && s.kind !== "area") {
        open = false;
        return;
      }
      parts.push(`${open ? "L" : "M"}${x(i)},${y(v ?? 0)}`);
      open = true;
    });
    if (parts.length === 0) continue;
    // A point with no neighbour draws no line: mark it.
    if (s.kind !== "area")
      s.values.forEach((v, i) => {
        if (v === undefined || s.values[i - 1] !== undefined || s.values[i + 1] !== undefined)
          return;
        svg.append(
          el("rect", {
            class: s.kind === "line" ? "dot" : "dot2",
            x: (Number(x(i)) - 2).toFixed(1),
            y: (Number(y(v)) - 2).toFixed(1),
            width: "4",
            height: "4",
          }),
        );
      });
    const d = s.kind === "area" ? `${parts.join(" ")} L${W},${H} L0,${H} Z` : parts.join(" ");
    svg.append(
      el("path", {
        class: s.kind,
        d,
        "vector-effect": "non-scaling-stroke",
      }),
    );
    if (s.kind === "area")
      svg.append(
        el("path", { class: "line", d: parts.join(" "), "vector-effect": "non-scaling-stroke" }),
      );
  }
  return svg;
}
