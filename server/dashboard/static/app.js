// Entry point: the service banner (health, version), the API key, and a hash router between
// the experiments list (#/) and one experiment (#/e/<id>).

import { api, apiKey, onAuthNeeded, onReadOnly, setApiKey } from "./api.js";
import { h } from "./dom.js";
import { experimentView } from "./experiment.js";
import { listView } from "./list.js";
import { servicePanel } from "./service.js";

const HEALTH_REFRESH_MS = 30000;
const main = document.getElementById("main");
let view = null;

function route() {
  if (view) view.destroy();
  const m = window.location.hash.match(/^#\/e\/([^/]+)$/);
  view = m ? experimentView(main, decodeURIComponent(m[1])) : listView(main);
  document.body.dataset.view = m ? "experiment" : "list";
}

async function health() {
  const el = document.getElementById("health");
  try {
    const hh = await api.health();
    el.replaceChildren(
      h("span", { class: "dot", "data-state": "ok" }), "service ok",
      h("span", { class: "muted" }, ` · v${hh.version} · ${hh.store} · ${hh.engines} engines · `
        + `${hh.websockets} live clients`));
    el.dataset.state = "ok";
  } catch (e) {
    el.replaceChildren(h("span", { class: "dot", "data-state": "bad" }), `service unavailable (${e.message})`);
    el.dataset.state = "bad";
  }
}

function keyForm() {
  const form = document.getElementById("key-form");
  form.elements.key.value = apiKey();
  form.onsubmit = (e) => {
    e.preventDefault();
    setApiKey(form.elements.key.value.trim());
    document.body.classList.remove("read-only", "needs-key");
    form.closest("details").open = false;
    route();
    service.refresh();
  };
}

// The server answered 401: open the key box and say why (once per key entered).
function askForKey() {
  if (document.body.classList.contains("needs-key")) return;
  document.body.classList.add("needs-key");
  const form = document.getElementById("key-form");
  form.closest("details").open = true;
  form.elements.key.focus();
}

onReadOnly(() => document.body.classList.add("read-only"));
onAuthNeeded(askForKey);
window.addEventListener("hashchange", route);
keyForm();
route();
const service = servicePanel(document.getElementById("service"));
health();
setInterval(() => { if (!document.hidden) health(); }, HEALTH_REFRESH_MS);
