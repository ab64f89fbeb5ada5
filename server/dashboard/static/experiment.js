// One experiment, live: measured positions, posterior maps, convergence, the model and the
// measurements. State comes from the API once, then from websocket events; the posterior
// grid (and with it the acquisition surface and convergence) is refetched after each batch
// of measurements or refit, debounced, never on a timer.

import { api, ApiError } from "./api.js";
import { ago, clock, fmt, h } from "./dom.js";
import { debounce, follow } from "./live.js";
import { drawCurve, drawHeat, drawLines, drawMap, label, purge } from "./plots.js";
import { acquisitionSurface, allowed, histogramMean, maxMean, recentRate } from "./stats.js";
import { measurementTable, thumbnailUrl } from "./table.js";

const GRID_2D = 50; // 2,500 posterior points: ~30 ms on the server, smooth with zsmooth
const GRID_1D = 200;
const REFRESH_MS = 300; // collect a burst of events into one posterior fetch

export function experimentView(root, id) {
  const st = {
    exp: null, measured: new Map(), pending: new Map(), view: null, grid: null,
    conv: loadConvergence(id), asked: [], metrics: null, live: "connecting",
  };
  const el = skeleton(root);
  const table = measurementTable(el.table, () => st, id);
  let destroyed = false;

  // --- data ------------------------------------------------------------------------------

  async function resync() {
    const exp = await api.experiment(id);
    st.exp = exp;
    if (!st.view) st.view = defaultView(exp.spec);
    let after = st.measured.size ? Math.max(...st.measured.keys()) : 0;
    for (;;) {
      const page = await api.measurements(id, after);
      for (const m of page.measurements) st.measured.set(m.seq, m);
      if (page.next_after === null) break;
      after = page.next_after;
    }
    const suggestions = await api.suggestions(id);
    st.pending = new Map(suggestions.filter((s) => s.status === "pending").map((s) => [s.id, s]));
    const times = sortedMeasured().map((m) => m.created_at);
    st.asked = suggestions.filter((s) => Object.keys(s.std).length)
      .map((s) => ({ n: countUpTo(times, s.created_at), std: s.std }));
    if (destroyed) return;
    renderControls();
    renderAll();
    refreshModel();
  }

  const refreshModel = debounce(async () => {
    // The model first, then its posterior: the grid then holds at least model.n measurements
    // (a tell in between is at most one batch more, and its event schedules another refresh).
    const exp = await api.experiment(id);
    const [grid, metrics] = await Promise.all([fetchGrid(), api.metrics().catch(() => null)]);
    if (destroyed) return;
    st.exp = exp;
    st.grid = grid;
    st.metrics = metrics;
    recordConvergence(exp.model ? exp.model.n : 0);
    renderAll();
  }, REFRESH_MS);

  async function fetchGrid() {
    const params = st.exp.spec.parameters;
    const { ax, ay, at } = st.view;
    if (params.length === 1) return api.posteriorGrid(id, GRID_1D);
    if (params.length === 2 && ax === params[0].name && ay === params[1].name) {
      return api.posteriorGrid(id, GRID_2D);
    }
    return api.posterior(id, { grid: { [ax]: GRID_2D, [ay]: GRID_2D }, at });
  }

  function onEvent(e) {
    const d = e.data;
    if (e.type === "measurements") {
      for (const m of d.measurements) {
        st.measured.set(m.seq, m);
        if (m.suggestion_id) st.pending.delete(m.suggestion_id);
      }
      renderMeasured();
      refreshModel();
    } else if (e.type === "suggestions") {
      for (const s of d.suggestions) {
        st.pending.set(s.id, s);
        if (Object.keys(s.std).length) st.asked.push({ n: st.measured.size, std: s.std });
      }
      renderMeasured();
      renderConvergence();
    } else if (e.type === "suggestion_closed") {
      st.pending.delete(d.id);
      renderMeasured();
    } else if (e.type === "refit") {
      refreshModel();
    } else if (e.type === "status" && st.exp) {
      st.exp.status = d.status;
      if (d.status === "closed") st.pending.clear();
      renderHeader();
      renderMeasured();
    }
  }

  const live = follow(id, {
    onOpen: () => resync().catch(showError),
    onEvent,
    onState: (s) => {
      st.live = s;
      renderHeader();
    },
  });

  // --- rendering -------------------------------------------------------------------------

  function renderAll() {
    renderHeader();
    renderMeasured(); // with the posterior maps
    renderConvergence();
    renderModel();
  }

  function renderHeader() {
    const exp = st.exp;
    el.live.textContent = st.live;
    el.live.dataset.state = st.live;
    if (!exp) return;
    el.name.textContent = exp.spec.name;
    el.id.textContent = exp.id;
    el.status.textContent = exp.status;
    el.status.dataset.status = exp.status;
    el.goal.textContent = `${exp.spec.goal} · ${exp.spec.acquisition} · ${exp.spec.kernel} · q = ${exp.spec.batch_size}`;
    el.pause.hidden = exp.status !== "active";
    el.resume.hidden = exp.status !== "paused";
    el.close.hidden = exp.status === "closed";
  }

  function renderMeasured() {
    if (!st.exp) return;
    const measured = sortedMeasured();
    const pending = [...st.pending.values()];
    el.count.textContent = String(measured.length);
    el.pendingCount.textContent = String(pending.length);
    const times = measured.map((m) => m.created_at);
    const rate = recentRate(times);
    el.rate.textContent = rate === null ? "—" : `${fmt(rate, 3)} / min`;
    el.lastAt.textContent = measured.length ? ago(times[times.length - 1]) : "never";
    const { px, py, output } = axes();
    if (!py) {
      drawCurve(el.map, { px, output, measured, pending, grid: curveGrid() }).then(hoverThumbs);
    } else {
      drawMap(el.map, { px, py, output, measured, pending, projected: st.exp.spec.parameters.length > 2, path: motorPath(measured, pending, px, py),
        forbidden: st.exp.spec.forbidden, at: st.view.at,
        range: { x: pad(px), y: pad(py) } }).then(hoverThumbs);
    }
    renderPosterior();
    drawLines(el.rate_plot, {
      title: "Measurements over time", xTitle: "time", yTitle: "measurements",
      series: [{ name: "measurements", x: times.map((t) => new Date(t * 1000)),
        y: times.map((_, i) => i + 1), shape: "hv" }],
    });
    table.render();
  }

  function renderPosterior() {
    const { px, py, output } = axes();
    const g = st.grid;
    el.heat.hidden = !py;
    el.posteriorNote.textContent = g ? "" : "waiting for the posterior…";
    if (!g || !py) return;
    const o = g.outputs[output.name];
    const x = g.axes[px.name];
    const y = g.axes[py.name];
    const first = st.exp.spec.parameters.findIndex((p) => p.name === px.name)
      < st.exp.spec.parameters.findIndex((p) => p.name === py.name);
    const reshape = (v) => y.map((_, j) => x.map((_, i) => v[first ? i * y.length + j : j * x.length + i]));
    const measured = sortedMeasured();
    const pending = [...st.pending.values()];
    const common = { px, py, x, y, measured, pending, forbidden: st.exp.spec.forbidden, at: st.view.at };
    const units = output.units ? ` (${output.units})` : "";
    if (o.mean.every((v) => v === null)) {
      el.posteriorNote.textContent = "no model yet: the initial design is still being measured";
    }
    drawHeat(el.mean, { ...common, title: `Posterior mean of ${output.name}`, z: reshape(o.mean),
      colorTitle: `mean${units}`, colorscale: "Viridis" });
    drawHeat(el.std, { ...common, title: `Posterior std of ${output.name}`, z: reshape(o.std),
      colorTitle: `std${units}`, colorscale: "YlOrRd", reversescale: true });
    const target = st.exp.spec.target;
    const to = g.outputs[target];
    const acq = acquisitionSurface(st.exp.spec, to.mean, to.std,
      measured.map((m) => m.values[target]));
    const tu = st.exp.spec.outputs.find((x) => x.name === target).units;
    drawHeat(el.acq, { ...common, title: `Acquisition: ${acq.title}`, z: reshape(acq.z),
      colorTitle: `${acq.name}${tu ? ` (${tu})` : ""}`, colorscale: "Cividis" });
    el.acqNote.textContent = acq.note || "";
  }

  function renderConvergence() {
    if (!st.exp) return;
    const key = convergenceKey();
    const hist = st.conv[key] || [];
    const { output } = axes();
    const est = mapErrorSeries(output.name, hist);
    const units = output.units ? ` (${output.units})` : "";
    drawLines(el.conv, {
      title: `Posterior std of ${output.name} vs measurements`,
      xTitle: "measurements N", yTitle: `posterior std${units}`,
      series: [{ name: "max on the grid", x: hist.map((r) => r[0]), y: hist.map((r) => r[1]) },
        { name: "mean on the grid", x: hist.map((r) => r[0]), y: hist.map((r) => r[2]) },
        { name: "map error estimate (RMS, whole domain)", x: est.map((r) => r[0]), y: est.map((r) => r[1]) },
        { name: "at each suggestion, when asked", mode: "markers",
          x: st.asked.map((a) => a.n), y: st.asked.map((a) => a.std[output.name]) }],
    });
    const slice = st.exp.spec.parameters.length > 2 ? " on the shown slice" : "";
    el.convNote.textContent = `Grid max/mean: ${st.exp.spec.parameters.length > 1 ? `${GRID_2D}×${GRID_2D}` : GRID_1D}`
      + ` grid${slice}, outside forbidden regions, recorded by this browser while the page is`
      + " open. Map error estimate: the server's RMS posterior std over the whole allowed"
      + " region (steering output only; what a plan with target_error stops on), after each"
      + " refit for the whole run as the server keeps it, and between refits while the page is"
      + " open. Suggestions: the std the engine reported where it chose to measure, for the"
      + " whole run.";
    const ask = st.metrics && histogramMean(st.metrics, "beamsteer_suggest_seconds");
    const tell = st.metrics && histogramMean(st.metrics, "beamsteer_measure_seconds");
    const refit = st.metrics && histogramMean(st.metrics, "beamsteer_refit_seconds");
    const ms = (x) => (x ? `${fmt(1000 * x.mean, 3)} ms (${x.count})` : "—");
    el.latency.replaceChildren(
      h("dt", {}, "ask latency, mean (server-wide)"), h("dd", {}, ms(ask)),
      h("dt", {}, "tell latency, mean (server-wide)"), h("dd", {}, ms(tell)),
      h("dt", {}, "refit duration, mean (server-wide)"), h("dd", {}, ms(refit)));
  }

  function renderModel() {
    const exp = st.exp;
    if (!exp) return;
    const model = exp.model;
    const params = exp.spec.parameters;
    if (!model || !Object.keys(model.outputs).length) {
      el.model.replaceChildren(h("p", { class: "muted" }, "No model yet."));
      return;
    }
    const head = h("tr", {}, h("th", {}, "output"), h("th", {}, "kernel"),
      params.map((p) => h("th", {}, `lengthscale ${label(p)}`)),
      h("th", {}, "signal std"), h("th", {}, "noise std"), h("th", {}, "fitted on / N"),
      h("th", { title: "RMS posterior std over the allowed region, and its share of the measured range (steering output)" },
        "map error (est.)"),
      h("th", {}, "last refit"), h("th", {}, "failures"));
    const rows = Object.entries(model.outputs).map(([name, o]) => {
      const hp = o.hyperparameters || {};
      const out = exp.spec.outputs.find((x) => x.name === name) || { name };
      const u = out.units ? ` ${out.units}` : "";
      const sq = (v) => (v === undefined || v === null ? "—" : `${fmt(Math.sqrt(v), 3)}${u}`);
      return h("tr", {},
        h("td", {}, name), h("td", {}, hp.kernel || exp.spec.kernel),
        params.map((p) => h("td", { class: "num" },
          hp.lengthscales ? `${fmt(hp.lengthscales[p.name], 3)}${p.units ? ` ${p.units}` : ""}` : "—")),
        h("td", { class: "num" }, sq(hp.outputscale)),
        h("td", { class: "num" }, `${sq(hp.noise_variance)}${hp.noise_model ? ` (${hp.noise_model})` : ""}`),
        h("td", { class: "num" }, `${o.fitted_n} / ${o.n}`),
        h("td", { class: "num", "data-testid": `map-error-${name}` }, o.map_error
          ? `${fmt(o.map_error.rms_std, 3)}${u}${o.map_error.relative == null ? ""
            : ` (${fmt(100 * o.map_error.relative, 2)}% of range)`}` : "—"),
        h("td", {}, o.last_fit_at ? `${ago(o.last_fit_at)} (${fmt(o.last_fit_seconds, 2)} s)` : "not yet"),
        h("td", { class: o.fit_failures ? "num bad" : "num", title: o.last_error || "" },
          o.fit_failures ? `${o.fit_failures}: ${o.last_error || ""}` : "0"));
    });
    el.model.replaceChildren(
      h("table", { class: "model" }, h("thead", {}, head), h("tbody", {}, rows)),
      h("p", { class: "muted" }, model.refitting ? "refitting now…" : `model has ${model.n} measurements`));
  }

  // --- controls --------------------------------------------------------------------------

  function renderControls() {
    const spec = st.exp.spec;
    const v = st.view;
    const select = (name, options, value, onchange) => h("label", {}, name,
      h("select", { name, onchange }, options.map((o) =>
        h("option", { value: o.name, selected: o.name === value }, label(o)))));
    const parts = [];
    if (spec.outputs.length > 1) {
      parts.push(select("output", spec.outputs, v.output, (e) => {
        v.output = e.target.value;
        renderAll();
      }));
    }
    if (spec.parameters.length > 2) {
      const change = (k) => (e) => {
        v[k] = e.target.value;
        const other = k === "ax" ? "ay" : "ax";
        if (v[other] === v[k]) v[other] = spec.parameters.find((p) => p.name !== v[k]).name;
        renderControls();
        st.grid = null;
        renderAll();
        refreshModel();
      };
      parts.push(select("x axis", spec.parameters, v.ax, change("ax")),
        select("y axis", spec.parameters, v.ay, change("ay")));
      for (const p of spec.parameters) {
        if (p.name === v.ax || p.name === v.ay) continue;
        const out = h("output", {}, fmt(v.at[p.name]));
        parts.push(h("label", { class: "slice" }, `${label(p)} at`,
          h("input", { type: "range", name: `at-${p.name}`, min: p.lower, max: p.upper,
            step: (p.upper - p.lower) / 100, value: v.at[p.name],
            oninput: (e) => {
              v.at[p.name] = Number(e.target.value);
              out.textContent = fmt(v.at[p.name]);
              refreshModel();
            } }), out));
      }
    }
    el.controls.replaceChildren(...parts);
    el.controls.hidden = parts.length === 0;
  }

  // --- helpers ---------------------------------------------------------------------------

  function axes() {
    const spec = st.exp.spec;
    const find = (n) => spec.parameters.find((p) => p.name === n);
    return { px: find(st.view.ax), py: st.view.ay ? find(st.view.ay) : null,
      output: spec.outputs.find((o) => o.name === st.view.output) };
  }

  function sortedMeasured() {
    return [...st.measured.values()].sort((a, b) => a.seq - b.seq);
  }

  function curveGrid() {
    const g = st.grid;
    if (!g) return null;
    const { px, output } = axes();
    return { x: g.axes[px.name], ...g.outputs[output.name] };
  }

  function mapError(name) {
    const o = st.exp && st.exp.model && st.exp.model.outputs[name];
    return (o && o.map_error) || null;
  }

  // [N, rms_std] of the server's map error estimate, in N order: the history the server
  // keeps (one point per refit, the whole run, so a page opened late shows the whole
  // curve), the points this browser recorded between refits (`hist`, the current view's),
  // and the current estimate; at one N the newer source wins.
  function mapErrorSeries(name, hist) {
    const spec = st.exp && st.exp.spec;
    if (!spec || name !== (spec.target || spec.outputs[0].name)) return [];
    const byN = new Map();
    for (const r of hist) if (r[3] != null) byN.set(r[0], r[3]);
    for (const p of st.exp.map_error_history || []) byN.set(p.n, p.rms_std);
    const err = mapError(name);
    if (err) byN.set(err.n, err.rms_std);
    return [...byN.entries()].sort((a, b) => a[0] - b[0]);
  }

  function convergenceKey() {
    const v = st.view;
    return JSON.stringify([v.output, v.ax, v.ay, v.at]);
  }

  function recordConvergence(n) {
    const g = st.grid;
    const o = g && g.outputs[st.view.output];
    const s = o && maxMean(o.std, allowed(st.exp.spec, g.points));
    if (!s || !n) return;
    const key = convergenceKey();
    const hist = (st.conv[key] || []).filter((r) => r[0] !== n);
    // the server's estimate over the whole allowed region (the steering output only)
    const err = mapError(st.view.output);
    hist.push([n, s.max, s.mean, err && err.n === n ? err.rms_std : null]);
    hist.sort((a, b) => a[0] - b[0]);
    st.conv[key] = hist.slice(-1000);
    saveConvergence(id, st.conv);
  }

  function showError(e) {
    el.error.textContent = e instanceof ApiError && e.status === 404
      ? `No experiment ${id}.` : `Could not load: ${e.message}`;
    el.error.hidden = false;
  }

  async function setStatus(status) {
    if (status === "closed" && !window.confirm("Close this experiment? It becomes read-only.")) return;
    try {
      st.exp = { ...st.exp, ...(await api.setStatus(id, status)) };
      renderHeader();
    } catch (e) {
      el.error.textContent = e.message;
      el.error.hidden = false;
    }
  }
  // Hovering a measured point that carried an image shows its thumbnail next to the cursor.
  const hoverBox = h("div", { class: "map-thumb", hidden: true, "data-testid": "map-thumb" });
  root.append(hoverBox);
  let hoverBound = false;
  function hoverThumbs() {
    if (hoverBound || destroyed || !el.map.on) return;
    hoverBound = true;
    el.map.on("plotly_hover", (ev) => {
      const pt = ev.points && ev.points[0];
      const m = pt && pt.data.name === "measured" ? st.measured.get(pt.customdata) : null;
      const src = m && thumbnailUrl(m.metadata);
      if (!src) { hoverBox.hidden = true; return; }
      const tags = Object.entries(m.metadata.tags || {}).filter(([, p]) => p >= 0.5)
        .sort((a, b) => b[1] - a[1]).map(([k, p]) => `${k} ${p.toFixed(2)}`);
      hoverBox.replaceChildren(h("img", { src, alt: `detector image of #${m.seq}` }),
        h("div", { class: "muted" }, `#${m.seq}${tags.length ? ` · ${tags.join(", ")}` : ""}`));
      const e = ev.event || {};
      hoverBox.style.left = `${(e.clientX || 0) + 16}px`;
      hoverBox.style.top = `${(e.clientY || 0) + 16}px`;
      hoverBox.hidden = false;
    });
    el.map.on("plotly_unhover", () => { hoverBox.hidden = true; });
  }

  el.pause.onclick = () => setStatus("paused");
  el.resume.onclick = () => setStatus("active");
  el.close.onclick = () => setStatus("closed");

  return {
    destroy() {
      destroyed = true;
      live.close();
      for (const p of root.querySelectorAll(".plot")) purge(p);
    },
  };
}

function defaultView(spec) {
  const p = spec.parameters;
  const at = {};
  for (const q of p.slice(2)) at[q.name] = 0.5 * (q.lower + q.upper);
  return { output: spec.target || spec.outputs[0].name, ax: p[0].name, ay: p[1] ? p[1].name : null, at };
}

// How many of the sorted `times` are <= t: measurements the engine had when it was asked.
function countUpTo(times, t) {
  let lo = 0;
  let hi = times.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (times[mid] <= t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function pad(p) {
  const d = 0.03 * (p.upper - p.lower);
  return [p.lower - d, p.upper + d];
}

// The next batch's path: from the last measured position through the newest pending batch in
// the order the planner chose (rank), as the motors will travel.
function motorPath(measured, pending, px, py) {
  if (!pending.length) return { x: [], y: [] };
  const newest = pending.reduce((a, b) => (b.created_at > a.created_at ? b : a)).batch;
  const batch = pending.filter((s) => s.batch === newest).sort((a, b) => a.rank - b.rank);
  const stops = measured.length ? [measured[measured.length - 1]] : [];
  stops.push(...batch);
  return { x: stops.map((s) => s.position[px.name]), y: stops.map((s) => s.position[py.name]) };
}

function loadConvergence(id) {
  try {
    return JSON.parse(localStorage.getItem(`beamsteer.convergence.${id}`)) || {};
  } catch {
    return {};
  }
}

function saveConvergence(id, conv) {
  try {
    localStorage.setItem(`beamsteer.convergence.${id}`, JSON.stringify(conv));
  } catch { /* storage full: the plot still works for this page */ }
}

function skeleton(root) {
  const q = (sel) => root.querySelector(sel);
  root.replaceChildren(document.getElementById("experiment-template").content.cloneNode(true));
  return {
    name: q("[data-ref=name]"), id: q("[data-ref=id]"), status: q("[data-ref=status]"),
    goal: q("[data-ref=goal]"), live: q("[data-ref=live]"), count: q("[data-ref=count]"),
    pendingCount: q("[data-ref=pending]"), rate: q("[data-ref=rate]"), lastAt: q("[data-ref=last]"),
    pause: q("[data-ref=pause]"), resume: q("[data-ref=resume]"), close: q("[data-ref=close]"),
    error: q("[data-ref=error]"), controls: q("[data-ref=controls]"), map: q("[data-ref=map]"),
    heat: q("[data-ref=heat]"), mean: q("[data-ref=mean]"), std: q("[data-ref=std]"),
    acq: q("[data-ref=acq]"), acqNote: q("[data-ref=acq-note]"), posteriorNote: q("[data-ref=posterior-note]"),
    conv: q("[data-ref=conv]"), convNote: q("[data-ref=conv-note]"), rate_plot: q("[data-ref=rate-plot]"),
    latency: q("[data-ref=latency]"), model: q("[data-ref=model]"), table: q("[data-ref=table]"),
  };
}
