// Small SVG line charts of one GPU figure over time: a gap in the data stays a gap in the line.
const NS = "http://www.w3.org/2000/svg";
const W = 320, H = 130, LEFT = 36, RIGHT = 8, TOP = 10, BOTTOM = 22;
const short = new Intl.DateTimeFormat(undefined, {month: "numeric", day: "numeric", hour: "2-digit", minute: "2-digit"});

function svg(tag, attrs = {}, textContent) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (textContent !== undefined) node.textContent = textContent;
  return node;
}

/**
 * points: [{t: ms, v: number|null}] oldest first; start/end: ms; step: seconds between buckets.
 * yMax: the top of the scale at least (100 for percentages); limit: a dashed warning line.
 */
export function lineChart({label, unit, points, start, end, step, yMax = 0, limit = null}) {
  const values = points.filter((p) => p.v !== null && p.v !== undefined);
  const top = Math.max(yMax, limit || 0, ...values.map((p) => p.v)) || 1;
  const x = (t) => LEFT + ((t - start) / Math.max(1, end - start)) * (W - LEFT - RIGHT);
  const y = (v) => TOP + (1 - v / top) * (H - TOP - BOTTOM);
  const latest = values.length ? values[values.length - 1].v : null;
  const peak = values.length ? Math.max(...values.map((p) => p.v)) : null;
  const summary = values.length
    ? `${label}: latest ${round(latest)} ${unit}, peak ${round(peak)} ${unit}, ${values.length} points`
    : `${label}: no samples in this range`;
  const chart = svg("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": summary, class: "chart",
    "data-count": values.length, "data-latest": latest ?? "", "data-peak": peak ?? ""});
  chart.append(svg("title", {}, summary));
  for (const v of [0, top / 2, top]) {
    chart.append(svg("line", {x1: LEFT, x2: W - RIGHT, y1: y(v), y2: y(v), class: "grid"}));
    chart.append(svg("text", {x: LEFT - 4, y: y(v) + 4, "text-anchor": "end", class: "tick"}, `${round(v)}`));
  }
  chart.append(svg("text", {x: LEFT, y: H - 6, class: "tick"}, short.format(start)));
  chart.append(svg("text", {x: W - RIGHT, y: H - 6, "text-anchor": "end", class: "tick"}, short.format(end)));
  if (limit !== null) chart.append(svg("line", {x1: LEFT, x2: W - RIGHT, y1: y(limit), y2: y(limit), class: "limit"}));
  // A new segment wherever a bucket is missing, so silence never reads as a straight line.
  let d = "";
  let previous = null;
  for (const p of values) {
    d += `${previous !== null && p.t - previous <= step * 1000 * 1.5 ? "L" : "M"}${x(p.t).toFixed(1)} ${y(p.v).toFixed(1)}`;
    previous = p.t;
  }
  if (d) chart.append(svg("path", {d, class: "line"}));
  for (const [i, p] of values.entries()) {
    const alone = (i === 0 || p.t - values[i - 1].t > step * 1500) && (i === values.length - 1 || values[i + 1].t - p.t > step * 1500);
    if (alone) chart.append(svg("circle", {cx: x(p.t), cy: y(p.v), r: 2, class: "dot"}));
  }
  return chart;
}

function round(v) {
  return Math.abs(v) >= 10 || Number.isInteger(v) ? Math.round(v).toString() : v.toFixed(1);
}
