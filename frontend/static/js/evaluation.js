// The evaluation panel (templates/_evaluation.html): start a custom or standard evaluation,
// follow it ("Start evaluation" -> "Evaluating…" -> "View report"), and chart loss and
// accuracy from /api/v1/trainings/{id}/metrics, live while the training runs.
import { api, ApiError, isFinished } from "/static/js/common.js";
import uPlot from "/static/vendor/uplot-1.6.32/uPlot.esm.js";

const STARTING_POLL_MS = 700;
const METRICS_POLL_MS = 5000;
const COLORS = ["#4a47d1", "#d1474a", "#17803d", "#9a5b00", "#1a7fb5", "#8a3fc1",
                "#c1633f", "#3f8ac1"];

function contextText(context) {
  const entries = Object.entries(context || {});
  return entries.length ? entries.map(([k, v]) => `${k}=${v}`).join(", ") : "";
}

// Runs named by Aim's default ("Run: <hash>") are told apart by the hyperparameters that
// differ between them (e.g. batch_size=64 / batch_size=128).
function runLabels(runs) {
  const hparams = runs.map((r) => (r.params && r.params.hparams) || {});
  const keys = [...new Set(hparams.flatMap((h) => Object.keys(h)))].filter(
    (k) => new Set(hparams.map((h) => JSON.stringify(h[k]))).size > 1);
  const labels = {};
  runs.forEach((run, i) => {
    const differs = keys.map((k) => `${k}=${hparams[i][k]}`).join(", ");
    labels[run.name] = run.name.startsWith("Run: ") && differs ? differs : run.name;
  });
  return labels;
}

function lastValue(values) {
  for (let i = values.length - 1; i >= 0; i -= 1) {
    if (values[i] !== null && values[i] !== undefined) return values[i];
  }
  return null;
}

class MetricChart {
  constructor(el, metric) {
    this.el = el;
    this.metric = metric;
    this.plot = null;
    this.labels = "";
    this.el.setAttribute("role", "img");
    new ResizeObserver(() => this.resize()).observe(this.el);
  }

  width() {
    return Math.max(240, Math.floor(this.el.getBoundingClientRect().width));
  }

  resize() {
    if (this.plot) this.plot.setSize({ width: this.width(), height: 220 });
  }

  // series: [{run, name, context, steps, values}] of this chart's metric
  update(series) {
    const contexts = new Set(series.map((s) => contextText(s.context)));
    const labelled = series.map((s) => {
      const ctx = contexts.size > 1 ? contextText(s.context) : "";
      return { label: ctx ? `${s.run} (${ctx})` : s.run, data: s };
    });
    const labels = labelled.map((l) => l.label).join("\n");
    const data = uPlot.join(labelled.map((l) => [l.data.steps, l.data.values]));
    this.el.setAttribute("aria-label", `${this.metric}: ` + labelled.map(
      (l) => `${l.label} ends at ${lastValue(l.data.values)}`).join("; "));
    if (this.plot && labels === this.labels) {
      this.plot.setData(data);
      return;
    }
    if (this.plot) this.plot.destroy();
    this.labels = labels;
    const xName = this.metric === "accuracy" ? "epoch" : "step";
    this.plot = new uPlot({
      width: this.width(),
      height: 220,
      // Steps and epochs are whole numbers; one point (a one-epoch run) sits mid-axis
      // (uPlot would pad it to 0..2 before asking).
      scales: { x: { time: false, range: (u, min, max) => (u.data[0].length === 1
        ? [u.data[0][0] - 0.5, u.data[0][0] + 0.5] : [min, max]) } },
      axes: [{ label: xName, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000,
                                     10000, 20000, 50000, 100000] }, {}],
      // The x range, readable from the page (tests, and anyone inspecting the chart).
      hooks: { setScale: [(u, key) => {
        if (key === "x") this.el.dataset.xRange = `${u.scales.x.min}..${u.scales.x.max}`;
      }] },
      series: [{ label: xName }, ...labelled.map((l, i) => ({
        label: l.label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true,
        points: { show: l.data.steps.length < 60 },
      }))],
    }, data, this.el);
  }
}

class EvaluationPanel {
  constructor(root) {
    this.root = root;
    this.section = root.closest("#evaluation") || root;
    this.el = {};
    for (const node of root.querySelectorAll("[data-role]")) this.el[node.dataset.role] = node;
    this.evaluation = null;
    this.prefilled = false;
    this.pollTimer = null;
    this.metricsTimer = null;
    this.charts = {
      loss: new MetricChart(this.el["loss-chart"], "loss"),
      accuracy: new MetricChart(this.el["accuracy-chart"], "accuracy"),
    };
    this.bind();
    this.loadEvaluation();
    this.loadMetrics();
  }

  get status() {
    return this.section.dataset.status || this.root.dataset.status;
  }

  bind() {
    const { form, custom, standard } = this.el;
    for (const radio of [custom, standard]) radio.addEventListener("change", () => this.render());
    this.el.path.addEventListener("input", () => this.render());
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.start();
    });
    document.addEventListener("training:status", (event) => {
      if (String(event.detail.id) !== this.root.dataset.trainingId) return;
      this.root.dataset.status = event.detail.status;
      if (event.detail.status === "Completed") this.loadEvaluation();
      this.render();
      this.loadMetrics();
    });
  }

  chosen() {
    const type = this.el.custom.checked ? "custom" : "standard";
    return type === "custom" ? { type, aim_path: this.el.path.value.trim() } : { type };
  }

  sameAsRunning() {
    const ev = this.evaluation;
    if (!ev || !["running", "starting"].includes(ev.status)) return false;
    const want = this.chosen();
    return ev.type === want.type && (want.type !== "custom" || ev.aim_path === want.aim_path);
  }

  render() {
    const { start, view, status, error } = this.el;
    const ev = this.evaluation;
    const completed = this.status === "Completed";
    this.el["path-field"].hidden = !this.el.custom.checked;
    const starting = ev && ev.status === "starting";
    const running = ev && ev.status === "running";
    view.hidden = !running;
    if (running) view.href = ev.report_url;
    start.hidden = Boolean(running && this.sameAsRunning());
    start.disabled = !completed || Boolean(starting);
    start.setAttribute("aria-busy", starting ? "true" : "false");
    start.textContent = starting ? "Evaluating…" : "Start evaluation";
    error.hidden = !(ev && ev.status === "failed" && ev.error);
    if (!error.hidden) error.textContent = ev.error;
    if (!completed) {
      status.textContent = isFinished(this.status)
        ? `Evaluation needs a Completed training; this one is ${this.status}.`
        : "Evaluation opens once the training has Completed.";
    } else if (starting) {
      status.textContent = "Starting Aim…";
    } else if (running) {
      status.textContent = "Report ready.";
    } else if (ev && ev.status === "expired") {
      status.textContent = "The report stopped after a while unused: start it again.";
    } else {
      status.textContent = "";
    }
    this.root.dataset.state = ev ? ev.status : "none";
  }

  showError(err) {
    const { error } = this.el;
    error.hidden = false;
    error.textContent = err instanceof ApiError ? err.message : String(err);
  }

  async loadEvaluation() {
    clearTimeout(this.pollTimer);
    if (this.status !== "Completed" || this.root.dataset.hasEvaluation !== "true") {
      // None exists (only a Completed training can have one): asking would earn a 404.
      this.evaluation = null;
      this.render();
      return;
    }
    try {
      const response = await api("GET", this.root.dataset.evaluationUrl);
      this.evaluation = await response.json();
      if (this.evaluation.type === "custom") {
        this.el.custom.checked = true;
        this.el.path.value = this.evaluation.aim_path || this.el.path.value;
      } else if (this.evaluation.type === "standard") {
        this.el.standard.checked = true;
      }
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) this.showError(err);
      this.evaluation = null;
    }
    this.render();
    if (this.evaluation && this.evaluation.status === "starting") {
      this.pollTimer = setTimeout(() => this.loadEvaluation(), STARTING_POLL_MS);
    }
  }

  async start() {
    this.el.error.hidden = true;
    this.root.dataset.hasEvaluation = "true";
    this.evaluation = { ...(this.evaluation || {}), ...this.chosen(), status: "starting" };
    this.render();
    try {
      const response = await api("POST", this.root.dataset.evaluationUrl, { json: this.chosen() });
      this.evaluation = await response.json();
    } catch (err) {
      this.evaluation = null;
      this.root.dataset.hasEvaluation = "false";
      this.render();
      this.showError(err);
      return;
    }
    this.render();
    if (this.evaluation.status === "starting") {
      this.pollTimer = setTimeout(() => this.loadEvaluation(), STARTING_POLL_MS);
    }
  }

  async loadMetrics() {
    clearTimeout(this.metricsTimer);
    let body;
    try {
      body = await (await api("GET", this.root.dataset.metricsUrl)).json();
    } catch (err) {
      return;
    }
    if (body.aim_repo && !this.evaluation && !this.prefilled) {
      // The training has its own Aim repository: offer it, once (the user may switch).
      this.prefilled = true;
      this.el.custom.checked = true;
      this.el.path.value = body.aim_repo;
    }
    const labels = runLabels(body.runs);
    const byMetric = { loss: [], accuracy: [] };
    for (const s of body.series) {
      if (s.name in byMetric) byMetric[s.name].push({ ...s, run: labels[s.run] || s.run });
    }
    // Code may track loss per step and per epoch under one name: chart the steps.
    const perStep = byMetric.loss.filter((s) => !s.steps.every((x, i) => s.epochs[i] === x));
    if (perStep.length) byMetric.loss = perStep;
    const any = byMetric.loss.length + byMetric.accuracy.length > 0;
    this.el.charts.hidden = !any;
    this.el["charts-empty"].hidden = any;
    for (const [metric, series] of Object.entries(byMetric)) {
      this.charts[metric].el.closest("figure").hidden = series.length === 0;
      if (series.length) this.charts[metric].update(series);
    }
    this.render();
    if (!isFinished(body.status)) {
      this.metricsTimer = setTimeout(() => this.loadMetrics(), METRICS_POLL_MS);
    }
  }
}

const root = document.getElementById("evaluation-app");
if (root) new EvaluationPanel(root);
