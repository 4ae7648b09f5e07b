// Calls to the public JSON API, the caller's identity, and the error banner every page shares.
const body = document.body.dataset;
export const config = {
  authMode: body.authMode,
  tempWarning: Number(body.tempWarning),
  // The API's place relative to this page (e.g. "../api"), so a sub-path in front still works.
  apiBase: new URL(body.api.replace(/\/?$/, "/"), document.baseURI),
};

const KEY = "gpufs.key";  // sessionStorage only: gone with the tab, never in a URL or a cookie
const USER = "gpufs.user";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function userId() {
  const fromUrl = new URLSearchParams(location.search).get("user_id");
  if (fromUrl) sessionStorage.setItem(USER, fromUrl);
  return fromUrl || sessionStorage.getItem(USER) || "";
}

function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

/** The envelope's data and the server's own time for one GET; throws ApiError on anything else. */
export async function get(path, params = {}) {
  const url = new URL(path, config.apiBase);
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const headers = {Accept: "application/json"};
  if (config.authMode === "token") headers.Authorization = `Bearer ${apiKey()}`;
  let response;
  try {
    response = await fetch(url, {headers, credentials: "omit", cache: "no-store"});
  } catch {
    throw new ApiError(0, "the server cannot be reached");
  }
  let envelope = null;
  try {
    envelope = await response.json();
  } catch {
    // an answer that is not the envelope (a proxy's own page): judged by its status below
  }
  if (!response.ok || !envelope || envelope.success !== true) {
    const message = envelope && typeof envelope.message === "string" ? envelope.message : response.statusText;
    throw new ApiError(response.status, message || `HTTP ${response.status}`);
  }
  return {data: envelope.data, now: Date.parse(envelope.timestamp)};
}

const banner = document.getElementById("banner");

/** Show what went wrong in words; 401/403 in token mode asks for the key again. */
export function report(error) {
  if (!(error instanceof ApiError)) throw error;
  if ((error.status === 401 || error.status === 403) && config.authMode === "token") {
    sessionStorage.removeItem(KEY);
    askIdentity(`Key rejected: ${error.message}`);
    clearBanner();
    return;
  }
  const what = error.status === 0 ? "Cannot reach the server"
    : error.status === 503 ? "Server unavailable (503)"
    : `Request failed (${error.status})`;
  banner.textContent = `⚠ ${what}: ${error.message}. Retrying.`;
  banner.hidden = false;
}

export function clearBanner() {
  banner.hidden = true;
  banner.textContent = "";
}

function known() {
  return Boolean(userId()) && (config.authMode !== "token" || Boolean(apiKey()));
}

/** Resolve once the caller is known: from ?user_id= or this tab's session, else from the form. */
export function identity() {
  const needKey = config.authMode === "token";
  if (known()) {
    showWho();
    return Promise.resolve(userId());
  }
  askIdentity(needKey ? "Enter your API key and user id." : "Enter a user id to see that user's fleet.");
  return new Promise((resolve) => { waiting.push(resolve); });
}

const waiting = [];
const form = document.getElementById("auth");

function askIdentity(message) {
  document.getElementById("auth-message").textContent = message;
  if (!form.hidden) return;  // already asking: never pull the focus away from someone typing
  form.hidden = false;
  document.getElementById("auth-user").value = userId();
  (document.getElementById("auth-key") || document.getElementById("auth-user")).focus();
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const user = document.getElementById("auth-user").value.trim();
  const key = document.getElementById("auth-key");
  if (!user || (key && !key.value.trim())) return;
  sessionStorage.setItem(USER, user);
  if (key) {
    sessionStorage.setItem(KEY, key.value.trim());
    key.value = "";
  }
  const url = new URL(location.href);
  if (url.searchParams.has("user_id")) {
    url.searchParams.set("user_id", user);
    history.replaceState(null, "", url);
  }
  form.hidden = true;
  showWho();
  if (waiting.length) {
    for (const resolve of waiting.splice(0)) resolve(user);
  } else {
    document.dispatchEvent(new Event("gpufs:identity"));
  }
});

document.getElementById("switch").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(USER);
  const url = new URL(location.href);
  url.searchParams.delete("user_id");
  history.replaceState(null, "", url);
  document.getElementById("who").textContent = "";
  document.getElementById("switch").hidden = true;
  askIdentity(config.authMode === "token" ? "Enter your API key and user id." : "Enter a user id to see that user's fleet.");
});

function showWho() {
  document.getElementById("who").textContent = `user ${userId()}`;
  document.getElementById("switch").hidden = false;
  for (const link of document.querySelectorAll("a[data-keep-user]")) {
    const url = new URL(link.getAttribute("href"), location.href);
    if (config.authMode !== "token") url.searchParams.set("user_id", userId());
    link.href = url;
  }
}

/** Run `load` now and every `ms` while the tab is visible; a hidden tab polls nothing. */
export function every(ms, load) {
  let timer = null;
  let running = false;
  let again = false;
  async function tick() {
    clearTimeout(timer);
    timer = null;
    if (running) {
      again = true;  // asked for while a load runs (a filter changed): load once more right after
      return;
    }
    // Hidden: nothing polls. Not known (a rejected key): wait for the form to say who.
    if (document.visibilityState !== "visible" || !known()) return;
    running = true;
    try {
      await load();
    } finally {
      running = false;
      if (again) {
        again = false;
        tick();
      } else if (document.visibilityState === "visible") {
        timer = setTimeout(tick, ms);
      }
    }
  }
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") tick();
    else clearTimeout(timer);
  });
  document.addEventListener("gpufs:identity", tick);
  identity().then(tick);  // asks who first when this tab does not know yet
  return tick;
}

/** Performance marks for bench/dashboard.py: `name` once the DOM is built, `name-painted` after the next frame. */
export function mark(name) {
  if (performance.getEntriesByName(name).length) return;
  performance.mark(name);
  requestAnimationFrame(() => setTimeout(() => performance.mark(`${name}-painted`)));
}
