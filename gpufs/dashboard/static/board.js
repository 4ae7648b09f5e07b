// The fleet board: live status of every client, what needs a look and why, refreshed every 5 s.
import {clearBanner, config, every, get, identity, mark, report, userId} from "./api.js";
import {ago, badge, el, num, text, timeEl} from "./fmt.js";

const REFRESH_MS = 5000;
const DETAIL_FETCHES = 4;  // in flight at once, so a large fleet's first load never floods the server

const fleet = document.getElementById("fleet");
const statusFilter = document.getElementById("filter-status");
const nameFilter = document.getElementById("filter-name");
const cards = new Map();  // client_id → {node, link, rest}
const details = new Map();  // client_id → {seen: last_online it was read at, gpus}
let registeredOffline = new Set();
let shown = [];
let serverNow = Date.now();

async function load() {
  const user = await identity();
  try {
    const [list, stat, offline] = await Promise.all([
      get("user/client_status_list", {user_id: user, status: statusFilter.value, name: nameFilter.value.trim()}),
      get("user/client_stat", {user_id: user}),
      // Registered offline: silence expected. Everyone else who is silent needs a look.
      get("user/client_list", {user_id: user, status: "offline"}),
    ]);
    clearBanner();
    registeredOffline = new Set(offline.data.devices.map((c) => c.client_id));
    serverNow = list.now;
    shown = list.data.devices;
    for (const [name, value] of Object.entries(stat.data)) {
      const dd = document.querySelector(`[data-stat="${name}"]`);
      if (dd) text(dd, `${value}${dd.dataset.unit || ""}`);
    }
    render();
    document.getElementById("updated").replaceChildren("Updated ", timeEl(new Date(serverNow).toISOString()), ".");
    mark("gpufs:board-rendered");
    await readDetails(user);
    mark("gpufs:board-gpus");
  } catch (error) {
    report(error);
  }
}

/** The GPUs of every shown client whose latest report is newer than the one read before. */
async function readDetails(user) {
  const stale = shown.filter((c) => c.last_online && details.get(c.client_id)?.seen !== c.last_online);
  async function worker() {
    for (let c = stale.shift(); c; c = stale.shift()) {
      const {data} = await get("user/client_device_detail", {user_id: user, client_id: c.client_id});
      details.set(c.client_id, {seen: c.last_online, gpus: data.device_info});
      const card = cards.get(c.client_id);
      if (card) {
        fill(card, c);
        summarize();
      }
    }
  }
  await Promise.all(Array.from({length: DETAIL_FETCHES}, worker));
}

function render() {
  const keep = new Set(shown.map((c) => c.client_id));
  for (const [id, card] of cards) {
    if (!keep.has(id)) {
      card.node.remove();
      cards.delete(id);
    }
  }
  shown.forEach((c, i) => {
    let card = cards.get(c.client_id);
    if (!card) {
      card = make(c);
      cards.set(c.client_id, card);
    }
    fill(card, c);  // a new card is filled before it joins the page: cheaper than in place
    if (fleet.children[i] !== card.node) fleet.insertBefore(card.node, fleet.children[i] || null);
  });
  summarize();
}

function summarize() {
  const warned = shown.filter((c) => cards.get(c.client_id)?.warned).length;
  text(document.getElementById("fleet-summary"),
    shown.length ? `${shown.length} client${shown.length === 1 ? "" : "s"} shown, ${warned} need a look.`
      : "No clients match.");
}

function make(c) {
  const params = new URLSearchParams({client_id: c.client_id});
  if (config.authMode !== "token") params.set("user_id", userId());
  const link = el("a", {href: `client?${params}`});
  const rest = el("div", {class: "card-body"});
  const node = el("li", {class: "card", "data-client-id": c.client_id}, el("h2", {}, link), rest);
  return {node, link, rest};
}

/** Write one client into its card, and whether it needs a look. */
function fill(card, c) {
  const live = c.client_status;
  const gpus = details.get(c.client_id)?.gpus;
  const silent = live === "offline";
  const warnings = [];
  if (live === "error") warnings.push("registered in error status");
  if (silent && !registeredOffline.has(c.client_id)) {
    warnings.push(c.last_online ? `silent: no heartbeat for ${ago(Date.parse(c.last_online), serverNow).replace(" ago", "")}`
      : "silent: no heartbeat since it was registered");
  }
  for (const g of gpus || []) {
    if (g.temp >= config.tempWarning) warnings.push(`GPU ${g.device_index} hot: ${g.temp} °C (limit ${config.tempWarning} °C)`);
  }
  text(card.link, c.client_name);
  card.node.className = `card status-${live}${warnings.length ? " warn" : ""}`;
  const seen = c.last_online ? timeEl(c.last_online, ago(Date.parse(c.last_online), serverNow)) : el("span", {}, "never");
  const parts = [
    el("p", {class: "status"}, badge(live),
      el("span", {class: "seen"}, "last seen ", seen)),
  ];
  if (warnings.length) {
    parts.push(el("ul", {class: "warnings", "aria-label": "Needs a look"},
      ...warnings.map((w) => el("li", {}, el("span", {"aria-hidden": "true"}, "⚠ "), w))));
  }
  const stale = silent ? " (last report)" : "";
  if (!c.last_online) {
    parts.push(el("p", {class: "muted"}, "No report yet."));
  } else {
    parts.push(el("p", {class: "figs"}, `health ${c.health}% · CPU ${c.cpu_usage}% · memory ${c.memory_usage}%`
      + ` · disk ${c.storage_usage}% · ${c.tflops} TFLOPS${stale}`));
    const list = gpus ? gpus.map((g) => el("li", {class: g.temp >= config.tempWarning ? "hot" : null},
      `GPU ${g.device_index} ${g.name}: ${num(g.temp, " °C")}, ${num(g.usage, "%")} used${stale}`))
      : [el("li", {class: "muted"}, c.device_name ? `${c.device_name} …` : "…")];
    parts.push(el("ul", {class: "gpus", "aria-label": "GPUs"}, ...(gpus && !gpus.length ? [el("li", {}, "no GPU")] : list)));
  }
  card.rest.replaceChildren(...parts);
  card.warned = warnings.length > 0;
}

let typing = null;
nameFilter.addEventListener("input", () => {
  clearTimeout(typing);
  typing = setTimeout(refresh, 300);
});
statusFilter.addEventListener("change", () => refresh());
document.getElementById("filters").addEventListener("submit", (event) => {
  event.preventDefault();
  refresh();
});

const refresh = every(REFRESH_MS, load);
