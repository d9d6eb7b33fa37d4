// A log viewer that stays fast with large logs: text is appended as batched text nodes once
// per animation frame, the page keeps only the last CAP lines, and earlier parts are fetched
// on demand from the REST log endpoint by byte offset.
import { api, formatSize } from "./common.js";

const CAP = 5000; // lines kept in the page while following
const BATCH = 500; // lines per text node, the unit in which old lines are dropped
const TAIL_BYTES = 512 * 1024; // read on open: enough for CAP lines of usual length
const EARLIER_BYTES = 256 * 1024; // read by each "load earlier"
const encoder = new TextEncoder();

const byteLength = (text) => encoder.encode(text).length;

function countLines(text) {
  let n = 0;
  for (let i = text.indexOf("\n"); i !== -1; i = text.indexOf("\n", i + 1)) n += 1;
  return n;
}

// Index where the last `keep` lines of `text` begin (0 when it has fewer).
function lastLinesStart(text, keep) {
  let pos = text.endsWith("\n") ? text.length - 1 : text.length;
  for (let seen = 0; seen < keep; seen += 1) {
    pos = text.lastIndexOf("\n", pos - 1);
    if (pos === -1) return 0;
  }
  return pos + 1;
}

// Splits text into pieces of at most BATCH lines.
function batches(text) {
  const out = [];
  let start = 0;
  while (start < text.length) {
    let end = start;
    for (let n = 0; n < BATCH; n += 1) {
      const next = text.indexOf("\n", end);
      if (next === -1) { end = text.length; break; }
      end = next + 1;
    }
    out.push(text.slice(start, end));
    start = end;
  }
  return out;
}

export class LogView {
  constructor({ trainingId, scroll, text, earlier, earlierButton, empty, lines, size, state }) {
    Object.assign(this, { trainingId, scroll, text, earlier, earlierButton, empty,
                          linesLabel: lines, sizeLabel: size, stateLabel: state });
    this.chunks = []; // {node, lines, bytes}, oldest first
    this.totalLines = 0;
    this.startByte = 0; // offset in the log file of the first shown character
    this.endByte = 0; // offset just after the last received character
    this.pending = [];
    this.pendingLines = 0; // lines in `pending`
    this.queuedLines = 0; // lines received since the last render (some may be compacted away)
    this.paused = false;
    this.stick = true;
    this.frame = 0;
    this.fileSize = 0;
    this.gap = false; // queued text no longer joins what is shown
    scroll.addEventListener("scroll", () => {
      this.stick = scroll.scrollTop + scroll.clientHeight >= scroll.scrollHeight - 24;
    }, { passive: true });
    earlierButton.addEventListener("click", () => this.loadEarlier());
  }

  // Shows the end of the log and returns the offset to follow from.
  async loadTail() {
    const response = await api("GET", `/api/v1/trainings/${this.trainingId}/log?offset=-${TAIL_BYTES}`,
                               { headers: { Accept: "text/plain" } });
    let body = await response.text();
    const start = Number(response.headers.get("X-Log-Start") || 0);
    this.endByte = Number(response.headers.get("X-Next-Offset") || 0);
    this.fileSize = Number(response.headers.get("X-Log-Size") || this.endByte);
    let dropped = 0;
    if (start > 0) { // the read began mid-line: start at the next whole line
      const cut = body.indexOf("\n") + 1;
      dropped = byteLength(body.slice(0, cut));
      body = body.slice(cut);
    }
    this.startByte = start + dropped;
    this.appendNow(body);
    this.scrollToEnd();
    return this.endByte;
  }

  // Queues text that ends at byte `endByte` (an SSE event id) for the next frame.
  push(text, endByte) {
    const lines = countLines(text);
    this.pending.push(text);
    this.pendingLines += lines;
    this.queuedLines += lines;
    if (this.pendingLines > 2 * CAP) { // paused or hidden for long: keep only what will show
      const queued = this.pending.join("");
      const kept = queued.slice(lastLinesStart(queued, CAP));
      this.pending = [kept];
      this.pendingLines = countLines(kept);
      this.gap = true;
    }
    if (endByte) this.endByte = endByte;
    this.fileSize = Math.max(this.fileSize, this.endByte);
    if (this.paused) this.updateLabels();
    else if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.frame = 0;
    if (this.paused || this.pending.length === 0) return;
    const text = this.pending.join("");
    this.pending = [];
    this.pendingLines = 0;
    this.queuedLines = 0;
    this.appendNow(text);
    if (this.stick) this.scrollToEnd();
  }

  appendNow(text) {
    if (!text) { this.updateLabels(); return; }
    const keepFrom = lastLinesStart(text, CAP);
    if (keepFrom > 0 || this.gap) { // more than CAP new lines: everything shown so far goes
      this.gap = false;
      for (const chunk of this.chunks) chunk.node.remove();
      this.chunks = [];
      this.totalLines = 0;
      this.startByte = this.endByte - byteLength(text.slice(keepFrom));
      text = text.slice(keepFrom);
    }
    const fragment = document.createDocumentFragment();
    for (const piece of batches(text)) {
      const node = document.createTextNode(piece);
      fragment.append(node);
      const lines = countLines(piece);
      this.chunks.push({ node, lines, bytes: byteLength(piece) });
      this.totalLines += lines;
    }
    this.text.append(fragment);
    while (this.chunks.length > 1 && this.totalLines - this.chunks[0].lines >= CAP) {
      const old = this.chunks.shift();
      old.node.remove();
      this.totalLines -= old.lines;
      this.startByte += old.bytes;
    }
    this.updateLabels();
  }

  async loadEarlier() {
    if (this.startByte <= 0) return;
    const from = Math.max(0, this.startByte - EARLIER_BYTES);
    this.earlierButton.setAttribute("aria-busy", "true");
    try {
      const response = await api("GET", `/api/v1/trainings/${this.trainingId}/log?offset=${from}&limit=${this.startByte - from}`,
                                 { headers: { Accept: "text/plain" } });
      let body = await response.text();
      let begin = from;
      if (from > 0) {
        const cut = body.indexOf("\n") + 1;
        begin += byteLength(body.slice(0, cut));
        body = body.slice(cut);
      }
      const before = this.scroll.scrollHeight;
      const fragment = document.createDocumentFragment();
      const added = batches(body).map((piece) => {
        const node = document.createTextNode(piece);
        fragment.append(node);
        return { node, lines: countLines(piece), bytes: byteLength(piece) };
      });
      this.text.prepend(fragment);
      this.chunks.unshift(...added);
      this.totalLines += added.reduce((sum, c) => sum + c.lines, 0);
      this.startByte = begin;
      this.scroll.scrollTop += this.scroll.scrollHeight - before; // keep the reader's place
      this.stick = false;
      this.updateLabels();
    } finally {
      this.earlierButton.removeAttribute("aria-busy");
    }
  }

  setPaused(paused) {
    this.paused = paused;
    if (!paused) { this.flush(); if (this.stick) this.scrollToEnd(); }
    this.updateLabels();
  }

  scrollToEnd() {
    this.stick = true;
    this.scroll.scrollTop = this.scroll.scrollHeight;
  }

  jumpToEnd() {
    if (this.paused) this.setPaused(false);
    this.flush();
    this.scrollToEnd();
  }

  updateLabels() {
    const shown = this.totalLines.toLocaleString();
    this.earlier.hidden = this.startByte <= 0;
    this.empty.hidden = this.chunks.length > 0 || this.pending.length > 0;
    let label = `${shown} line${this.totalLines === 1 ? "" : "s"}`;
    if (this.startByte > 0) label += ` shown · ${formatSize(this.startByte)} earlier not loaded`;
    if (this.paused && this.queuedLines) label += ` · ${this.queuedLines.toLocaleString()} new while paused`;
    this.linesLabel.textContent = label;
    this.sizeLabel.textContent = formatSize(Math.max(this.fileSize, this.endByte));
  }
}
