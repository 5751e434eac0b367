// funcnn playground: the page keeps the points and draws; the server trains and predicts.
"use strict";

const COLORS = [[217, 83, 79], [51, 122, 183]]; // class 0, class 1
const GRID = 50;
const state = {
  points: [],
  labels: [],
  extent: [-1.5, 1.5, -1.5, 1.5],
  running: false,
  looping: false,
  seed: 0,
  dataSeed: 0,
};
const panels = [];
const $ = (id) => document.getElementById(id);

// A number from a text field; "" and junk give NaN, sent as null, so the server names the field.
function num(text) {
  const t = String(text).trim();
  return t === "" ? NaN : Number(t);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  };
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new Error("the server does not answer (" + e.message + ")");
  }
  let payload;
  try {
    payload = await resp.json();
  } catch (e) {
    throw new Error("HTTP " + resp.status + ": the reply is not JSON");
  }
  if (!resp.ok) throw new Error(payload.error || "HTTP " + resp.status);
  return payload;
}

function setError(text) {
  $("error").textContent = text || "";
}

function fill(select, options, value) {
  select.innerHTML = "";
  for (const o of options) {
    const opt = document.createElement("option");
    opt.value = opt.textContent = o;
    select.appendChild(opt);
  }
  select.value = value;
}

function batchSize() {
  const t = $("batch").value.trim().toLowerCase();
  return t === "" || t === "full" ? null : num(t);
}

class Panel {
  constructor(index, defaults, info) {
    const node = $("panel-template").content.firstElementChild.cloneNode(true);
    node.id = "panel-" + index;
    $("panels").appendChild(node);
    this.index = index;
    this.node = node;
    this.q = (sel) => node.querySelector(sel);
    fill(this.q(".activation"), info.activations, defaults.activation || "tanh");
    fill(this.q(".optimizer"), info.optimizers, defaults.optimizer || "adam");
    this.q(".model").value = defaults.model;
    this.q(".layers").value = String(defaults.layers || 1);
    this.q(".width").value = String(defaults.width || 16);
    this.q(".lr").value = String(defaults.lr);
    this.canvas = this.q("canvas");
    this.ctx = this.canvas.getContext("2d");
    this.id = null;
    this.generation = 0;
    this.result = null;
    for (const sel of [".model", ".layers", ".width", ".activation", ".optimizer"]) {
      this.q(sel).addEventListener("change", () => this.reset());
    }
    this.canvas.addEventListener("click", (ev) => addPoint(this.canvas, ev));
    this.showMlpFields();
  }

  showMlpFields() {
    const mlp = this.q(".model").value === "mlp";
    for (const el of this.node.querySelectorAll(".mlp-only")) el.style.display = mlp ? "" : "none";
  }

  setError(text) {
    this.q(".error").textContent = text || "";
  }

  config() {
    return {
      model: this.q(".model").value,
      layers: num(this.q(".layers").value),
      width: num(this.q(".width").value),
      activation: this.q(".activation").value,
      optimizer: this.q(".optimizer").value,
      lr: num(this.q(".lr").value),
      seed: state.seed * 10 + this.index,
    };
  }

  // A fresh model on the server, then its first picture (no training step).
  async reset() {
    this.showMlpFields();
    const generation = ++this.generation;
    this.id = null;
    this.result = null;
    this.showStats();
    try {
      const reply = await api("/api/model", this.config());
      if (generation !== this.generation) return;
      this.id = reply.id;
      this.q(".title").textContent = reply.description + " (" + reply.params + " params)";
      this.setError("");
      await this.step(0);
    } catch (e) {
      if (generation === this.generation) this.setError(e.message);
    }
    this.draw();
  }

  async step(steps) {
    if (this.id === null) throw new Error("no model: fix the settings above, or press Reset");
    const generation = this.generation;
    const reply = await api("/api/step", {
      id: this.id,
      points: state.points,
      labels: state.labels,
      steps: steps,
      lr: num(this.q(".lr").value),
      batch_size: batchSize(),
      grid: GRID,
      extent: state.extent,
    });
    if (generation !== this.generation) return;
    this.result = reply;
    this.setError(reply.diverged ? "the loss is not finite: lower the learning rate" : "");
    this.showStats();
  }

  showStats() {
    const r = this.result;
    this.q(".steps").textContent = "step " + (r ? r.steps_done : 0);
    this.q(".loss").textContent = "loss " + (r && r.loss !== null ? r.loss.toFixed(4) : "–");
    const acc = this.q(".acc");
    const a = r && r.accuracy !== null ? r.accuracy : null;
    acc.textContent = "accuracy " + (a === null ? "–" : (100 * a).toFixed(1) + "%");
    acc.dataset.value = a === null ? "" : String(a);
  }

  draw() {
    const { canvas, ctx } = this;
    const W = canvas.width, H = canvas.height;
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, W, H);
    const r = this.result;
    if (r && r.extent.every((v, i) => v === state.extent[i])) {
      const off = document.createElement("canvas");
      off.width = off.height = r.grid;
      const octx = off.getContext("2d");
      const img = octx.createImageData(r.grid, r.grid);
      for (let i = 0; i < r.probs.length; i++) {
        const p = r.probs[i];
        for (let c = 0; c < 3; c++) {
          const mixed = (1 - p) * COLORS[0][c] + p * COLORS[1][c];
          img.data[4 * i + c] = 0.45 * mixed + 0.55 * 255;
        }
        img.data[4 * i + 3] = 255;
      }
      octx.putImageData(img, 0, 0);
      ctx.imageSmoothingEnabled = true;
      ctx.drawImage(off, 0, 0, W, H);
    }
    const [xmin, xmax, ymin, ymax] = state.extent;
    const px = (x) => ((x - xmin) / (xmax - xmin)) * W;
    const py = (y) => ((ymax - y) / (ymax - ymin)) * H;
    ctx.strokeStyle = "rgba(0,0,0,0.15)";
    ctx.beginPath();
    ctx.moveTo(px(0), 0); ctx.lineTo(px(0), H);
    ctx.moveTo(0, py(0)); ctx.lineTo(W, py(0));
    ctx.stroke();
    ctx.strokeStyle = "#222";
    for (let i = 0; i < state.points.length; i++) {
      const [x, y] = state.points[i];
      ctx.fillStyle = "rgb(" + COLORS[state.labels[i]].join(",") + ")";
      ctx.beginPath();
      ctx.arc(px(x), py(y), 4, 0, 2 * Math.PI);
      ctx.fill();
      ctx.stroke();
    }
  }
}

function activePanels() {
  return $("compare").checked ? panels : panels.slice(1);
}

function updateCount() {
  $("npoints").textContent = state.points.length + " points";
}

// Predictions, loss and accuracy for the current points without a training step.
async function refresh() {
  for (const p of activePanels()) {
    if (p.id === null) continue;
    try {
      await p.step(0);
    } catch (e) {
      p.setError(e.message);
    }
    p.draw();
  }
}

function addPoint(canvas, ev) {
  const sx = canvas.width / canvas.clientWidth, sy = canvas.height / canvas.clientHeight;
  const [xmin, xmax, ymin, ymax] = state.extent;
  const x = xmin + ((ev.offsetX * sx) / canvas.width) * (xmax - xmin);
  const y = ymax - ((ev.offsetY * sy) / canvas.height) * (ymax - ymin);
  const selected = Number(document.querySelector("input[name=cls]:checked").value);
  state.points.push([Math.round(x * 1e4) / 1e4, Math.round(y * 1e4) / 1e4]);
  state.labels.push(ev.shiftKey ? 1 - selected : selected);
  updateCount();
  for (const p of panels) p.draw();
  if (!state.running) refresh();
}

function fitView() {
  let m = 1;
  for (const [x, y] of state.points) m = Math.max(m, Math.abs(x) * 1.1, Math.abs(y) * 1.1);
  const half = Math.ceil(m * 10) / 10;
  state.extent = [-half, half, -half, half];
}

async function loadDataset() {
  try {
    const reply = await api("/api/dataset", {
      name: $("dataset").value,
      n: num($("n").value),
      seed: state.dataSeed++,
    });
    state.points = reply.points;
    state.labels = reply.labels;
    fitView();
    setError("");
  } catch (e) {
    setError(e.message);
  }
  updateCount();
  for (const p of panels) p.draw();
  await refresh();
}

function setRunning(on) {
  state.running = on;
  $("start").textContent = on ? "Pause" : "Start";
  if (on && !state.looping) loop();
}

async function loop() {
  state.looping = true;
  try {
    while (state.running) {
      const t0 = performance.now();
      for (const p of activePanels()) {
        try {
          await p.step(num($("steps").value));
        } catch (e) {
          p.setError(e.message);
          setRunning(false);
        }
        p.draw();
      }
      await sleep(Math.max(0, 40 - (performance.now() - t0)));
    }
  } finally {
    state.looping = false;
  }
}

async function main() {
  let info;
  try {
    info = await api("/api/info");
  } catch (e) {
    setError(e.message);
    return;
  }
  fill($("dataset"), info.datasets, "spirals");
  panels.push(new Panel(0, { model: "logistic", optimizer: "adam", lr: 0.05 }, info));
  panels.push(new Panel(1, { model: "mlp", layers: 1, width: 16, activation: "tanh",
                             optimizer: "adam", lr: 0.02 }, info));
  $("start").addEventListener("click", () => {
    if (!state.running && state.points.length === 0) {
      setError("no points: click a canvas or load a toy set");
      return;
    }
    setError("");
    setRunning(!state.running);
  });
  $("reset").addEventListener("click", async () => {
    state.seed++;
    await Promise.all(panels.map((p) => p.reset()));
  });
  $("load").addEventListener("click", loadDataset);
  $("clear").addEventListener("click", () => {
    state.points = [];
    state.labels = [];
    updateCount();
    refresh();
  });
  $("compare").addEventListener("change", () => {
    panels[0].node.style.display = $("compare").checked ? "" : "none";
  });
  await loadDataset();
  await Promise.all(panels.map((p) => p.reset()));
  document.body.dataset.ready = "1";
}

main();
