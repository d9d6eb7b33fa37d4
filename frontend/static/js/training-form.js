// "Create a training": load a config file of the repository into the form (JSONC allowed,
// parsed by the vendored json5), or fill the form; POST the config to the REST API and show
// its 422 field errors next to the inputs and its 409 rule messages in a banner.
import JSON5 from "../vendor/json5-2.2.3/json5.min.mjs";
import { api } from "./common.js";

const root = document.getElementById("new-training");
const repo = root.dataset.repo;
const form = document.getElementById("training-form");
const submit = document.getElementById("create-submit");
const banner = document.getElementById("form-banner");
const status = document.getElementById("config-status");
const fileSelect = document.getElementById("config-file");
const pathField = document.getElementById("config-path-field");
const pathInput = document.getElementById("config-path");
const preview = document.getElementById("json-preview");

const ROW_KINDS = ["hypeparameters", "inputs", "outputs", "env_variables"];
const SCALARS = ["job_name", "job_description", "code_dir", "boot_file", "SDK",
                 "frameworks.framework_type", "frameworks.framework_version",
                 "train_instance_type", "log_url"];
// The config's top-level keys, from the JSON Schema the API serves (null if unavailable).
const knownKeys = api("GET", "/api/v1/schemas/training-config")
  .then((response) => response.json())
  .then((schema) => new Set(Object.keys(schema.properties || {})))
  .catch(() => null);
const ROW_PATH = /^(hypeparameters|hyperparameters|inputs|outputs)\[(\d+)\](?:\.(\w+))?/;
const ENV_PATH = /^env_variables(?:\.([A-Za-z_]\w*)|\[("(?:[^"\\]|\\.)*")\])/;

let rowSeq = 0;
let sentRows = {};

// ---- rows ------------------------------------------------------------------------------
const rowsOf = (kind) => form.querySelector(`[data-rows="${kind}"]`);

function updateRows(kind) {
  const container = rowsOf(kind);
  const n = container.children.length;
  form.querySelector(`[data-rows-empty="${kind}"]`).hidden = n > 0;
  form.querySelector(`[data-add-row="${kind}"]`).disabled = n >= Number(container.dataset.max);
}

function addRow(kind, values = {}) {
  const container = rowsOf(kind);
  if (container.children.length >= Number(container.dataset.max)) return null;
  const row = document.getElementById(`row-${kind}`).content.firstElementChild.cloneNode(true);
  rowSeq += 1;
  for (const field of row.querySelectorAll(".field")) {
    const input = field.querySelector("input");
    const id = `row${rowSeq}-${input.dataset.key}`;
    input.id = id;
    field.querySelector("label").htmlFor = id;
    field.querySelector(".field-error").id = `${id}-error`;
    input.setAttribute("aria-describedby", `${id}-error`);
    const value = values[input.dataset.key];
    input.value = value === undefined || value === null ? "" : String(value);
  }
  container.append(row);
  updateRows(kind);
  return row;
}

function clearRows(kind) {
  rowsOf(kind).replaceChildren();
  updateRows(kind);
}

form.addEventListener("click", (event) => {
  const add = event.target.closest("[data-add-row]");
  if (add) {
    const row = addRow(add.dataset.addRow);
    if (row) row.querySelector("input").focus();
    schedulePreview();
    return;
  }
  const remove = event.target.closest("[data-remove-row]");
  if (remove) {
    const row = remove.closest("[data-row]");
    const kind = row.parentElement.dataset.rows;
    row.remove();
    updateRows(kind);
    form.querySelector(`[data-add-row="${kind}"]`).focus();
    schedulePreview();
  }
});

// ---- form <-> config -------------------------------------------------------------------
const scalar = (path) => form.querySelector(`[data-field="${path}"]`);

function rowValues(row) {
  const out = {};
  for (const input of row.querySelectorAll("input[data-key]")) out[input.dataset.key] = input.value.trim();
  return out;
}

// The config the form describes, in Xihe's key order, and which row each list item came from.
function collect() {
  const value = (path) => scalar(path).value.trim();
  const rows = {};
  const lists = {};
  for (const kind of ROW_KINDS) {
    rows[kind] = [];
    lists[kind] = [];
    for (const row of rowsOf(kind).children) {
      const item = rowValues(row);
      if (Object.values(item).every((v) => v === "")) continue;
      rows[kind].push(row);
      lists[kind].push(item);
    }
  }
  const config = {};
  if (value("SDK")) config.SDK = value("SDK");
  config.code_dir = value("code_dir");
  config.boot_file = value("boot_file");
  config.outputs = lists.outputs.map(({ output_dir, name }) => ({ output_dir, name }));
  config.hypeparameters = lists.hypeparameters;
  const [type, version] = [value("frameworks.framework_type"), value("frameworks.framework_version")];
  if (type || version) config.frameworks = { framework_type: type, framework_version: version };
  if (value("train_instance_type")) config.train_instance_type = value("train_instance_type");
  config.log_url = value("log_url");
  config.env_variables = Object.fromEntries(lists.env_variables.map(({ name, value: v }) => [name, v]));
  config.job_description = scalar("job_description").value;
  config.inputs = lists.inputs.map(({ input_url, name }) => ({ input_url, name }));
  config.job_name = value("job_name");
  return { config, rows };
}

function text(value) {
  if (value === undefined || value === null) return "";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

// Puts a parsed config.json into the form.
function fill(config) {
  const frameworks = config.frameworks && typeof config.frameworks === "object" ? config.frameworks : {};
  const values = { ...config, "frameworks.framework_type": frameworks.framework_type,
                   "frameworks.framework_version": frameworks.framework_version };
  for (const path of SCALARS) {
    if (values[path] !== undefined) scalar(path).value = text(values[path]);
    else if (!path.startsWith("frameworks.") && path !== "SDK" && path !== "train_instance_type") {
      scalar(path).value = "";
    }
  }
  const lists = {
    hypeparameters: config.hypeparameters ?? config.hyperparameters,
    inputs: config.inputs,
    outputs: config.outputs,
    env_variables: config.env_variables && typeof config.env_variables === "object"
      ? Object.entries(config.env_variables).map(([name, value]) => ({ name, value })) : [],
  };
  for (const kind of ROW_KINDS) {
    clearRows(kind);
    for (const item of Array.isArray(lists[kind]) ? lists[kind] : []) {
      if (item && typeof item === "object") addRow(kind, Object.fromEntries(
        Object.entries(item).map(([k, v]) => [k, text(v)])));
    }
  }
  schedulePreview();
}

let previewPending = false;
function schedulePreview() {
  if (previewPending) return;
  previewPending = true;
  requestAnimationFrame(() => {
    previewPending = false;
    preview.textContent = JSON.stringify(collect().config, null, 2);
  });
}
form.addEventListener("input", schedulePreview);

// ---- loading a config file ---------------------------------------------------------------
function setStatus(message, kind = "") {
  status.textContent = message;
  const look = { error: "field-error", ok: "status-ok" }[kind] || "muted";
  status.className = `small ${look}`;
}

function encodePath(path) {
  return path.split("/").map(encodeURIComponent).join("/");
}

function syntaxMessage(err) {
  const reason = String(err.message).replace(/^JSON5: /, "").replace(/ at \d+:\d+$/, "");
  return err.lineNumber ? `line ${err.lineNumber}, column ${err.columnNumber}: ${reason}` : reason;
}

let loadedPath = null;
const chosenPath = () => (fileSelect.value || pathInput.value).trim().replace(/^\/+/, "");
const fileMode = () => (form.querySelector('input[name="mode"]:checked') || {}).value === "file";

// Loads the chosen config file into the form; true when it did.
async function loadConfig() {
  const path = chosenPath();
  if (!path) {
    setStatus("Enter the path of a JSON file in the repository, such as train/config.json.", "error");
    pathInput.focus();
    return false;
  }
  setStatus(`Loading ${path}…`);
  let source;
  try {
    const response = await api("GET", `/api/v1/repos/${repo}/files/${encodePath(path)}`,
                               { headers: { Accept: "text/plain, */*" } });
    source = await response.text();
  } catch (err) {
    setStatus(err.status === 404 ? `${repo} has no file ${path}.` : err.message, "error");
    return false;
  }
  let data;
  try {
    data = JSON5.parse(source);
  } catch (err) {
    setStatus(`${path} is not valid JSON: ${syntaxMessage(err)}`, "error");
    return false;
  }
  if (!data || typeof data !== "object" || Array.isArray(data)) {
    setStatus(`${path} must hold one JSON object {…}.`, "error");
    return false;
  }
  clearErrors();
  fill(data);
  loadedPath = path;
  const known = await knownKeys;
  const unknown = known ? Object.keys(data).filter((key) => !known.has(key)) : [];
  const note = unknown.length ? ` Fields the form does not have were left out: ${unknown.join(", ")}.` : "";
  setStatus(`Loaded ${path}. Review the fields below, then create the training.${note}`, "ok");
  return true;
}

document.getElementById("load-config").addEventListener("click", loadConfig);
fileSelect.addEventListener("change", () => {
  loadedPath = null;
  pathField.hidden = fileSelect.value !== "";
  if (!pathField.hidden) pathInput.focus();
});
pathInput.addEventListener("input", () => { loadedPath = null; });
pathInput.addEventListener("keydown", (event) => {
  if (event.key === "Enter") { event.preventDefault(); loadConfig(); }
});

for (const radio of form.querySelectorAll('input[name="mode"]')) {
  radio.addEventListener("change", () => {
    for (const option of form.querySelectorAll(".choice__option")) {
      option.classList.toggle("is-selected", option.querySelector("input").checked);
    }
    document.getElementById("file-panel").hidden = radio.value !== "file";
    if (radio.value === "form") scalar("job_name").focus();
  });
}

// ---- errors ------------------------------------------------------------------------------
function clearErrors() {
  banner.hidden = true;
  for (const el of form.querySelectorAll(".field-error")) { el.hidden = true; el.textContent = ""; }
  for (const el of form.querySelectorAll('[aria-invalid="true"]')) el.removeAttribute("aria-invalid");
}

function showBanner(title, items = [], detail = "") {
  document.getElementById("form-banner-title").textContent = title;
  const list = document.getElementById("form-banner-list");
  list.replaceChildren(...items.map((item) => {
    const li = document.createElement("li");
    li.textContent = item;
    return li;
  }));
  list.hidden = items.length === 0;
  const text = document.getElementById("form-banner-detail");
  text.textContent = detail;
  text.hidden = !detail;
  banner.hidden = false;
}

function fieldOf(input) {
  return { input, error: input.closest(".field").querySelector(".field-error") };
}

// Finds the input (and its error slot) that an API field path such as inputs[1].input_url names.
function locate(path) {
  const direct = form.querySelector(`[data-field="${CSS.escape(path)}"]`);
  if (direct) return fieldOf(direct);
  if (path === "frameworks") return fieldOf(scalar("frameworks.framework_type"));
  const rowMatch = ROW_PATH.exec(path);
  if (rowMatch) {
    const kind = rowMatch[1] === "hyperparameters" ? "hypeparameters" : rowMatch[1];
    const row = (sentRows[kind] || [])[Number(rowMatch[2])];
    if (row) {
      const key = rowMatch[3];
      const input = (key && row.querySelector(`input[data-key="${key}"]`)) || row.querySelector("input");
      return fieldOf(input);
    }
  }
  const envMatch = ENV_PATH.exec(path);
  if (envMatch) {
    const name = envMatch[1] ?? JSON.parse(envMatch[2]);
    const row = (sentRows.env_variables || []).find((r) => rowValues(r).name === name);
    if (row) return fieldOf(row.querySelector('input[data-key="name"]'));
  }
  const listSlot = form.querySelector(`[data-error-for="${CSS.escape(path.split(/[.[]/)[0])}"]`);
  if (listSlot && !listSlot.closest(".field")) return { input: null, error: listSlot };
  return null;
}

function showFieldErrors(fields) {
  const unplaced = [];
  let first = null;
  for (const { field, message } of fields) {
    const target = locate(field || "");
    if (!target) { unplaced.push(field && field !== "config" ? `${field}: ${message}` : message); continue; }
    target.error.textContent = target.error.hidden ? message : `${target.error.textContent} ${message}`;
    target.error.hidden = false;
    if (target.input) {
      target.input.setAttribute("aria-invalid", "true");
      first = first || target.input;
    }
  }
  return { unplaced, first };
}

function blockCreation(code) {
  const message = code === "training_limit" ? root.dataset.limitMessage : root.dataset.runningMessage;
  document.getElementById("rule-message").textContent = message;
  document.getElementById("rule-hint").textContent = code === "training_limit"
    ? "Delete a training to make room." : "Wait for it to finish or terminate it.";
  document.getElementById("rule-banner").hidden = false;
  submit.disabled = true;
  submit.setAttribute("aria-describedby", "rule-message");
}

function handleFailure(err) {
  const body = err.body || {};
  if (err.status === 422 && Array.isArray(body.fields)) {
    const { unplaced, first } = showFieldErrors(body.fields);
    const n = body.fields.length;
    const marked = first ? (n === 1 ? "; it is marked below" : "; they are marked below") : "";
    showBanner(`The config has ${n === 1 ? "1 problem" : `${n} problems`}${marked}.`, unplaced);
    (first || banner).focus();
    return;
  }
  if (err.status === 409 && body.error === "duplicate_name") {
    showFieldErrors([{ field: "job_name", message: body.detail }]);
    showBanner("This job name is taken", [], body.detail);
    scalar("job_name").focus();
    return;
  }
  showBanner("The training was not created", [], body.detail || err.message);
  if (err.status === 409 && (body.error === "training_running" || body.error === "training_limit")) {
    blockCreation(body.error);
  }
  banner.focus();
}

// ---- submit ------------------------------------------------------------------------------
function duplicateEnvNames(rows) {
  const problems = [];
  const seen = new Map();
  rows.env_variables.forEach((row, i) => {
    const name = rowValues(row).name;
    if (seen.has(name)) problems.push({ field: `env_variables[${i}]`, row, message: `${name} is set twice` });
    seen.set(name, i);
  });
  return problems;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (submit.disabled) return;
  clearErrors();
  // A config file chosen but not loaded yet: load it, then create from what it holds.
  if (fileMode() && chosenPath() && chosenPath() !== loadedPath && !(await loadConfig())) {
    (pathField.hidden ? fileSelect : pathInput).focus();
    return;
  }
  const { config, rows } = collect();
  sentRows = rows;
  const duplicates = duplicateEnvNames(rows);
  if (duplicates.length) {
    for (const { row, message } of duplicates) {
      const { input, error } = fieldOf(row.querySelector('input[data-key="name"]'));
      input.setAttribute("aria-invalid", "true");
      error.textContent = message;
      error.hidden = false;
    }
    showBanner("Each environment variable may be set only once.");
    return;
  }
  submit.disabled = true;
  submit.setAttribute("aria-busy", "true");
  try {
    const response = await api("POST", `/api/v1/repos/${repo}/trainings`, { json: config });
    const training = await response.json();
    window.location.assign(`/trainings/${training.id}`);
    return;
  } catch (err) {
    submit.disabled = false;
    handleFailure(err);
  } finally {
    submit.removeAttribute("aria-busy");
  }
});

for (const kind of ROW_KINDS) updateRows(kind);
schedulePreview();
