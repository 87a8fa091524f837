// The live sampler: the chapter-03 MNIST model, exported to ONNX, run in the reader's browser
// by onnxruntime-web. Pick a seed, the number of DDIM steps and eta, press Generate, and watch
// the denoising trajectory (x_t and the predicted x_0 at each step) for a 4x4 grid of digits.
// With data-model="guided" it runs chapter 10's conditional model instead, with a digit picker
// and a guidance scale w: its exported graph takes the label and w and returns the guided
// prediction of diffusion.guidance.Guided (both predictions from one doubled batch).
//
// Everything here mirrors the library: x_T comes from the same Mulberry32 + Box-Muller generator
// as diffusion_lib/diffusion/portable_noise.py, the steps from diffusion.samplers.timestep_sequence
// ("uniform" spacing), and each update is diffusion.samplers.ddim_sample's (eq. 12 of Song et al.,
// x_0 clipped and eps re-derived from it). The files it needs (model.onnx, model.json, ort/) are
// written beside this script when the report is rendered; without them it says what is missing.
(function () {
  "use strict";
  const script = document.currentScript;
  const base = script ? script.src.replace(/[^/]*$/, "") : "widget/";
  const N = 16, COLS = 4;

  function mulberry32(a) {
    return function () {
      a |= 0; a = a + 0x6D2B79F5 | 0;
      let t = Math.imul(a ^ a >>> 15, 1 | a);
      t = t + Math.imul(t ^ t >>> 7, 61 | t) ^ t;
      return ((t ^ t >>> 14) >>> 0) / 4294967296;
    };
  }

  // standard normal numbers, Box-Muller on consecutive pairs (portable_normal in Python)
  function normals(next, n) {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i += 2) {
      const u1 = next(), u2 = next();
      const r = Math.sqrt(-2 * Math.log(Math.max(u1, 1e-300)));
      out[i] = r * Math.cos(2 * Math.PI * u2);
      if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * u2);
    }
    return out;
  }

  function roundHalfEven(x) {  // numpy's rounding
    const f = Math.floor(x), d = x - f;
    if (d > 0.5) return f + 1;
    if (d < 0.5) return f;
    return f % 2 === 0 ? f : f + 1;
  }

  // timestep_sequence(T, steps, "uniform"): strictly decreasing, from T-1 down to 0.
  // np.linspace(0, T-1, steps) computes i * step with step = (T-1)/(steps-1), last value exact.
  function timesteps(T, steps) {
    if (steps === 1) return [T - 1];
    const seq = [], step = (T - 1) / (steps - 1);
    for (let i = 0; i < steps; i++) seq.push(roundHalfEven(i === steps - 1 ? T - 1 : i * step));
    for (let i = 0; i < steps; i++) seq[i] = Math.min(Math.max(seq[i], i), T - steps + i);
    for (let i = 1; i < steps; i++) seq[i] = Math.max(seq[i], seq[i - 1] + 1);
    return seq.reverse();
  }

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => e.setAttribute(k, v));
    if (text) e.textContent = text;
    return e;
  }

  function draw(canvas, data, shape) {
    const [c, h, w] = shape, pad = 2, rows = Math.ceil(N / COLS);
    canvas.width = COLS * (w + pad) + pad;
    canvas.height = rows * (h + pad) + pad;
    const ctx = canvas.getContext("2d");
    const img = ctx.createImageData(canvas.width, canvas.height);
    img.data.fill(255);
    for (let k = 0; k < N; k++) {
      const ox = pad + (k % COLS) * (w + pad), oy = pad + Math.floor(k / COLS) * (h + pad);
      for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
        const p = 4 * ((oy + y) * canvas.width + ox + x);
        for (let ch = 0; ch < 3; ch++) {
          const v = data[((k * c + (c === 3 ? ch : 0)) * h + y) * w + x];
          img.data[p + ch] = Math.max(0, Math.min(255, Math.round((v + 1) * 127.5)));
        }
      }
    }
    ctx.putImageData(img, 0, 0);
  }

  async function load(status, name) {
    if (location.protocol === "file:") throw new Error("the live sampler needs the report served over http " +
      "(for example `python -m http.server` in the report's folder); opened from disk, the browser refuses to load the model");
    if (typeof ort === "undefined") {
      await new Promise((resolve, reject) => {
        const tag = el("script", {src: base + "ort/ort.wasm.min.js"});
        tag.onload = resolve;
        tag.onerror = () => reject(new Error("onnxruntime-web was not installed when this report was rendered " +
                                             "(npm was unavailable)"));
        document.head.appendChild(tag);
      });
    }
    const meta = await fetch(base + name + ".json").then(r => {
      if (!r.ok) throw new Error(`the exported model (${name}.json) is not part of this report`);
      return r.json();
    });
    ort.env.wasm.wasmPaths = base + "ort/";
    ort.env.wasm.numThreads = 1;
    status.textContent = "loading the model...";
    const session = await ort.InferenceSession.create(base + name + ".onnx", {executionProviders: ["wasm"]});
    return {meta, session};
  }

  async function sample(model, seed, steps, eta, label, scale, onStep) {
    const {meta, session} = model;
    if (meta.batch && meta.batch !== N) throw new Error(`the exported model takes batches of ${meta.batch}, not ${N}`);
    const [c, h, w] = [meta.channels, meta.image_size, meta.image_size];
    const size = N * c * h * w, T = meta.noise_steps;
    const next = mulberry32(seed);
    let x = normals(next, size);
    const seq = timesteps(T, steps), ab = meta.alpha_bar, r = meta.sqrt_recip_alpha_bar, rm1 = meta.sqrt_recipm1_alpha_bar;
    for (let i = 0; i < seq.length; i++) {
      const t = seq[i], tPrev = i + 1 < seq.length ? seq[i + 1] : -1;
      const a = ab[t], aPrev = tPrev >= 0 ? ab[tPrev] : 1;
      const feeds = {x: new ort.Tensor("float32", x, [N, c, h, w]),
                     t: new ort.Tensor("int64", BigInt64Array.from({length: N}, () => BigInt(t)), [N])};
      if (meta.num_classes) {  // the guided graph: the label asked for and the guidance scale
        feeds.y = new ort.Tensor("int64", BigInt64Array.from({length: N}, () => BigInt(label)), [N]);
        feeds.w = new ort.Tensor("float32", Float32Array.of(scale), [1]);
      }
      const eps = (await session.run(feeds)).eps.data;
      const x0 = new Float32Array(size), next_x = new Float32Array(size);
      const sigma = eta * Math.sqrt((1 - aPrev) / (1 - a)) * Math.sqrt(1 - a / aPrev);
      const dir = Math.sqrt(Math.max(1 - aPrev - sigma * sigma, 0));
      const z = eta > 0 && tPrev >= 0 ? normals(next, size) : null;
      for (let j = 0; j < size; j++) {
        const x0j = Math.min(1, Math.max(-1, r[t] * x[j] - rm1[t] * eps[j]));
        const epsj = (r[t] * x[j] - x0j) / rm1[t];
        x0[j] = x0j;
        next_x[j] = Math.sqrt(aPrev) * x0j + dir * epsj + (z ? sigma * z[j] : 0);
      }
      x = next_x;
      onStep({index: i, t, x, x0});
      await new Promise(res => setTimeout(res, 0));  // let the page paint the step
    }
    return x;
  }

  async function mount(root) {
    root.classList.add("live-sampler-ready");
    const form = el("div", {class: "ls-controls"});
    const seed = el("input", {type: "number", value: "0", min: "0", "aria-label": "seed", class: "ls-seed"});
    const steps = el("input", {type: "number", value: "20", min: "1", max: "1000", "aria-label": "DDIM steps", class: "ls-steps"});
    const eta = el("input", {type: "number", value: "0", min: "0", max: "1", step: "0.1", "aria-label": "eta", class: "ls-eta"});
    const go = el("button", {type: "button", class: "ls-go"}, "Generate");
    const name = root.dataset.model || "model", guided = name === "guided";
    const controls = [["seed", seed], ["DDIM steps", steps], ["eta", eta]];
    const digit = el("select", {"aria-label": "digit", class: "ls-digit"});
    for (let d = 0; d < 10; d++) digit.appendChild(el("option", {value: String(d)}, String(d)));
    const scale = el("input", {type: "range", min: "0", max: "8", step: "0.5", value: "3", "aria-label": "guidance scale w",
                               class: "ls-w"});
    const scaleShown = el("span", {class: "ls-w-value"}, "3");
    scale.addEventListener("input", () => { scaleShown.textContent = scale.value; });
    if (guided) controls.push(["digit", digit], ["guidance w", scale]);
    controls.forEach(([label, input]) => {
      const l = el("label", {}, label + " "); l.appendChild(input);
      if (input === scale) l.appendChild(scaleShown);
      form.appendChild(l);
    });
    form.appendChild(go);
    const status = el("p", {class: "ls-status"}, "");
    const panes = el("div", {class: "ls-panes"});
    const cx = el("canvas", {class: "ls-xt", title: "x_t"}), c0 = el("canvas", {class: "ls-x0", title: "predicted x_0"});
    [["x_t", cx], ["predicted x_0", c0]].forEach(([label, canvas]) => {
      const f = el("div", {class: "ls-pane"}); f.appendChild(canvas); f.appendChild(el("div", {class: "ls-label"}, label)); panes.appendChild(f);
    });
    const scrub = el("input", {type: "range", min: "0", max: "0", value: "0", class: "ls-scrub", "aria-label": "step"});
    root.append(form, status, panes, scrub);
    let model = null, frames = [];
    const show = (k) => {
      const f = frames[k]; if (!f) return;
      draw(cx, f.x, f.shape); draw(c0, f.x0, f.shape);
      status.dataset.step = String(k);
    };
    scrub.addEventListener("input", () => show(Number(scrub.value)));
    async function run(s, n, e, label = 0, w = 0) {
      model = model || await load(status, name);
      frames = [];
      const shape = [model.meta.channels, model.meta.image_size, model.meta.image_size];
      const t0 = performance.now();
      const x = await sample(model, s, n, e, label, w, (info) => {
        frames.push({...info, shape});
        show(frames.length - 1);
        status.textContent = `step ${info.index + 1} of ${n} (t = ${info.t})`;
      });
      const ms = performance.now() - t0;
      scrub.max = String(frames.length - 1); scrub.value = scrub.max;
      const what = guided ? `${N} samples of the digit ${label} with guidance w = ${w}` : `${N} digits`;
      status.textContent = `${what}, DDIM-${n} (eta = ${e}), seed ${s}: ${(ms / 1000).toFixed(2)} s in this browser`;
      root.dataset.done = "1";
      return {x: Array.from(x), ms, t: frames.map(f => f.t)};
    }
    root.liveSampler = {run, timesteps};
    go.addEventListener("click", () => {
      root.dataset.done = "";
      run(Number(seed.value), Number(steps.value), Number(eta.value), Number(digit.value), Number(scale.value))
        .catch(err => fail(err));
    });
    function fail(err) {
      status.textContent = "The live sampler is unavailable here: " + err.message + ".";
      root.classList.add("live-sampler-unavailable");
      root.dataset.done = "error";
    }
    try {
      model = await load(status, name);
      status.textContent = guided ? "ready: choose a digit, a guidance scale and a seed, and press Generate"
                                  : "ready: choose a seed and press Generate";
    }
    catch (err) { fail(err); }
  }

  function start() { document.querySelectorAll(".live-sampler").forEach(mount); }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
