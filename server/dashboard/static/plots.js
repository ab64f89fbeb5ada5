// Plotly figures of the experiment view. Plotly is the vendored classic script (window.Plotly);
// every figure is drawn with Plotly.react, so a live update redraws in place and keeps the
// user's zoom (uirevision).

const Plotly = window.Plotly;
const CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };

export const label = (p) => (p.units ? `${p.name} (${p.units})` : p.name);

function theme() {
  const css = getComputedStyle(document.documentElement);
  const v = (name) => css.getPropertyValue(name).trim();
  return { fg: v("--fg"), muted: v("--muted"), grid: v("--grid"), bg: v("--panel"),
    accent: v("--accent"), pending: v("--pending") };
}

function layout(t, { title, xTitle, yTitle, range = {}, extra = {} }) {
  const axis = (text, r) => ({
    title: { text, font: { size: 13 } }, gridcolor: t.grid, zerolinecolor: t.grid,
    linecolor: t.muted, ticks: "outside", mirror: true, range: r, autorange: r ? false : true,
  });
  return {
    title: { text: title, font: { size: 14 }, x: 0.02, xanchor: "left" },
    paper_bgcolor: t.bg, plot_bgcolor: t.bg, font: { color: t.fg, family: "system-ui, sans-serif", size: 12 },
    margin: { l: 64, r: 16, t: 36, b: 48 },
    xaxis: axis(xTitle, range.x), yaxis: axis(yTitle, range.y),
    legend: { orientation: "h", y: -0.2, x: 0 },
    uirevision: "keep",
    ...extra,
  };
}

// Positions on a sample in the same units: draw them to scale (1 mm is 1 mm both ways).
function sameScale(lay, px, py) {
  if (px.units && px.units === py.units) {
    lay.yaxis.scaleanchor = "x";
    lay.yaxis.scaleratio = 1;
    lay.xaxis.constrain = "domain";
    lay.yaxis.constrain = "domain";
  }
}

function colorbar(title) {
  return { title: { text: title, side: "right" }, thickness: 14, len: 0.9, outlinewidth: 0 };
}

// Boxes of the spec's forbidden regions that cut the shown plane, as Plotly shapes.
function forbiddenShapes(forbidden, px, py, at) {
  const shapes = [];
  for (const box of forbidden || []) {
    const inSlice = Object.entries(box).every(([k, [lo, hi]]) =>
      k === px.name || k === py.name || !(k in at) || (at[k] >= lo && at[k] <= hi));
    if (!inSlice) continue;
    const [x0, x1] = box[px.name] || [px.lower, px.upper];
    const [y0, y1] = box[py.name] || [py.lower, py.upper];
    shapes.push({ type: "rect", x0, x1, y0, y1, layer: "above", line: { width: 1, color: "#888" },
      fillcolor: "rgba(128,128,128,0.35)" });
  }
  return shapes;
}

function pendingTrace(pending, px, py, t) {
  return {
    type: "scatter", mode: "markers+text", name: "pending suggestion",
    x: pending.map((s) => s.position[px.name]), y: pending.map((s) => s.position[py.name]),
    text: pending.map((s) => String(s.rank + 1)), textposition: "top right",
    textfont: { color: t.pending, size: 11 },
    marker: { symbol: "diamond-open", size: 12, color: t.pending, line: { width: 2.5 } },
    cliponaxis: false,
    hovertemplate: `pending #%{text}<br>${px.name} %{x:.4g}<br>${py.name} %{y:.4g}<extra></extra>`,
  };
}

// Measured positions coloured by value, pending suggestions and the next batch's motor path.
export function drawMap(el, { px, py, output, measured, pending, path, forbidden, at, range,
  projected }) {
  const t = theme();
  const values = measured.map((m) => m.values[output.name]);
  const traces = [
    {
      type: "scatter", mode: "markers", name: "measured",
      x: measured.map((m) => m.position[px.name]), y: measured.map((m) => m.position[py.name]),
      customdata: measured.map((m) => m.seq),
      marker: { size: 9, color: values, colorscale: "Viridis", line: { width: 0.5, color: t.fg },
        colorbar: colorbar(label(output)), showscale: measured.length > 0 },
      hovertemplate: `#%{customdata}<br>${px.name} %{x:.4g}<br>${py.name} %{y:.4g}<br>`
        + `${output.name} %{marker.color:.4g}<extra></extra>`,
    },
    {
      type: "scatter", mode: "lines", name: "motor path (next batch)", x: path.x, y: path.y,
      line: { color: t.pending, width: 1.5, dash: "dot" }, hoverinfo: "skip",
    },
    pendingTrace(pending, px, py, t),
  ];
  const title = projected ? "Measured positions (all, projected on this plane)" : "Measured positions";
  const lay = layout(t, { title, xTitle: label(px), yTitle: label(py),
    range, extra: { shapes: forbiddenShapes(forbidden, px, py, at) } });
  sameScale(lay, px, py);
  return Plotly.react(el, traces, lay, CONFIG);
}

// A heat map on the posterior grid, with the measured positions (and pending) on top.
export function drawHeat(el, { title, px, py, x, y, z, colorTitle, colorscale, reversescale = false,
  measured, pending, forbidden, at }) {
  const t = theme();
  const traces = [
    {
      type: "heatmap", x, y, z, colorscale, reversescale, zsmooth: "best", colorbar: colorbar(colorTitle),
      hovertemplate: `${px.name} %{x:.4g}<br>${py.name} %{y:.4g}<br>%{z:.4g}<extra></extra>`,
    },
    {
      type: "scatter", mode: "markers", name: "measured", showlegend: false,
      x: measured.map((m) => m.position[px.name]), y: measured.map((m) => m.position[py.name]),
      marker: { size: 5, color: "rgba(255,255,255,0.85)", line: { width: 1, color: "#222" } },
      hoverinfo: "skip",
    },
    // filled with a white rim: visible on every colour scale
    { ...pendingTrace(pending, px, py, t), mode: "markers", showlegend: false,
      marker: { symbol: "diamond", size: 11, color: t.pending, line: { width: 1.5, color: "#fff" } } },
  ];
  const lay = layout(t, { title, xTitle: label(px), yTitle: label(py),
    range: { x: [x[0], x[x.length - 1]], y: [y[0], y[y.length - 1]] },
    extra: { shapes: forbiddenShapes(forbidden, px, py, at), showlegend: false } });
  sameScale(lay, px, py);
  return Plotly.react(el, traces, lay, CONFIG);
}

// One parameter: measured values, the posterior mean with a ±2σ band, pending positions.
export function drawCurve(el, { px, output, measured, pending, grid }) {
  const t = theme();
  const traces = [];
  if (grid) {
    const up = grid.mean.map((m, i) => (m === null ? null : m + 2 * grid.std[i]));
    const lo = grid.mean.map((m, i) => (m === null ? null : m - 2 * grid.std[i]));
    traces.push(
      { type: "scatter", mode: "lines", x: grid.x, y: lo, line: { width: 0 }, hoverinfo: "skip",
        showlegend: false },
      { type: "scatter", mode: "lines", x: grid.x, y: up, fill: "tonexty", name: "±2σ",
        fillcolor: "rgba(66,133,244,0.2)", line: { width: 0 }, hoverinfo: "skip" },
      { type: "scatter", mode: "lines", x: grid.x, y: grid.mean, name: "posterior mean",
        line: { color: t.accent, width: 2 } },
    );
  }
  traces.push({
    type: "scatter", mode: "markers", name: "measured",
    x: measured.map((m) => m.position[px.name]), y: measured.map((m) => m.values[output.name]),
    customdata: measured.map((m) => m.seq),
    marker: { size: 7, color: t.fg },
  });
  if (pending.length) {
    traces.push({ type: "scatter", mode: "lines", x: [null], y: [null], name: "pending suggestion",
      line: { color: t.pending, dash: "dot", width: 1.5 } });
  }
  const pend = pending.map((s) => s.position[px.name]);
  const lay = layout(t, { title: "Measurements and posterior", xTitle: label(px),
    yTitle: label(output), range: { x: [px.lower, px.upper] },
    extra: { shapes: pend.map((x) => ({ type: "line", x0: x, x1: x, yref: "paper", y0: 0, y1: 1,
      line: { color: t.pending, dash: "dot", width: 1.5 } })) } });
  return Plotly.react(el, traces, lay, CONFIG);
}

// Lines sharing one x axis, e.g. max and mean posterior std vs number of measurements.
export function drawLines(el, { title, xTitle, yTitle, series, yType = "linear" }) {
  const t = theme();
  const palette = [t.accent, t.pending, t.muted];
  const traces = series.map((s, i) => ({
    type: "scatter", mode: s.mode || (s.x.length > 40 ? "lines" : "lines+markers"), name: s.name,
    x: s.x, y: s.y, line: { color: palette[i % palette.length], width: 2, shape: s.shape || "linear" },
    marker: { size: 5 },
  }));
  const lay = layout(t, { title, xTitle, yTitle });
  lay.yaxis.type = yType;
  if (yType === "linear") lay.yaxis.rangemode = "tozero";
  return Plotly.react(el, traces, lay, CONFIG);
}

export function purge(el) {
  Plotly.purge(el);
}
