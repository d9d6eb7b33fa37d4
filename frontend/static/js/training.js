// Training page: the live log (SSE), status changes, terminate and delete with confirmation.
// Status changes are announced as a `training:status` event on `document` for the
// evaluation and inference sections: detail = {id, status, finished}.
import { api, isFinished, localizeTimes, markLiveDurations, setBadge } from "./common.js";
import { LogView } from "./log-view.js";

const page = document.getElementById("training-page");
const trainingId = page.dataset.trainingId;
const $ = (id) => document.getElementById(id);

const view = new LogView({
  trainingId, scroll: $("log-scroll"), text: $("log-text"), earlier: $("log-earlier"),
  earlierButton: $("log-earlier-button"), empty: $("log-empty"), lines: $("log-lines"),
  size: $("log-size"), state: $("log-state"),
});

function setLogState(state, label) {
  $("log-state").dataset.state = state;
  $("log-state").textContent = label;
}

// ---- status ------------------------------------------------------------------------------
let refreshing = null;

// Re-reads this page and swaps the parts that depend on the status (facts, actions, outputs).
async function refreshRegions() {
  const response = await fetch(window.location.href, { credentials: "same-origin" });
  if (!response.ok) return;
  const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
  for (const region of document.querySelectorAll("[data-refresh]")) {
    const replacement = fresh.querySelector(`[data-refresh="${region.dataset.refresh}"]`);
    if (replacement) region.replaceWith(document.adoptNode(replacement));
  }
  localizeTimes();
  markLiveDurations();
}

function setStatus(status) {
  if (status === page.dataset.status) return;
  page.dataset.status = status;
  const finished = isFinished(status);
  page.dataset.finished = String(finished);
  setBadge($("status"), status);
  for (const id of ["evaluation", "inference"]) {
    const section = $(id);
    if (section) section.dataset.status = status;
  }
  document.dispatchEvent(new CustomEvent("training:status", {
    detail: { id: Number(trainingId), status, finished } }));
  if (finished) {
    $("log-pause").hidden = true;
    view.setPaused(false);
    setLogState("done", "Finished");
  }
  refreshing = (refreshing || Promise.resolve()).then(refreshRegions).catch(() => {});
}

// ---- following the log -------------------------------------------------------------------
function follow(offset) {
  const source = new EventSource(`/api/v1/trainings/${trainingId}/log/stream?offset=${offset}`);
  source.addEventListener("log", (event) => view.push(event.data, Number(event.lastEventId)));
  source.addEventListener("status", (event) => setStatus(event.data));
  source.addEventListener("end", (event) => {
    source.close();
    view.flush();
    if (event.data === "deleted") setLogState("done", "Deleted");
    else if (event.data) setStatus(event.data);
  });
  source.addEventListener("open", () => {
    if (!view.paused && !isFinished(page.dataset.status)) setLogState("live", "Following");
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) setLogState("done", "Disconnected: reload the page");
    else setLogState("paused", "Reconnecting…"); // EventSource resumes from the last event id
  });
}

async function startLog() {
  try {
    const offset = await view.loadTail();
    if (page.dataset.finished !== "true") follow(offset);
  } catch (err) {
    $("log-lines").textContent = `Could not read the log: ${err.message}`;
  }
}

$("log-pause").addEventListener("click", () => {
  const paused = !view.paused;
  view.setPaused(paused);
  $("log-pause").setAttribute("aria-pressed", String(paused));
  $("log-pause").querySelector("span").textContent = paused ? "Resume" : "Pause";
  if (!isFinished(page.dataset.status)) {
    setLogState(paused ? "paused" : "live", paused ? "Paused" : "Following");
  }
});
$("log-end").addEventListener("click", () => {
  view.jumpToEnd();
  if (!isFinished(page.dataset.status)) {
    $("log-pause").setAttribute("aria-pressed", "false");
    $("log-pause").querySelector("span").textContent = "Pause";
    setLogState("live", "Following");
  }
});

// ---- terminate and delete ----------------------------------------------------------------
function showActionError(message) {
  const box = $("action-error");
  box.querySelector("p").textContent = message;
  box.hidden = !message;
}

function confirmWith(dialog) {
  return new Promise((resolve) => {
    dialog.returnValue = "";
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
    dialog.showModal();
  });
}

async function terminate(button) {
  if (!(await confirmWith($("confirm-terminate")))) return;
  showActionError("");
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    const response = await api("POST", `/api/v1/trainings/${trainingId}/terminate`);
    setStatus((await response.json()).status);
  } catch (err) {
    button.disabled = false;
    showActionError(err.message);
  } finally {
    button.removeAttribute("aria-busy");
  }
}

async function remove(button) {
  if (!(await confirmWith($("confirm-delete")))) return;
  showActionError("");
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    await api("DELETE", `/api/v1/trainings/${trainingId}`);
    window.location.assign(`/repos/${page.dataset.repo}`);
  } catch (err) {
    button.disabled = false;
    button.removeAttribute("aria-busy");
    showActionError(err.message);
  }
}

// Delegated: the action buttons are replaced when the status changes.
page.addEventListener("click", (event) => {
  const button = event.target.closest("button");
  if (!button) return;
  if (button.id === "terminate") terminate(button);
  else if (button.id === "delete") remove(button);
});

startLog();
