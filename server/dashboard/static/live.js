// Follow an experiment's events over the websocket, reconnecting with backoff. After every
// (re)connect the caller resynchronizes from the API (onOpen), so nothing missed while the
// socket was down (or dropped for being slow: close code 1013) stays missing.

import { authNeeded, eventsUrl } from "./api.js";

// Close codes of the server: 4000 + the HTTP status they stand for.
const UNAUTHENTICATED = 4401;
const FORBIDDEN = 4403;
const UNKNOWN = 4404;

export function follow(id, { onEvent, onOpen, onState }) {
  let ws = null;
  let closed = false;
  let delay = 500;
  let timer = null;

  function connect() {
    onState("connecting");
    ws = new WebSocket(eventsUrl(id));
    ws.onopen = () => {
      delay = 500;
      onState("live");
    };
    ws.onmessage = (msg) => {
      const event = JSON.parse(msg.data);
      if (event.type === "hello") onOpen(event);
      else onEvent(event);
    };
    ws.onclose = (e) => {
      if (closed) return;
      if (e.code === UNKNOWN) {
        onState("gone");
        return;
      }
      // No retrying with a key that will not work: a new key re-opens the view.
      if (e.code === UNAUTHENTICATED || e.code === FORBIDDEN) {
        onState(e.code === UNAUTHENTICATED ? "needs key" : "forbidden");
        if (e.code === UNAUTHENTICATED) authNeeded(null);
        return;
      }
      onState("reconnecting");
      timer = setTimeout(connect, delay);
      delay = Math.min(delay * 2, 15000);
    };
  }

  connect();
  return {
    close() {
      closed = true;
      clearTimeout(timer);
      if (ws) ws.close();
    },
  };
}

// Run fn at most once per `ms`, after the last call; a call while fn runs queues one more.
export function debounce(fn, ms) {
  let timer = null;
  let running = null;
  let again = false;
  const fire = async () => {
    timer = null;
    if (running) {
      again = true;
      return;
    }
    running = (async () => fn())();
    try { await running; } catch (e) { console.warn(e); }
    running = null;
    if (again) {
      again = false;
      schedule();
    }
  };
  const schedule = () => {
    clearTimeout(timer);
    timer = setTimeout(fire, ms);
  };
  return schedule;
}
