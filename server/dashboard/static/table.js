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

  function columns(spec) {
    return [
      { key: "seq", title: "#", get: (m) => m.seq },
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
    const cols = columns(st.exp.spec);
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
    body.replaceChildren(...shown.map((m) => h("tr", {}, cols.map((c) => {
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

// Images and their tags arrive with the inference issue; until then, metadata as short text.
function metadataText(meta) {
  if (!meta || !Object.keys(meta).length) return "";
  if (Array.isArray(meta.tags)) return meta.tags.join(", ");
  const s = JSON.stringify(meta);
  return s.length > 60 ? `${s.slice(0, 57)}…` : s;
}
