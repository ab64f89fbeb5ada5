// The measurements table: sortable by any column, newest first by default, and the whole
// run as CSV (fetched through api.js, so an API key applies to the download too).

import { api } from "./api.js";
import { clock, fmt, h } from "./dom.js";
import { label } from "./plots.js";

const MAX_ROWS = 500; // the DOM stays fast; the CSV has everything

export function measurementTable(root, getState, id) {
  let sort = { key: "seq", dir: -1 };
  const body = h("tbody");
  const head = h("thead");
  const note = h("span", { class: "muted" });
  const download = h("button", { type: "button", onclick: downloadCsv }, "Download CSV");
  root.replaceChildren(h("div", { class: "table-bar" }, note, download),
    h("div", { class: "scroll" }, h("table", { class: "measurements" }, head, body)));

  function columns(spec, withImages) {
    return [
      { key: "seq", title: "#", get: (m) => m.seq },
      ...(withImages ? [
        { key: "image", title: "image", get: (m) => (m.metadata && m.metadata.thumbnail ? 1 : 0),
          cell: (m) => thumbCell(m), cls: "thumb" },
        { key: "tags", title: "tags", get: (m) => topTag(m.metadata && m.metadata.tags),
          cell: (m) => tagsCell(m.metadata && m.metadata.tags) },
      ] : []),
      ...spec.parameters.map((p) => ({ key: `p:${p.name}`, title: label(p), get: (m) => m.position[p.name] })),
      ...spec.outputs.map((o) => ({ key: `o:${o.name}`, title: label(o), get: (m) => m.values[o.name] })),
      { key: "suggestion", title: "suggestion", get: (m) => m.suggestion_id || "" },
      { key: "time", title: "time", get: (m) => m.created_at, show: clock },
      { key: "metadata", title: "metadata", get: (m) => metadataText(m.metadata) },
    ];
  }

  function render() {
    const st = getState();
    if (!st.exp) return;
    const withImages = Object.keys(st.exp.spec.reductions || {}).length > 0
      || [...st.measured.values()].some((m) => m.metadata && m.metadata.thumbnail);
    const cols = columns(st.exp.spec, withImages);
    head.replaceChildren(h("tr", {}, cols.map((c) => h("th", {
      "aria-sort": sort.key === c.key ? (sort.dir > 0 ? "ascending" : "descending") : null,
      onclick: () => {
        sort = { key: c.key, dir: sort.key === c.key ? -sort.dir : 1 };
        render();
      },
    }, c.title, sort.key === c.key ? (sort.dir > 0 ? " ▲" : " ▼") : ""))));
    const col = cols.find((c) => c.key === sort.key) || cols[0];
    const rows = [...st.measured.values()].sort((a, b) => {
      const x = col.get(a);
      const y = col.get(b);
      return sort.dir * (x < y ? -1 : x > y ? 1 : 0);
    });
    const shown = rows.slice(0, MAX_ROWS);
    body.replaceChildren(...shown.map((m) => h("tr", { "data-seq": m.seq }, cols.map((c) => {
      if (c.cell) return h("td", { class: c.cls || null }, c.cell(m));
      const v = c.get(m);
      return h("td", { class: typeof v === "number" ? "num" : null }, c.show ? c.show(v) : fmt(v));
    }))));
    note.textContent = rows.length > MAX_ROWS
      ? `showing ${MAX_ROWS} of ${rows.length}; the CSV has all` : `${rows.length} measurements`;
  }

  async function downloadCsv() {
    const blob = await api.csv(id);
    const a = h("a", { href: URL.createObjectURL(blob), download: `${id}.csv` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }

  return { render };
}

// What the server derived from an image (thumbnail, tags, reductions, image hash) has its own
// columns; the rest of the metadata is short text.
const DERIVED = new Set(["thumbnail", "tags", "reductions", "image"]);

function metadataText(meta) {
  if (!meta) return "";
  const rest = Object.fromEntries(Object.entries(meta).filter(([k]) => !DERIVED.has(k)));
  if (!Object.keys(rest).length) return "";
  const s = JSON.stringify(rest);
  return s.length > 60 ? `${s.slice(0, 57)}…` : s;
}

// The stored thumbnail is a PNG data URL made by the server (server/thumbnails.py); anything
// else is not shown.
export function thumbnailUrl(meta) {
  const t = meta && meta.thumbnail;
  return typeof t === "string" && t.startsWith("data:image/png;base64,") ? t : null;
}

function thumbCell(m) {
  const src = thumbnailUrl(m.metadata);
  if (!src) return "";
  const shape = m.metadata.image && m.metadata.image.shape;
  return h("img", { src, alt: `detector image of #${m.seq}`, "data-testid": "thumbnail",
    title: shape ? `${shape.join(" × ")} pixels (log scale)` : "log scale" });
}

// Tags: {tag: probability}. Those at 0.5 or more are shown, most likely first; if none, the
// most likely one, muted.
function sortedTags(tags) {
  if (!tags || typeof tags !== "object") return [];
  return Object.entries(tags).filter(([, p]) => typeof p === "number").sort((a, b) => b[1] - a[1]);
}

function topTag(tags) {
  const t = sortedTags(tags);
  return t.length ? t[0][0] : "";
}

function tagsCell(tags) {
  const t = sortedTags(tags);
  if (!t.length) return "";
  const on = t.filter(([, p]) => p >= 0.5);
  const shown = on.length ? on : t.slice(0, 1);
  return h("span", { title: t.map(([k, p]) => `${k} ${p.toFixed(2)}`).join("\n") },
    shown.map(([k, p]) => h("span", { class: on.length ? "tag on" : "tag muted" },
      `${k} ${p.toFixed(2)}`)));
}
