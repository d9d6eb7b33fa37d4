// The inference panel (templates/_inference.html): pick, drop or choose an example image,
// POST it to /api/v1/trainings/{id}/predict and draw the ten probabilities as bars.

import { csrfToken, formatSize, isFinished } from "/static/js/common.js";

const POLL_MS = 5000;
const SLOW_MS = 1200;

function percent(p) {
  const value = p * 100;
  if (value >= 99.95) return "100%";
  if (value > 0 && value < 0.05) return "<0.1%";
  return `${value.toFixed(1)}%`;
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (body && body.detail) return body.detail;
  } catch (err) { /* not JSON */ }
  if (response.status === 401) return "You are signed out. Sign in again to continue.";
  return `The server answered ${response.status}.`;
}

class InferencePanel {
  constructor(root) {
    this.root = root;
    this.maxBytes = Number(root.dataset.maxBytes) || 20000000;
    this.el = {};
    for (const node of root.querySelectorAll("[data-role]")) this.el[node.dataset.role] = node;
    this.request = 0;
    this.previewUrl = null;
    this.defaultCheckpoint = "";
    this.bind();
    this.refresh();
  }

  bind() {
    const { drop, file } = this.el;
    drop.addEventListener("click", () => file.click());
    file.addEventListener("change", () => {
      if (file.files && file.files[0]) {
        this.markExample(null);
        this.predict(file.files[0], file.files[0].name);
      }
      file.value = "";
    });
    for (const type of ["dragenter", "dragover"]) {
      drop.addEventListener(type, (event) => {
        event.preventDefault();
        drop.classList.add("is-over");
      });
    }
    for (const type of ["dragleave", "dragend"]) {
      drop.addEventListener(type, () => drop.classList.remove("is-over"));
    }
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      drop.classList.remove("is-over");
      const dropped = event.dataTransfer && event.dataTransfer.files[0];
      this.markExample(null);
      if (dropped) this.predict(dropped, dropped.name);
      else this.showError("Drop an image file (a link or text cannot be classified).");
    });
    this.el.checkpoint.addEventListener("change", () => this.warmUp());
    for (const button of this.root.querySelectorAll("[data-example]")) {
      button.addEventListener("click", () => this.predictExample(button));
    }
  }

  async refresh() {
    let info;
    try {
      const response = await fetch(this.root.dataset.statusUrl, {
        credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(await errorText(response));
      info = await response.json();
    } catch (err) {
      this.setNotice(`Inference status unavailable: ${err.message}`);
      this.root.dataset.state = "unavailable";
      return;
    }
    if (!info.available) {
      this.setNotice(info.problem || "This training cannot predict.");
      this.root.dataset.state = "unavailable";
      // A training still running may become Completed: look again in a moment.
      if (info.training_status && !isFinished(info.training_status)) {
        setTimeout(() => this.refresh(), POLL_MS);
      }
      return;
    }
    this.fillCheckpoints(info.checkpoints);
    this.el.notice.hidden = true;
    this.el.panel.hidden = false;
    this.root.dataset.state = "ready";
    this.warmUp();
  }

  // Starts the model in the background while the user picks an image (best effort).
  warmUp() {
    const checkpoint = this.el.checkpoint.value;
    fetch(this.root.dataset.statusUrl, {
      method: "POST", credentials: "same-origin",
      headers: { Accept: "application/json", "Content-Type": "application/json",
                 "X-CSRF-Token": csrfToken() },
      body: JSON.stringify({ checkpoint: checkpoint || null }),
    }).catch(() => {});
  }

  setNotice(text) {
    this.el.notice.textContent = text;
    this.el.notice.hidden = false;
    this.el.panel.hidden = true;
  }

  fillCheckpoints(checkpoints) {
    const select = this.el.checkpoint;
    select.replaceChildren();
    for (const c of checkpoints) {
      const option = document.createElement("option");
      option.value = c.path;
      option.textContent = c.default ? `${c.path} (default)` : c.path;
      if (c.default) {
        option.selected = true;
        this.defaultCheckpoint = c.path;
      }
      select.append(option);
    }
    select.disabled = checkpoints.length < 2;
  }

  markExample(button) {
    for (const other of this.root.querySelectorAll("[data-example]")) {
      other.setAttribute("aria-pressed", String(other === button));
    }
  }

  async predictExample(button) {
    this.markExample(button);
    try {
      const response = await fetch(button.dataset.example);
      if (!response.ok) throw new Error(`the example answered ${response.status}`);
      await this.predict(await response.blob(), button.dataset.name);
    } catch (err) {
      this.showError(`Could not load the example: ${err.message}`);
    }
  }

  showPreview(blob) {
    const { preview, drop } = this.el;
    if (this.previewUrl) URL.revokeObjectURL(this.previewUrl);
    this.previewUrl = URL.createObjectURL(blob);
    preview.onerror = () => { preview.hidden = true; };
    // Tiny images (CIFAR's are 32x32) are shown enlarged with crisp pixels.
    preview.onload = () => preview.classList.toggle("is-small", preview.naturalWidth < 96);
    preview.src = this.previewUrl;
    preview.hidden = false;
    drop.classList.add("has-image");
  }

  showError(message) {
    const { error, status, bars, meta } = this.el;
    error.querySelector("p").textContent = message;
    error.hidden = false;
    status.textContent = "";
    // The bars of an earlier image must not read as the answer for this one.
    bars.replaceChildren();
    meta.textContent = "";
    delete meta.dataset.checkpoint;
    this.root.dataset.state = "error";
  }

  async predict(blob, name) {
    const { error, status, checkpoint } = this.el;
    error.hidden = true;
    if (blob.size > this.maxBytes) {
      this.showError(`${name} has ${formatSize(blob.size)}; images up to ` +
                     `${formatSize(this.maxBytes)} can be classified.`);
      return;
    }
    this.showPreview(blob);
    const mine = ++this.request;
    this.root.dataset.state = "busy";
    status.textContent = `Classifying ${name}…`;
    const slow = setTimeout(() => {
      if (mine === this.request) {
        status.textContent = "Starting the model; the first prediction takes a few seconds…";
      }
    }, SLOW_MS);
    const form = new FormData();
    form.append("file", blob, name || "image");
    if (checkpoint.value && checkpoint.value !== this.defaultCheckpoint) {
      form.append("checkpoint", checkpoint.value);
    }
    let response;
    try {
      response = await fetch(this.root.dataset.predictUrl, {
        method: "POST", body: form, credentials: "same-origin",
        headers: { Accept: "application/json", "X-CSRF-Token": csrfToken() } });
    } catch (err) {
      response = null;
    } finally {
      clearTimeout(slow);
    }
    if (mine !== this.request) return; // a newer image was chosen meanwhile
    if (response === null) {
      this.showError("Trainyard did not answer; check that it is running.");
      return;
    }
    if (!response.ok) {
      this.showError(await errorText(response));
      return;
    }
    this.render(await response.json(), name);
  }

  render(result, name) {
    const { bars, meta, status } = this.el;
    bars.replaceChildren();
    result.predictions.forEach((p, index) => {
      const item = document.createElement("li");
      item.className = index === 0 ? "infer__bar infer__bar--top" : "infer__bar";
      item.dataset.label = p.label;
      item.dataset.probability = String(p.probability);
      const label = document.createElement("span");
      label.className = "infer__label";
      label.textContent = p.label;
      const track = document.createElement("span");
      track.className = "infer__track";
      track.setAttribute("aria-hidden", "true");
      const fill = document.createElement("span");
      fill.className = "infer__fill";
      track.append(fill);
      const value = document.createElement("span");
      value.className = "infer__value";
      value.textContent = percent(p.probability);
      item.append(label, track, value);
      bars.append(item);
      requestAnimationFrame(() => { fill.style.width = `${Math.max(0, Math.min(1, p.probability)) * 100}%`; });
    });
    const top = result.predictions[0];
    status.textContent = top ? `${name}: most likely ${top.label} (${percent(top.probability)})` : "";
    const t = result.timing;
    const parts = [`Checkpoint ${result.checkpoint.path}`,
                   `${Math.round(t.total_ms)} ms`,
                   `${result.image.width}×${result.image.height} ${result.image.format}`];
    if (t.cold_start_s) parts.push(`model started in ${t.cold_start_s.toFixed(1)} s`);
    meta.textContent = parts.join(" · ");
    meta.dataset.checkpoint = result.checkpoint.path;
    this.root.dataset.state = "done";
  }
}

for (const root of document.querySelectorAll("#inference-app")) {
  if (!root.dataset.bound) {
    root.dataset.bound = "true";
    new InferencePanel(root);
  }
}
