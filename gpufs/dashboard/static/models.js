// The model catalogue, as models/get gives it.
import {clearBanner, every, get, identity, report} from "./api.js";
import {bytes, fillRows, num, text, timeEl} from "./fmt.js";

const active = document.getElementById("model-active");
const gpu = document.getElementById("model-gpu");

async function load() {
  await identity();
  try {
    const {data} = await get("models/get", {is_active: active.value, min_gpu_memory_gb: gpu.value});
    clearBanner();
    fillRows(document.querySelector("#models tbody"), data.map((m) => [
      m.name, m.version, `${m.version_code}`, `${m.engine_type}`, m.is_active ? "✔ active" : "✖ inactive",
      num(m.min_memory_mb, " MB"), num(m.min_gpu_memory_gb, " GB"), bytes(m.expected_size),
      m.download_url || "–", timeEl(m.created_at),
    ]), 10, "no models yet");
    text(document.getElementById("models-summary"), `${data.length} models.`);
  } catch (error) {
    report(error);
  }
}

active.addEventListener("change", load);
gpu.addEventListener("change", load);
document.getElementById("model-filters").addEventListener("submit", (event) => {
  event.preventDefault();
  load();
});
every(30_000, load);
