// One client: its system and GPUs now, per-GPU charts over a chosen range, daily rollups, recent heartbeats.
import {clearBanner, config, every, get, identity, mark, report} from "./api.js";
import {ago, badge, bytes, el, fillRows, num, text, timeEl} from "./fmt.js";
import {lineChart} from "./chart.js";

const REFRESH_MS = 5000;
const RECENT_BEATS = 20;
const clientId = new URLSearchParams(location.search).get("client_id") || "";
const SERIES = [
  {key: "temp", label: "Temperature", unit: "°C", peak: "temp_max", warn: true},
  {key: "usage", label: "Usage", unit: "%", peak: "usage_max", yMax: 100},
  {key: "mem_usage", label: "Memory", unit: "%", yMax: 100},
  {key: "power_usage", label: "Power", unit: "W", peak: "power_max"},
];
let range = {hours: 24};

async function loadNow() {
  const user = await identity();
  try {
    const [status, detail, beats] = await Promise.all([
      get("user/client_status_list", {user_id: user, client_id: clientId}),
      get("user/client_device_detail", {user_id: user, client_id: clientId}),
      get("user/client_health", {user_id: user, client_id: clientId, limit: RECENT_BEATS}),
    ]);
    clearBanner();
    const c = status.data.devices[0];
    if (c) {
      text(document.getElementById("client-name"), c.client_name);
      document.title = `${c.client_name} · gpuf-s`;
      const line = document.getElementById("client-status");
      line.className = `client-status status-${c.client_status}`;
      line.replaceChildren(badge(c.client_status), " · last seen ",
        c.last_online ? timeEl(c.last_online, ago(Date.parse(c.last_online), status.now)) : "never",
        ` · health ${c.health}% · days on record: ${c.uptime_days} · ${c.os_type || "unknown OS"}`);
    }
    const s = detail.data.system_info;
    document.getElementById("system").replaceChildren(...[
      ["CPU", num(s.cpu_usage, "%")], ["Memory", num(s.memory_usage, "%")], ["Disk", num(s.storage_usage, "%")],
      ["GPU memory", num(s.device_memsize, " MB")], ["Health", num(s.health, "%")], ["Days on record", num(s.uptime_days)],
    ].map(([name, value]) => el("div", {}, el("dt", {}, name), el("dd", {}, value))));
    fillRows(document.querySelector("#gpus tbody"), detail.data.device_info.map((g) => [
      `${g.device_index}`, g.name,
      g.temp >= config.tempWarning ? `⚠ ${num(g.temp, " °C")} hot` : num(g.temp, " °C"),
      num(g.usage, "%"), num(g.mem_usage, "%"), num(g.power_usage, " W"),
    ]), 6, "no GPU in the latest report");
    fillRows(document.querySelector("#beats tbody"), beats.data.map((b) => [
      timeEl(b.timestamp), num(b.cpu_usage, "%"), num(b.mem_usage, "%"), num(b.disk_usage, "%"),
      bytes(b.network_up), bytes(b.network_down),
    ]), 6);
  } catch (error) {
    report(error);
  }
}

async function loadDaily() {
  const user = await identity();
  try {
    const {data} = await get("user/client_monitor", {user_id: user, client_id: clientId});
    fillRows(document.querySelector("#daily tbody"), data.filter((r) => r.date).map((r) => [
      r.date, num(r.total_heartbeats), num(r.avg_cpu_usage, "%", 1), num(r.avg_memory_usage, "%", 1),
      num(r.avg_disk_usage, "%", 1), bytes(r.total_network_in_bytes), bytes(r.total_network_out_bytes),
      timeEl(r.last_heartbeat),
    ]), 8);
  } catch (error) {
    report(error);
  }
}

function iso(ms) {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

async function loadHistory() {
  const user = await identity();
  const end = range.end ?? Date.now();
  const start = range.start ?? end - range.hours * 3600_000;
  const summary = document.getElementById("history-summary");
  text(summary, "Loading…");
  let history;
  try {
    history = (await get("user/device_history", {user_id: user, client_id: clientId, start_date: iso(start), end_date: iso(end)})).data;
  } catch (error) {
    if (error.status === 404 || error.status === 400) {
      text(summary, `No history: ${error.message}`);
      document.getElementById("charts").replaceChildren();
      return;
    }
    report(error);
    return;
  }
  performance.mark("gpufs:history-data");
  const from = Date.parse(history.start), to = Date.parse(history.end);
  const figures = history.devices.map((gpu) => {
    const rows = gpu.points.map((p) => ({...p, t: Date.parse(p.time)}));
    const charts = SERIES.map((s) => lineChart({
      label: s.label, unit: s.unit, start: from, end: to, step: history.step_seconds, yMax: s.yMax || 0,
      limit: s.warn ? config.tempWarning : null, points: rows.map((p) => ({t: p.t, v: p[s.key]})),
    }));
    const peaks = SERIES.filter((s) => s.peak).map((s) => {
      const top = Math.max(...rows.map((p) => p[s.peak] ?? -Infinity));
      return Number.isFinite(top) ? `${s.label.toLowerCase()} peak ${num(top)} ${s.unit}` : null;
    }).filter(Boolean).join(", ");
    return el("figure", {class: "gpu-chart", "data-device-index": gpu.device_index},
      el("figcaption", {}, `GPU ${gpu.device_index} · ${gpu.name || "unknown"}${gpu.uuid ? ` · ${gpu.uuid}` : ""}`
        + (peaks ? ` — ${peaks}` : "")),
      el("div", {class: "chart-grid"}, ...charts));
  });
  document.getElementById("charts").replaceChildren(...figures);
  mark("gpufs:history-drawn");
  text(summary, figures.length
    ? `${figures.length} GPUs, one point per ${history.step_seconds / 60} min, ${new Date(from).toLocaleString()} to ${new Date(to).toLocaleString()}.`
    : "No GPU samples in this range.");
}

function localInput(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60_000);
  return d.toISOString().slice(0, 16);
}

const form = document.getElementById("range");
for (const button of form.querySelectorAll("button[data-hours]")) {
  button.addEventListener("click", () => {
    range = {hours: Number(button.dataset.hours)};
    for (const b of form.querySelectorAll("button[data-hours]")) b.setAttribute("aria-pressed", String(b === button));
    loadHistory();
  });
}
form.addEventListener("submit", (event) => {
  event.preventDefault();
  const start = new Date(document.getElementById("range-start").value).getTime();
  const end = new Date(document.getElementById("range-end").value).getTime();
  if (!(start < end)) {
    text(document.getElementById("history-summary"), "The range must start before it ends.");
    return;
  }
  range = {start, end};
  for (const b of form.querySelectorAll("button[data-hours]")) b.setAttribute("aria-pressed", "false");
  loadHistory();
});
document.getElementById("range-end").value = localInput(Date.now());
document.getElementById("range-start").value = localInput(Date.now() - 24 * 3600_000);

if (!/^[0-9a-fA-F]{32}$/.test(clientId)) {
  text(document.getElementById("client-name"), "No such client");
  text(document.getElementById("history-summary"), "The address names no client (client_id=).");
} else {
  every(REFRESH_MS, loadNow);
  loadDaily();
  loadHistory();
}
// A key entered again after a rejection: the one-off parts load again too.
document.addEventListener("gpufs:identity", () => {
  loadDaily();
  loadHistory();
});
