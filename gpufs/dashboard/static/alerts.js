// Alerts of the user's fleet; "none yet" also when this server has no alerts endpoint.
import {clearBanner, every, get, identity, report} from "./api.js";
import {el, fillRows, num, text, timeEl} from "./fmt.js";

const state = document.getElementById("alert-state");

async function load() {
  const user = await identity();
  let rows = [];
  try {
    rows = (await get("user/alerts", {user_id: user, state: state.value})).data;
    clearBanner();
  } catch (error) {
    if (error.status !== 404) {
      report(error);
      return;
    }
    clearBanner();  // 404: a server without alerts has none to show
  }
  fillRows(document.querySelector("#alerts tbody"), rows.map((a) => [
    el("span", {class: `alert-${a.state}`}, a.state === "firing" ? "⚠ firing" : "✔ resolved"),
    a.condition, a.client_name, a.device_index === null ? "–" : `${a.device_index}`,
    timeEl(a.starts_at), a.ends_at ? timeEl(a.ends_at) : "–",
    a.value === null ? "–" : `${num(a.value, "", 1)}${a.threshold === null ? "" : ` (limit ${num(a.threshold, "", 0)})`}`,
    a.message,
  ]), 8, "none yet");
  text(document.getElementById("alerts-summary"), rows.length ? `${rows.length} alerts.` : "");
}

state.addEventListener("change", load);
every(15_000, load);
