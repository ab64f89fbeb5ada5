// The experiments list and the form that creates one.

import { api } from "./api.js";
import { ago, h } from "./dom.js";

const LIST_REFRESH_MS = 15000; // the list is a summary; the experiment view itself is live

export function listView(root) {
  root.replaceChildren(document.getElementById("list-template").content.cloneNode(true));
  const tbody = root.querySelector("[data-ref=experiments]");
  const empty = root.querySelector("[data-ref=empty]");
  const form = root.querySelector("form[name=create]");
  setupForm(form);

  async function refresh() {
    const experiments = await api.experiments();
    empty.hidden = experiments.length > 0;
    tbody.replaceChildren(...experiments.map((e) => h("tr", {},
      h("td", {}, h("a", { href: `#/e/${encodeURIComponent(e.id)}` }, e.spec.name)),
      h("td", {}, h("span", { class: "badge", "data-status": e.status }, e.status)),
      h("td", {}, e.spec.goal),
      h("td", {}, e.spec.parameters.map((p) => p.name).join(", ")),
      h("td", { class: "num" }, e.n_measurements),
      h("td", { class: "num" }, e.n_pending),
      h("td", { title: new Date(e.updated_at * 1000).toLocaleString() }, ago(e.updated_at)),
      h("td", { class: "muted mono" }, e.id))));
  }

  refresh().catch((e) => { empty.hidden = false; empty.textContent = `Could not list: ${e.message}`; });
  const timer = setInterval(() => { if (!document.hidden) refresh().catch(() => {}); }, LIST_REFRESH_MS);
  return { destroy: () => clearInterval(timer) };
}

function parameterRow(p = {}) {
  return h("tr", { class: "param" },
    h("td", {}, h("input", { name: "p-name", required: true, value: p.name || "", size: 8 })),
    h("td", {}, h("input", { name: "p-lower", type: "number", step: "any", required: true, value: p.lower ?? "" })),
    h("td", {}, h("input", { name: "p-upper", type: "number", step: "any", required: true, value: p.upper ?? "" })),
    h("td", {}, h("input", { name: "p-units", value: p.units || "", size: 5 })),
    h("td", {}, h("input", { name: "p-speed", type: "number", step: "any", min: 0, value: p.speed ?? "",
      placeholder: "units/s" })),
    h("td", {}, removeButton()));
}

function outputRow(o = {}) {
  return h("tr", { class: "output" },
    h("td", {}, h("input", { name: "o-name", required: true, value: o.name || "", size: 10 })),
    h("td", {}, h("input", { name: "o-units", value: o.units || "", size: 6 })),
    h("td", {}, removeButton()));
}

function removeButton() {
  return h("button", { type: "button", class: "small", title: "remove",
    onclick: (e) => {
      const row = e.target.closest("tr");
      if (row.parentElement.children.length > 1) row.remove();
    } }, "×");
}

function setupForm(form) {
  const params = form.querySelector("[data-ref=parameters]");
  const outputs = form.querySelector("[data-ref=outputs]");
  const error = form.querySelector("[data-ref=form-error]");
  params.append(parameterRow({ name: "x", lower: 0, upper: 10, units: "mm" }),
    parameterRow({ name: "y", lower: 0, upper: 10, units: "mm" }));
  outputs.append(outputRow({ name: "intensity", units: "counts" }));
  form.querySelector("[data-ref=add-parameter]").onclick = () => params.append(parameterRow());
  form.querySelector("[data-ref=add-output]").onclick = () => outputs.append(outputRow());

  form.onsubmit = async (event) => {
    event.preventDefault();
    error.hidden = true;
    let spec;
    try {
      spec = readSpec(form);
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
      return;
    }
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      const created = await api.create(spec);
      window.location.hash = `#/e/${encodeURIComponent(created.id)}`;
    } catch (e) {
      error.textContent = `Not created: ${e.message}`;
      error.hidden = false;
    } finally {
      submit.disabled = false;
    }
  };
}

function readSpec(form) {
  const val = (el, name) => el.querySelector(`[name=${name}]`).value.trim();
  const num = (el, name) => (val(el, name) === "" ? null : Number(val(el, name)));
  const f = form.elements;
  const spec = {
    name: f.name.value.trim(),
    description: f.description.value.trim(),
    goal: f.goal.value,
    batch_size: Number(f.batch_size.value),
    parameters: [...form.querySelectorAll("tr.param")].map((r) => {
      const p = { name: val(r, "p-name"), lower: num(r, "p-lower"), upper: num(r, "p-upper"),
        units: val(r, "p-units") };
      const speed = num(r, "p-speed");
      if (speed !== null) p.speed = speed;
      return p;
    }),
    outputs: [...form.querySelectorAll("tr.output")].map((r) => ({
      name: val(r, "o-name"), units: val(r, "o-units") })),
  };
  if (f.acquisition.value) spec.acquisition = f.acquisition.value;
  if (f.kernel.value) spec.kernel = f.kernel.value;
  if (f.initial_design.value) spec.initial_design = Number(f.initial_design.value);
  if (f.forbidden.value.trim()) {
    try {
      spec.forbidden = JSON.parse(f.forbidden.value);
    } catch {
      throw new Error('forbidden regions: not JSON; e.g. [{"x": [4, 5], "y": [0, 2]}]');
    }
  }
  return spec;
}
