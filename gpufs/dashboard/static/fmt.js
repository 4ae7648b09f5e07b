// Building DOM from API values (always as text, never as HTML) and writing times and figures.

/** An element with attributes and text children; strings become text nodes, never markup. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function text(node, value) {
  if (node.textContent !== value) node.textContent = value;
}

const local = new Intl.DateTimeFormat(undefined, {dateStyle: "medium", timeStyle: "medium"});

/** "2026-12-06 20:31:05 UTC" for a title on hover. */
export function utc(iso) {
  return new Date(iso).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

/** A <time> in the browser's local time, UTC on hover. */
export function timeEl(iso, label) {
  if (!iso) return el("span", {class: "muted"}, "never");
  return el("time", {datetime: iso, title: utc(iso)}, label ?? local.format(new Date(iso)));
}

/** "45 s ago", "7 min ago", "3 h ago", "2 d ago" between two instants (ms). */
export function ago(thenMs, nowMs) {
  const s = Math.max(0, Math.round((nowMs - thenMs) / 1000));
  if (s < 120) return `${s} s ago`;
  if (s < 7200) return `${Math.floor(s / 60)} min ago`;
  if (s < 172800) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function num(value, unit = "", digits = 0) {
  if (value === null || value === undefined) return "–";
  return `${Number(value).toFixed(digits)}${unit}`;
}

export function bytes(value) {
  if (value === null || value === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let v = Number(value);
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}

/** Replace a table body's rows, or say there are none. */
export function fillRows(tbody, rows, columns, empty = "none yet") {
  tbody.replaceChildren();
  if (!rows.length) {
    tbody.append(el("tr", {}, el("td", {colspan: columns}, empty)));
    return;
  }
  for (const cells of rows) tbody.append(el("tr", {}, ...cells.map((c) => el("td", {}, c))));
}

// A symbol beside the word, so a status never rests on its colour alone.
const STATUS = {online: "●", offline: "○", maintenance: "◐", error: "✖"};

export function badge(status) {
  return el("span", {class: "badge"}, el("span", {"aria-hidden": "true"}, STATUS[status] || "?"), ` ${status}`);
}
