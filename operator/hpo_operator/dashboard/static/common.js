// Helpers shared by the dashboard's pages.
//
// Every string that comes from the cluster (names, annotations, parameter values, messages) is put
// in the page as text: el() makes text nodes, never HTML. No page builds markup from strings.
"use strict";

const hpo = (() => {
  const timings = (window.hpoTimings = window.hpoTimings || {});

  // el("a", {href: "#x", class: "link"}, "text", child, ...): an element; strings become text nodes.
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key in node && typeof node[key] !== "function" && key !== "list") node[key] = value;
      else node.setAttribute(key, String(value));
    }
    append(node, children);
    return node;
  }

  function append(node, children) {
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function replace(node, ...children) {
    node.replaceChildren();
    return append(node, children);
  }

  // Numbers as the kubectl plugin prints them (Python's %.6g).
  function number(v) {
    if (v === undefined || v === null || v === "") return "";
    if (typeof v !== "number") return String(v);
    if (!isFinite(v)) return String(v);
    if (Number.isInteger(v) && Math.abs(v) < 1e6) return String(v);
    const exp = Number(v.toExponential(5).split("e")[1]);
    const strip = (s) => (s.includes(".") ? s.replace(/0+$/, "").replace(/\.$/, "") : s);
    if (exp < -4 || exp >= 6) {
      const [m, e] = v.toExponential(5).split("e");
      const sign = e.startsWith("-") ? "-" : "+";
      return strip(m) + "e" + sign + e.replace(/^[-+]/, "").padStart(2, "0");
    }
    return strip(v.toFixed(Math.max(0, 5 - exp)));
  }

  // RFC 3339 from the API server -> "yyyy-mm-dd hh:mm:ss" (UTC), as the plugin prints times.
  function time(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toISOString().replace("T", " ").slice(0, 19);
  }

  function seconds(a, b) {
    if (!a || !b) return null;
    const s = (new Date(b) - new Date(a)) / 1000;
    return isNaN(s) ? null : s;
  }

  function duration(s) {
    if (s === null || s === undefined) return "";
    s = Math.round(s);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
    if (m) return `${m}m ${String(r).padStart(2, "0")}s`;
    return `${r}s`;
  }

  function badge(phase, extra) {
    return el("span", {class: `badge phase-${String(phase || "").toLowerCase()}`, title: extra || ""}, phase || "");
  }

  async function answer(response) {
    const text = await response.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
    if (!response.ok) {
      const error = new Error((body && body.error) || text || `${response.status} ${response.statusText}`);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  async function getJSON(url) {
    return answer(await fetch(url, {headers: {accept: "application/json"}, cache: "no-store"}));
  }

  // Write requests carry a custom header: a page of another site cannot send one without a CORS
  // preflight, which this server never grants.
  async function postJSON(url, body, method) {
    return answer(await fetch(url, {
      method: method || "POST", cache: "no-store",
      headers: {"content-type": "application/json", "x-hpo-dashboard": "1"},
      body: JSON.stringify(body || {}),
    }));
  }

  function showErrors(list) {
    const box = document.getElementById("errors");
    if (!box) return;
    const errors = (list || []).filter(Boolean);
    box.hidden = errors.length === 0;
    replace(box, errors.map((e) => el("div", {}, e)));
  }

  // The server's event stream: which experiments changed. `onChange(message)` runs for each; the
  // first message (and the first after a reconnection) says "everything" (experiments: null),
  // since changes may have been missed meanwhile.
  function live(onChange) {
    const dot = document.getElementById("live");
    const source = new EventSource("/api/events");
    const status = (text, cls) => { if (dot) { dot.textContent = text; dot.className = `live ${cls}`; } };
    source.onopen = () => status("live", "on");
    source.onerror = () => {
      status("reconnecting…", "off");
      // Closed, not reconnecting: the server refused the stream (a session that ended): the
      // page again shows why, or the sign-in page.
      if (source.readyState === EventSource.CLOSED) setTimeout(() => location.reload(), 2000);
    };
    source.onmessage = (event) => {
      const message = JSON.parse(event.data);
      status("live", "on");
      if (message.errors) showErrors(message.errors);
      onChange(message);
    };
    return source;
  }

  // Who is signed in (auth modes proxy and token), and a way out of a token's session.
  function showUser(config) {
    const box = document.getElementById("who");
    if (!box || !config.user) return;
    const out = config.auth === "token"
      ? el("button", {type: "button", id: "signout", onclick: async () => {
          await postJSON("/api/session", undefined, "DELETE").catch(() => null);
          location.reload();
        }}, "Sign out")
      : null;
    replace(box, el("span", {id: "user"}, config.user), out);
    box.hidden = false;
  }

  function concerns(message, key) {
    return message.experiments === null ||
      message.experiments.some(([ns, name]) => ns === key[0] && name === key[1]);
  }

  // Runs `task` now, or once more when it finishes if asked meanwhile; starts are at least
  // max(minGap, 2 x the last run) apart, so a stream of changes never keeps the browser busy.
  function coalesce(task, minGap) {
    let running = false, again = false, last = 0, took = 0, timer = null;
    async function run() {
      timer = null;
      if (running) { again = true; return; }
      const wait = last + Math.max(minGap, 2 * took) - performance.now();
      if (wait > 0) { timer = setTimeout(run, wait); return; }
      running = true; again = false; last = performance.now();
      try { await task(); } catch (e) { console.error(e); }
      finally {
        took = performance.now() - last;
        running = false;
        if (again) schedule();
      }
    }
    function schedule() { if (!timer) timer = setTimeout(run, 0); }
    return schedule;
  }

  function mark(name) {
    if (!(name in timings)) timings[name] = Math.round(performance.now());
  }

  function q(id) { return document.getElementById(id); }

  return {el, append, replace, number, time, seconds, duration, badge, getJSON, postJSON, showErrors, live,
          showUser, concerns, coalesce, mark, q};
})();
