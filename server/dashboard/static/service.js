// The service panel: which models are served (a warm worker behind each), their queue
// depth, jobs in progress, dead letters and outcomes. Service status, not experiment data:
// refreshed on a modest timer while the page is visible, from GET /api/v1/models and the
// Prometheus text of /metrics (both through api.js, so an API key applies).

import { api } from "./api.js";
import { fmt, h } from "./dom.js";

const REFRESH_MS = 10000;

// Prometheus text format -> [{name, labels, value}] for the inference series only.
export function parseMetrics(text) {
  const out = [];
  const line = /^(beamsteer_inference_[a-z_]+)\{([^}]*)\}\s+(\S+)$/;
  const label = /(\w+)="((?:[^"\\]|\\.)*)"/g;
  for (const l of text.split("\n")) {
    const m = l.match(line);
    if (!m) continue;
    const labels = {};
    for (const [, k, v] of m[2].matchAll(label)) labels[k] = v;
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

// Per model (all versions summed): queue depth, pending, dead letters, outcomes.
function perModel(series) {
  const by = {};
  const sum = (model, key, v) => {
    const e = (by[model] ||= { depth: 0, pending: 0, dead: 0, outcomes: {} });
    if (key === "outcome") e.outcomes[v[0]] = (e.outcomes[v[0]] || 0) + v[1];
    else e[key] += v;
  };
  for (const s of series) {
    const model = s.labels.model;
    if (!model) continue;
    if (s.name === "beamsteer_inference_queue_depth") sum(model, "depth", s.value);
    else if (s.name === "beamsteer_inference_pending") sum(model, "pending", s.value);
    else if (s.name === "beamsteer_inference_dead_lettered") sum(model, "dead", s.value);
    else if (s.name === "beamsteer_inference_requests_total") sum(model, "outcome", [s.labels.outcome, s.value]);
  }
  return by;
}

export function servicePanel(root) {
  const body = h("tbody");
  const note = h("span", { class: "muted", "data-ref": "service-note" });
  root.replaceChildren(
    h("div", { class: "table-bar" }, h("h3", {}, "Inference service"), note),
    h("table", { class: "models", "data-testid": "models" },
      h("thead", {}, h("tr", {}, ["model", "status", "task", "versions", "queue depth",
        "in progress", "dead-lettered", "jobs ok", "jobs failed"].map((t) => h("th", {}, t)))),
      body));

  async function refresh() {
    let models;
    let stats = {};
    try {
      models = await api.models();
    } catch (e) {
      note.textContent = `models unavailable (${e.message})`;
      return;
    }
    try {
      stats = perModel(parseMetrics(await api.metrics()));
    } catch (e) {
      note.textContent = `metrics unavailable (${e.message})`;
    }
    const ready = models.filter((m) => m.ready).length;
    if (!note.textContent.startsWith("metrics")) {
      note.textContent = `${ready} of ${models.length} models served · `
        + `updated ${new Date().toLocaleTimeString([], { hour12: false })}`;
    }
    body.replaceChildren(...models.map((m) => {
      const s = stats[m.name] || { depth: 0, pending: 0, dead: 0, outcomes: {} };
      const ok = s.outcomes.success || 0;
      const failed = Object.entries(s.outcomes).filter(([k]) => k !== "success")
        .reduce((a, [, v]) => a + v, 0);
      return h("tr", { "data-model": m.name, "data-ready": m.ready ? "true" : "false" },
        h("td", {}, m.name),
        h("td", {}, h("span", { class: "dot", "data-state": m.ready ? "ok" : "bad" }),
          m.ready ? "ready" : "no worker"),
        h("td", { class: "muted" }, m.task || ""),
        h("td", { class: "mono" }, (m.versions || []).join(", ")),
        h("td", { class: "num", "data-ref": "depth" }, fmt(s.depth)),
        h("td", { class: "num" }, fmt(s.pending)),
        h("td", { class: s.dead ? "num bad" : "num", "data-ref": "dead" }, fmt(s.dead)),
        h("td", { class: "num" }, fmt(ok)),
        h("td", { class: failed ? "num bad" : "num" }, fmt(failed)));
    }));
    body.closest("table").hidden = !models.length;
    if (!models.length) note.textContent = "no inference models on this server";
  }

  refresh();
  const timer = setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
  const onVisible = () => { if (!document.hidden) refresh(); };
  document.addEventListener("visibilitychange", onVisible);
  return {
    refresh,
    destroy() {
      clearInterval(timer);
      document.removeEventListener("visibilitychange", onVisible);
    },
  };
}
