// Shared helpers of every page: API calls with the session's CSRF token, formatting,
// local times, status badges and ticking durations.

// The final training statuses, as the server defines them (app/statuses.py via base.html).
const FINISHED = new Set(
  (document.querySelector('meta[name="finished-statuses"]')?.content || "").split(" ").filter(Boolean));

export function isFinished(status) {
  return FINISHED.has(status);
}

export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.detail) || `The server answered ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

// Calls the REST API as the signed-in browser; unsafe methods carry the CSRF token.
export async function api(method, url, { json, headers = {} } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers },
                 credentials: "same-origin" };
  if (method !== "GET" && method !== "HEAD") init.headers["X-CSRF-Token"] = csrfToken();
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    throw new ApiError(0, { detail: "Trainyard did not answer; check that it is running." });
  }
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch (err) { body = null; }
    if (response.status === 401) {
      body = { detail: "You are signed out. Sign in again to continue." };
    }
    throw new ApiError(response.status, body);
  }
  return response;
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  const total = Math.floor(seconds);
  if (total < 60) return seconds < 10 ? `${seconds.toFixed(1)}s` : `${total}s`;
  const minutes = Math.floor(total / 60);
  const secs = total % 60;
  if (minutes < 60) return `${minutes}m ${String(secs).padStart(2, "0")}s`;
  return `${Math.floor(minutes / 60)}h ${String(minutes % 60).padStart(2, "0")}m`;
}

// Decimal units (1 kB = 1000 bytes), the same text as the CLI and app/units.py.
export function formatSize(bytes) {
  if (bytes < 1000) return `${bytes} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let value = bytes;
  for (const unit of units) {
    value /= 1000;
    if (Math.round(value * 10) / 10 < 1000 || unit === "TB") return `${value.toFixed(1)} ${unit}`;
  }
  return `${bytes} B`;
}

const timeFormat = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "numeric",
  hour: "2-digit", minute: "2-digit", second: "2-digit",
});

export function localTime(iso) {
  return timeFormat.format(new Date(iso));
}

// Shows server-rendered UTC <time data-local> elements in the reader's time zone.
export function localizeTimes(root = document) {
  for (const el of root.querySelectorAll("time[data-local]")) {
    const iso = el.getAttribute("datetime");
    if (!iso || el.dataset.localized === iso) continue;
    el.title = `${el.textContent.trim()}`;
    el.textContent = localTime(iso);
    el.dataset.localized = iso;
  }
}

export function timeElement(iso) {
  if (!iso) return document.createTextNode("—");
  const el = document.createElement("time");
  el.setAttribute("datetime", iso);
  el.dataset.local = "";
  el.dataset.localized = iso;
  el.title = iso;
  el.textContent = localTime(iso);
  return el;
}

// Renders a status badge in the same markup as the server's `status_badge` macro.
export function setBadge(container, status) {
  let badge = container.querySelector(".badge");
  if (!badge) {
    badge = document.createElement("span");
    badge.innerHTML = '<span class="badge__dot"></span><span class="badge__text"></span>';
    container.replaceChildren(badge);
  }
  const large = badge.classList.contains("badge--lg");
  badge.className = `badge badge--${status.toLowerCase()}${large ? " badge--lg" : ""}`;
  badge.dataset.status = status;
  badge.querySelector(".badge__text").textContent = status;
}

// Elements with data-started and data-live="true" show the time since the start, each second.
function tickDurations() {
  const now = Date.now();
  for (const el of document.querySelectorAll('[data-started][data-live="true"]')) {
    const started = Date.parse(el.dataset.started);
    if (!Number.isNaN(started)) el.textContent = formatDuration(Math.max(0, (now - started) / 1000));
  }
}

export function showDuration(el, { started_at: started, duration_s: duration, status }) {
  el.dataset.started = started || "";
  el.dataset.duration = duration === null || duration === undefined ? "" : String(duration);
  const live = Boolean(started) && !isFinished(status) && el.dataset.duration === "";
  el.dataset.live = live ? "true" : "false";
  if (!live) el.textContent = formatDuration(duration === null ? null : duration);
  else tickDurations();
}

// Marks which duration elements tick: started, no recorded duration, status not final.
export function markLiveDurations() {
  for (const el of document.querySelectorAll("[data-started]")) {
    if (el.dataset.live) continue;
    const row = el.closest("[data-training-id]") || document.getElementById("training-page");
    const badge = row && row.querySelector(".badge[data-status]");
    const status = badge ? badge.dataset.status : "";
    el.dataset.live = el.dataset.started && el.dataset.duration === "" && !isFinished(status)
      ? "true" : "false";
  }
}

localizeTimes();
markLiveDurations();
setInterval(tickDurations, 1000);
