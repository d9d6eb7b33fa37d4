// Repository page: the training list follows the REST list (polled every 2 s while the
// page is visible), the Create button follows the repository's rules, "Compare trainings"
// starts the repository's Aim comparison and follows it, files open inline.
import { api, isFinished, setBadge, showDuration, timeElement } from "./common.js";

const POLL_MS = 2000;
const COMPARE_POLL_MS = 1000;
const PREVIEW_LIMIT = 512 * 1024;

const page = document.getElementById("repo-page");
const repo = page.dataset.repo;
const limit = Number(page.dataset.limit);
const table = document.getElementById("trainings");
const tbody = table.querySelector("tbody");
const rowTemplate = document.getElementById("training-row-template");
const empty = document.getElementById("trainings-empty");
const count = document.getElementById("training-count");
const createButton = document.getElementById("create-training");
const reason = document.getElementById("create-reason");

function fillRow(row, t) {
  row.dataset.trainingId = String(t.id);
  const link = row.querySelector('[data-cell="link"]');
  link.href = `/trainings/${t.id}`;
  link.textContent = t.job_name;
  row.querySelector('[data-cell="description"]').textContent = t.job_description || "";
  setBadge(row.querySelector('[data-cell="status"]'), t.status);
  const created = row.querySelector('[data-cell="created"]');
  if (!created.querySelector("time")) created.replaceChildren(timeElement(t.created_at));
  showDuration(row.querySelector('[data-cell="duration"]'), t);
  row.querySelector('[data-cell="runtime"]').textContent = t.runtime;
}

function newRow() {
  return rowTemplate.content.firstElementChild.cloneNode(true);
}

function renderList(trainings) {
  const existing = new Map();
  for (const row of tbody.querySelectorAll("tr[data-training-id]")) {
    existing.set(row.dataset.trainingId, row);
  }
  const rows = trainings.map((t) => {
    const row = existing.get(String(t.id)) || newRow();
    fillRow(row, t);
    return row;
  });
  // Only touch the DOM order when it changed, so focus and selection survive a poll.
  const current = [...tbody.children];
  if (rows.length !== current.length || rows.some((row, i) => row !== current[i])) {
    tbody.replaceChildren(...rows);
  }
  table.hidden = trainings.length === 0;
  empty.hidden = trainings.length !== 0;
  count.textContent = `${trainings.length} of ${limit} instances`;
  renderRule(trainings);
  renderCompare(trainings.filter((t) => isFinished(t.status)).length);
}

function renderRule(trainings) {
  const running = trainings.find((t) => !isFinished(t.status));
  let message = "";
  let hint = "";
  let link = null;
  if (trainings.length >= limit) {
    message = reason.dataset.limitMessage;
    hint = reason.dataset.limitHint;
  } else if (running) {
    message = reason.dataset.runningMessage;
    hint = reason.dataset.runningHint;
    link = `/trainings/${running.id}`;
  }
  if (message) {
    createButton.removeAttribute("href");
    createButton.setAttribute("role", "link");
    createButton.setAttribute("aria-disabled", "true");
    createButton.setAttribute("aria-describedby", "create-reason");
  } else {
    createButton.href = createButton.dataset.href;
    for (const name of ["role", "aria-disabled", "aria-describedby"]) createButton.removeAttribute(name);
  }
  reason.hidden = !message;
  reason.querySelector('[data-reason="message"]').textContent = message;
  reason.querySelector('[data-reason="hint"]').textContent = hint;
  const anchor = reason.querySelector('[data-reason="link"]');
  anchor.hidden = !link;
  if (link) anchor.href = link;
}

// ---- compare ---------------------------------------------------------------------------
const compareButton = document.getElementById("compare-trainings");
const compareView = document.getElementById("compare-view");
const compareError = document.getElementById("compare-error");
let comparing = false;
let finishedCount = 0;
let comparedCount = null;

function renderCompare(finished) {
  finishedCount = finished;
  // A report covers the trainings finished when it was built: offer a new one after more end.
  if (comparedCount !== null && finished !== comparedCount) {
    comparedCount = null;
    compareView.hidden = true;
    compareButton.hidden = false;
  }
  if (!comparing) compareButton.disabled = finished === 0;
}

function showCompareError(message) {
  compareError.querySelector("p").textContent = message;
  compareError.hidden = !message;
}

function setComparing(busy) {
  comparing = busy;
  compareButton.disabled = busy || finishedCount === 0;
  compareButton.setAttribute("aria-busy", busy ? "true" : "false");
  compareButton.querySelector("span").textContent = busy ? "Comparing…" : "Compare trainings";
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

async function compare() {
  const url = compareButton.dataset.api;
  showCompareError("");
  setComparing(true);
  const counted = finishedCount;
  try {
    let evaluation = await (await api("POST", url)).json();
    while (evaluation.status === "starting") {
      await sleep(COMPARE_POLL_MS);
      evaluation = await (await api("GET", url)).json();
    }
    if (evaluation.status === "running") {
      compareView.href = evaluation.report_url;
      compareView.hidden = false;
      compareButton.hidden = true;
      comparedCount = counted;
    } else if (evaluation.status === "failed") {
      showCompareError(`The comparison failed: ${evaluation.error || "no reason given"}`);
    } else {
      showCompareError("The comparison stopped before it was ready; start it again.");
    }
  } catch (err) {
    showCompareError(err.message);
  } finally {
    setComparing(false);
  }
}

compareButton.addEventListener("click", compare);
finishedCount = Number(compareButton.dataset.finished);

let timer = null;
let inFlight = false;

async function poll() {
  if (inFlight) return;
  inFlight = true;
  try {
    const response = await api("GET", `/api/v1/repos/${repo}/trainings`);
    renderList(await response.json());
  } catch (err) {
    if (err.status === 401) { stopPolling(); }
  } finally {
    inFlight = false;
  }
}

function startPolling() {
  if (timer === null) timer = setInterval(poll, POLL_MS);
}

function stopPolling() {
  clearInterval(timer);
  timer = null;
}

document.addEventListener("visibilitychange", () => {
  if (document.hidden) stopPolling();
  else { poll(); startPolling(); }
});
if (!document.hidden) startPolling();

// ---- files -----------------------------------------------------------------------------
const fileList = document.getElementById("file-list");
const viewer = document.getElementById("viewer");
const viewerTitle = document.getElementById("viewer-title");

function looksBinary(text) {
  return text.slice(0, 8000).includes("\u0000");
}

async function showFile(link) {
  for (const a of fileList.querySelectorAll('a[aria-current="true"]')) a.removeAttribute("aria-current");
  link.setAttribute("aria-current", "true");
  const path = link.dataset.path;
  viewerTitle.textContent = path;
  if (Number(link.dataset.size) > PREVIEW_LIMIT) {
    viewer.textContent = "This file is too large to preview here. Open it with the link to download it.";
    return;
  }
  viewer.textContent = "Loading…";
  try {
    const response = await api("GET", link.href, { headers: { Accept: "text/plain, */*" } });
    const text = await response.text();
    viewer.textContent = looksBinary(text) ? "This is a binary file; it cannot be shown as text." : text;
    viewer.scrollTop = 0;
  } catch (err) {
    viewer.textContent = `Could not open ${path}: ${err.message}`;
  }
}

if (fileList) {
  fileList.addEventListener("click", (event) => {
    const link = event.target.closest("a[data-path]");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey) return;
    event.preventDefault();
    showFile(link);
  });
  const preferred = fileList.querySelector('a[data-path="train/config.json"]');
  if (preferred) showFile(preferred);
}
