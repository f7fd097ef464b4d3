// One experiment: summary, plots (Optuna's, drawn by plotly.js), recovery view, trials table.
// Refreshed live: the table within a second of a change, the plots at most every few seconds.
"use strict";

(() => {
  const {el, append, replace, number, time, seconds, duration, badge, getJSON, postJSON, showErrors, live,
         concerns, coalesce, mark, q} = hpo;
  const parts = location.pathname.split("/").map(decodeURIComponent);
  const key = [parts[2], parts[3]];
  const api = `/api/experiments/${encodeURIComponent(key[0])}/${encodeURIComponent(key[1])}`;
  const PAGE = 100, RECOVERY_PAGE = 50;
  const PHASES = ["Pending", "Queued", "Running", "Succeeded", "Failed", "Killed", "EarlyStopped", "Refused"];

  let config = {allowWrite: false};
  let view = null;          // the experiment: summary, spec, conditions, history, best
  let rows = [];            // one per trial, in creation order
  let byName = new Map();
  const state = {sort: "created", desc: false, phases: new Set(), search: "", page: 0, focus: null,
                 selected: new Set(), recoveryPage: 0};

  // --- summary ------------------------------------------------------------------------------------

  function fact(label, ...value) {
    return [el("dt", {}, label), el("dd", {}, ...value)];
  }

  function renderSummary() {
    const s = view.summary, spec = view.spec;
    document.title = `${s.name} · hpo dashboard`;
    q("crumb-namespace").textContent = s.namespace;
    q("crumb-namespace").href = `/?`;
    q("crumb-name").textContent = s.name;
    q("title").textContent = s.name;
    replace(q("phase"), badge(s.phase), s.reason && s.reason !== s.phase ? el("span", {class: "muted"}, " ", s.reason) : null,
            s.suspend ? el("span", {class: "badge phase-suspended"}, "suspend: true") : null);
    const words = (phase) => phase.replace(/([a-z])([A-Z])/g, "$1-$2").toLowerCase();  // EarlyStopped: early-stopped
    const counts = Object.entries(s.trialStatus).filter(([, n]) => n).map(([p, n]) => `${n} ${words(p)}`).join(", ");
    replace(q("facts"),
      fact("Namespace", s.namespace),
      fact("Creator", s.creator || el("span", {class: "muted"}, "<none>")),
      fact("Objective", spec.objective || ""),
      fact("Algorithm", spec.algorithm + (spec.seed !== undefined && spec.seed !== null ? ` (seed ${spec.seed})` : "")),
      fact("Progress", `${s.configurations}/${s.maxTrialCount} configurations; ${s.trials} trials` + (counts ? `: ${counts}` : "")),
      fact("Parallel", String(spec.parallelTrialCount ?? "")),
      fact("Retries", `${spec.retryPolicy.maxRetries} on ${spec.retryPolicy.retryOn.join(", ")}`),
      multi() ? null : fact("Best", s.bestTrial ? [number(s.bestValue), " in ", trialLink(s.bestTrial)] : el("span", {class: "muted"}, "no result yet")),
      multi() ? fact("Pareto front", el("span", {id: "front-size"}, `${s.paretoFrontSize ?? 0} trials`)) : null,
      multi() ? fact("Hypervolume", s.hypervolume !== undefined && s.hypervolume !== null ? el("span", {id: "hypervolume"}, number(s.hypervolume))
        : el("span", {class: "muted"}, view.objectives.every((o) => o.referenceValue !== undefined && o.referenceValue !== null)
          ? "none yet" : "give every objective a referenceValue")) : null,
      spec.constraints ? fact("Constraints", spec.constraints.join(", ")) : null,
      fact("Created (UTC)", time(s.created)),
      s.original ? fact("Copy of", s.original) : null,
      s.warmStartFrom ? fact("Warm start", s.warmStartFrom) : null,
      spec.earlyStopping ? fact("Early stopping", spec.earlyStopping) : null,
      view.spentLines && view.spentLines.length ? fact("Spent", el("span", {id: "spent"},
        view.spentLines.map((line, i) => [i ? el("br") : null, line]))) : null);
    replace(q("space"), el("tr", {}, el("th", {}, "parameter"), el("th", {}, "range")),
      spec.parameters.map((p) => el("tr", {}, el("td", {}, p.name), el("td", {}, p.range))));
    const best = view.best;
    q("best-title").textContent = multi() ? "Pareto front" : "Best trial";
    if (multi()) renderFront(view.paretoFront);
    else replace(q("best"), best ? [
      el("p", {}, trialLink(best.trialName), " ", el("strong", {}, number(best.objectiveValue))),
      el("table", {class: "grid small"},
        Object.entries(best.parameters).map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v))),
        Object.entries(best.metrics || {}).map(([k, v]) => el("tr", {class: "muted"}, el("td", {}, k), el("td", {}, number(v)))))]
      : el("p", {class: "muted"}, "no result yet"));
    // Each condition's message on a line of its own, across the card, wrapped: never cut off.
    replace(q("conditions"), el("tr", {}, ["type", "status", "reason", "since (UTC)"].map((h) => el("th", {}, h))),
      view.conditions.map((c) => [
        el("tr", {class: "condition"}, el("td", {}, c.type), el("td", {}, c.status), el("td", {}, c.reason || ""),
          el("td", {}, time(c.lastTransitionTime))),
        el("tr", {class: "condition-message"}, el("td", {class: "message", colspan: "4"}, c.message || ""))]).flat());
    replace(q("status-history"), el("tr", {}, ["time (UTC)", "phase", "reason"].map((h) => el("th", {}, h))),
      view.statusHistory.map((h) => el("tr", {}, el("td", {}, time(h.time)), el("td", {}, badge(h.phase)), el("td", {}, h.reason || ""))));
    renderActions();
  }

  // Several objectives: the experiment has a Pareto front instead of a best trial.
  function multi() {
    return Boolean(view && view.paretoFront);
  }

  const FRONT_ROWS = 20;  // the card lists the front's first trials; the plot shows every one

  function renderFront(front) {
    const names = view.objectives.map((o) => o.name);
    const more = front.size - Math.min(front.trials.length, FRONT_ROWS);
    replace(q("best"), front.trials.length ? [
      el("table", {class: "grid small", id: "front"},
        el("tr", {}, el("th", {}, "trial"), names.map((n) => el("th", {}, n))),
        front.trials.slice(0, FRONT_ROWS).map((t) => el("tr", {dataset: {name: t.trial}}, el("td", {}, trialLink(t.trial)),
          names.map((n) => el("td", {class: "num"}, number(t.values[n])))))),
      more > 0 ? el("p", {class: "muted"}, `and ${more} more (kubectl hpo pareto ${view.summary.name})`) : null]
      : el("p", {class: "muted"}, "no feasible result yet"));
  }

  // --- write actions (with --allow-write) -------------------------------------------------------

  function result(text, ok) {
    const box = q("action-result");
    box.hidden = false;
    box.className = `notice ${ok ? "ok" : "bad"}`;
    replace(box, text);
  }

  async function act(path, body, describe) {
    try {
      const answer = await postJSON(`${api}/${path}`, body);
      result(describe(answer), true);
    } catch (e) {
      result(e.message, false);
    }
  }

  function renderActions() {
    const box = q("actions");
    if (!config.allowWrite) {
      replace(box, el("span", {class: "muted", title: "start it with kubectl hpo dashboard --allow-write"}, "read-only"));
      replace(q("trial-actions"));
      return;
    }
    const suspended = view.summary.suspend;
    replace(box, el("button", {id: "action-suspend", type: "button", onclick: () =>
      act(suspended ? "resume" : "stop", {}, (a) => a.message)}, suspended ? "Resume" : "Stop"));
    replace(q("trial-actions"), el("button", {id: "action-restart", type: "button", disabled: state.selected.size === 0,
      onclick: () => restart([...state.selected])}, "Restart selected"));
  }

  function restart(names) {
    act("restart-trials", {trials: names}, (a) => a.results.map((r) =>
      `${r.trial}: ${r.outcome} (${r.reason}) ${r.message}`).join("\n"));
  }

  // --- trials table ---------------------------------------------------------------------------------

  function trialLink(name) {
    return el("a", {href: `#trial=${encodeURIComponent(name)}`, class: "trial-link"}, name);
  }

  function columns() {
    const params = view.parameterNames, metrics = [...view.metricNames];
    for (const r of rows) for (const m of Object.keys(r.metrics || {})) if (!metrics.includes(m)) metrics.push(m);
    return [
      {id: "select", label: "", cell: (r) => el("input", {type: "checkbox", checked: state.selected.has(r.name),
        title: "select (metric curves, restart)", onchange: (e) => select(r.name, e.target.checked)})},
      {id: "name", label: "name", get: (r) => r.name, cell: (r) => trialLink(r.name)},
      {id: "phase", label: "status", get: (r) => r.phase, cell: (r) => badge(r.phase)},
      {id: "reason", label: "reason", get: (r) => r.reason},
      {id: "failureClass", label: "failure class", get: (r) => r.failureClass},
      multi() ? null : {id: "objective", label: "objective", get: (r) => r.objective, num: true},
      view.spec.constraints ? {id: "feasible", label: "feasible", get: (r) => r.feasible === undefined ? "" : r.feasible ? "yes" : "no"} : null,
      {id: "attempt", label: "attempt", get: (r) => r.attempt, num: true},
      {id: "launchReason", label: "launch", get: (r) => r.launchReason},
      ...params.map((p) => ({id: `p:${p}`, label: p, get: (r) => (r.params || {})[p], param: true})),
      ...metrics.map((m) => ({id: `m:${m}`, label: m, get: (r) => (r.metrics || {})[m], num: true})),
      {id: "retryOf", label: "retry of", get: (r) => r.retryOf, cell: (r) => r.retryOf ? trialLink(r.retryOf) : ""},
      {id: "retriedBy", label: "retried by", get: (r) => r.retriedBy, cell: (r) => r.retriedBy ? trialLink(r.retriedBy) : ""},
      {id: "created", label: "created (UTC)", get: (r) => r.created, cell: (r) => time(r.created)},
      {id: "duration", label: "duration", get: (r) => seconds(r.started, r.completed), num: true,
        cell: (r) => duration(seconds(r.started, r.completed))},
    ].filter(Boolean);
  }

  function compare(get, numeric) {
    return (a, b) => {
      const x = get(a), y = get(b);
      if (x === undefined || x === null || x === "") return (y === undefined || y === null || y === "") ? 0 : 1;
      if (y === undefined || y === null || y === "") return -1;
      if (numeric) return x - y;
      const nx = Number(x), ny = Number(y);
      if (!isNaN(nx) && !isNaN(ny)) return nx - ny;
      return String(x).localeCompare(String(y));
    };
  }

  function visibleRows(cols) {
    const search = state.search.toLowerCase();
    let list = rows.filter((r) => (state.phases.size === 0 || state.phases.has(r.phase)) &&
      (!search || r.name.toLowerCase().includes(search) ||
       Object.values(r.params || {}).some((v) => String(v).toLowerCase().includes(search))));
    if (state.sort !== "created") {
      const col = cols.find((c) => c.id === state.sort);
      if (col && col.get) list = list.slice().sort(compare(col.get, col.num));
    }
    if (state.desc) list = list.slice().reverse();
    return list;
  }

  function renderPhaseFilter() {
    const counts = {};
    for (const r of rows) counts[r.phase] = (counts[r.phase] || 0) + 1;
    replace(q("phase-filter"), PHASES.filter((p) => counts[p]).map((p) =>
      el("label", {class: "check"}, el("input", {type: "checkbox", value: p, checked: state.phases.has(p),
        onchange: (e) => { e.target.checked ? state.phases.add(p) : state.phases.delete(p); state.page = 0; renderTable(); }}),
        badge(p), ` ${counts[p]}`)));
  }

  function renderTable() {
    const cols = columns();
    const list = visibleRows(cols);
    const pages = Math.max(1, Math.ceil(list.length / PAGE));
    if (state.focus) {
      const at = list.findIndex((r) => r.name === state.focus);
      if (at >= 0) state.page = Math.floor(at / PAGE);
    }
    state.page = Math.min(state.page, pages - 1);
    const shown = list.slice(state.page * PAGE, (state.page + 1) * PAGE);
    const table = q("trials");
    replace(table.tHead, el("tr", {}, cols.map((c) => el("th", {
      class: [c.get ? "sortable" : "", state.sort === c.id ? (state.desc ? "sorted desc" : "sorted asc") : "", c.num ? "num" : ""].join(" "),
      dataset: {col: c.id},
      onclick: c.get ? () => { state.desc = state.sort === c.id ? !state.desc : false; state.sort = c.id; state.focus = null; renderTable(); } : null,
    }, c.label))));
    replace(table.tBodies[0], shown.map((r) => el("tr", {dataset: {name: r.name, phase: r.phase},
      class: r.name === state.focus ? "focus" : ""},
      cols.map((c) => el("td", {class: c.num ? "num" : c.param ? "param" : ""},
        c.cell ? c.cell(r) : c.num ? number(c.get(r)) : (c.get(r) ?? ""))))));
    q("trial-count").textContent = list.length === rows.length ? `${rows.length}` : `${list.length} of ${rows.length}`;
    const pager = q("trial-pager");
    replace(pager,
      el("button", {type: "button", disabled: state.page === 0, onclick: () => { state.page--; state.focus = null; renderTable(); }}, "‹ prev"),
      ` rows ${list.length ? state.page * PAGE + 1 : 0}–${state.page * PAGE + shown.length} of ${list.length} `,
      el("button", {type: "button", disabled: state.page >= pages - 1, onclick: () => { state.page++; state.focus = null; renderTable(); }}, "next ›"));
    q("selection").textContent = state.selected.size ? `${state.selected.size} selected` : "";
  }

  function select(name, on) {
    on ? state.selected.add(name) : state.selected.delete(name);
    q("selection").textContent = state.selected.size ? `${state.selected.size} selected` : "";
    if (config.allowWrite) q("action-restart").disabled = state.selected.size === 0;
    plots.curves();
  }

  // The trial named by the URL's #trial=NAME: its row shown and marked, its retry chain listed.
  function chain(name) {
    let first = byName.get(name), guard = 0;
    while (first && first.retryOf && byName.has(first.retryOf) && guard++ < 100) first = byName.get(first.retryOf);
    const result = [];
    for (let t = first; t && guard++ < 200; t = t.retriedBy ? byName.get(t.retriedBy) : null) result.push(t);
    return result;
  }

  function renderDetail() {
    const box = q("trial-detail");
    const r = state.focus && byName.get(state.focus);
    if (!r) { box.hidden = true; return; }
    box.hidden = false;
    const links = chain(r.name);
    replace(box,
      el("div", {class: "detail-head"}, el("h3", {}, r.name), badge(r.phase),
        el("a", {href: "#", class: "close", onclick: (e) => { e.preventDefault(); history.replaceState(null, "", location.pathname); focus(null); }}, "close")),
      el("dl", {class: "facts"},
        fact("Attempt", `${r.attempt}` + (r.launchReason ? ` (${r.launchReason})` : "")),
        fact("Reason", r.reason || ""), fact("Failure class", r.failureClass || ""),
        r.exitCode !== undefined ? fact("Exit code", String(r.exitCode)) : null,
        multi() ? fact("Objectives", view.objectives.map((o, i) => `${o.name} ${r.objectiveValues ? number(r.objectiveValues[i]) : ""}`).join(", "))
          : fact("Objective", number(r.objective)),
        r.feasible !== undefined ? fact("Feasible", r.feasible ? "yes" : "no") : null,
        fact("Started (UTC)", time(r.started)), fact("Finished (UTC)", time(r.completed)),
        fact("Duration", duration(seconds(r.started, r.completed))),
        fact("Metric history", `${r.steps || 0} values`)),
      el("div", {class: "chain"}, el("strong", {}, "Retry chain: "),
        links.map((t, i) => [i ? " → " : "", t.name === r.name ? el("strong", {}, t.name) : trialLink(t.name), " ",
          badge(t.phase), t.failureClass ? el("span", {class: "muted"}, ` ${t.failureClass}`) : ""])),
      el("table", {class: "grid small"},
        Object.entries(r.params || {}).map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {class: "param"}, v))),
        Object.entries(r.metrics || {}).map(([k, v]) => el("tr", {class: "muted"}, el("td", {}, k), el("td", {}, number(v))))),
      r.message ? el("pre", {class: "message"}, r.message) : null,
      config.allowWrite ? el("button", {type: "button", onclick: () => restart([r.name])}, "Restart this trial") : null);
  }

  function focus(name) {
    state.focus = name;
    if (name && byName.has(name)) {
      const r = byName.get(name);
      if (state.phases.size && !state.phases.has(r.phase)) state.phases.clear();
      state.search = "";
      q("trial-search").value = "";
    }
    renderPhaseFilter();
    renderTable();
    renderDetail();
    if (name) {
      const row = q("trials").querySelector(`tr.focus`);
      (row || q("trial-detail")).scrollIntoView({block: "center"});
    }
  }

  function fromHash() {
    const m = location.hash.match(/^#trial=(.+)$/);
    focus(m ? decodeURIComponent(m[1]) : null);
  }

  // --- recovery ----------------------------------------------------------------------------------------

  function renderRecovery(rec) {
    q("recovery-count").textContent = `${rec.rows.length} of ${rec.configurations} configurations needed more than one attempt or failed`;
    const total = rec.byFailureClass.reduce((n, c) => n + c.attempts, 0);
    q("recovery-summary").textContent = total
      ? `${total} failed attempts cost ${duration(rec.byFailureClass.reduce((n, c) => n + c.seconds, 0))} of trial time; ${rec.clean} configurations ran once and succeeded (or are running).`
      : "No attempt has failed.";
    replace(q("failure-classes"), total ? [el("tr", {}, ["failure class", "failed attempts", "configurations", "trial time", "recovered"].map((h) => el("th", {}, h))),
      rec.byFailureClass.map((c) => el("tr", {dataset: {failureClass: c.failureClass}}, el("td", {}, c.failureClass), el("td", {class: "num"}, c.attempts),
        el("td", {class: "num"}, c.configurations), el("td", {class: "num"}, duration(c.seconds)),
        el("td", {class: "num"}, `${c.recovered} of ${c.configurations}`)))] : []);
    const pages = Math.max(1, Math.ceil(rec.rows.length / RECOVERY_PAGE));
    state.recoveryPage = Math.min(state.recoveryPage, pages - 1);
    const shown = rec.rows.slice(state.recoveryPage * RECOVERY_PAGE, (state.recoveryPage + 1) * RECOVERY_PAGE);
    replace(q("recovery"), rec.rows.length ? [el("tr", {}, ["configuration", "attempts", "outcome", "failed time"].map((h) => el("th", {}, h))),
      shown.map((g) => el("tr", {dataset: {config: g.config}},
        el("td", {class: "param"}, Object.entries(g.params).map(([k, v]) => `${k}=${v}`).join(", ")),
        el("td", {class: "attempts"}, g.attempts.map((a, i) => [i ? el("span", {class: "arrow"}, " → ") : "",
          el("a", {href: `#trial=${encodeURIComponent(a.name)}`, class: `attempt phase-${a.phase.toLowerCase()}`,
            title: `${a.name}: ${a.phase}${a.reason ? " (" + a.reason + ")" : ""}`},
            `${a.attempt}: ${a.phase}`, a.failureClass ? ` ${a.failureClass}` : "")])),
        el("td", {}, badge(g.outcome)),
        el("td", {class: "num"}, duration(g.failedSeconds))))] : []);
    replace(q("recovery-pager"), pages > 1 ? [
      el("button", {type: "button", disabled: state.recoveryPage === 0, onclick: () => { state.recoveryPage--; renderRecovery(rec); }}, "‹ prev"),
      ` page ${state.recoveryPage + 1} of ${pages} `,
      el("button", {type: "button", disabled: state.recoveryPage >= pages - 1, onclick: () => { state.recoveryPage++; renderRecovery(rec); }}, "next ›")] : []);
  }

  // --- plots ---------------------------------------------------------------------------------------------

  const LAYOUT = {autosize: true, height: 380, margin: {l: 60, r: 30, t: 60, b: 50}, font: {size: 11}};

  let loadPlotly;
  const plotlyLoaded = new Promise((resolve, reject) => {
    loadPlotly = () => {
      const script = el("script", {src: "/static/plotly.min.js"});
      script.addEventListener("load", () => { mark("plotly"); resolve(); });
      script.addEventListener("error", () => reject(new Error("plotly.js did not load")));
      document.head.appendChild(script);
    };
  });

  // A slot is a plot on the page (its div is plot-SLOT): which figure it shows (kind) and the URL
  // that asks for it. Several objectives add a slot per objective's history (history-1, ...).
  const slots = {};

  // Draws slot `slot`: its URL fetched now, or `asked` ({url, figure}: a figure already asked for).
  const drawn = {};  // slot -> the figure's version and URL last drawn

  async function draw(slot, asked) {
    const div = q(`plot-${slot}`), kind = slots[slot].kind;
    try {
      const url = asked ? asked.url : slots[slot].url();
      const [figure] = await Promise.all([asked ? asked.figure : getJSON(url), plotlyLoaded]);
      // The user chose another objective (or trials) while it came: that one is drawn instead.
      if (url !== slots[slot].url()) { plots[slot](); return; }
      const stamp = `${figure.version}:${url}`;
      if (drawn[slot] === stamp) return;  // the same figure: drawing it again would only cost time
      drawn[slot] = stamp;
      if (!figure.data || figure.data.length === 0) {
        // Nothing to draw (no trial has reported it yet): a line saying so, not empty axes. The
        // figure's own note says what is missing.
        const said = ((figure.layout || {}).annotations || []).map((a) => a.text).join(" ");
        if (window.Plotly) Plotly.purge(div);
        replace(div, el("p", {class: "empty-plot"}, said || `${kind}: nothing to plot yet`));
        div.dataset.rendered = String(Date.now());
        mark(slot);
        return;
      }
      if (div.querySelector("p.empty-plot")) div.replaceChildren();  // its data has come
      const layout = {...figure.layout, ...LAYOUT, margin: {...LAYOUT.margin, ...(figure.layout.margin || {})}};
      if (kind === "parallel") layout.margin.t = 90;
      if (kind === "slice") layout.width = undefined;
      if (kind === "schedule") { layout.height = figure.layout.height; layout.margin.t = 90; }  // a panel per parameter
      await Plotly.react(div, figure.data, layout, {responsive: true, displaylogo: false});
      div.dataset.rendered = String(Date.now());
      mark(slot);
    } catch (e) {
      replace(div, el("p", {class: "errors"}, `${kind}: ${e.message}`));
    }
  }

  // The objective the parallel coordinates are coloured by and the importance and slice plots
  // show (several objectives; with one, the page names none).
  function objectiveUrl(kind) {
    const chosen = q("objective").value;
    return chosen ? `${api}/figures/${kind}?${new URLSearchParams({metric: chosen})}` : `${api}/figures/${kind}`;
  }

  // Each plot refreshes on its own: a slow one (parallel coordinates draw with WebGL) does not
  // hold back the others.
  const plots = {};
  function addSlot(slot, kind, url, wait = 2000) {
    slots[slot] = {kind, url};
    plots[slot] = coalesce(() => draw(slot), wait);
  }
  for (const kind of ["parallel", "importance", "slice"]) addSlot(kind, kind, () => objectiveUrl(kind));
  addSlot("history", "history", () => `${api}/figures/history`);
  function curvesUrl() {
    const metric = q("curve-metric").value;
    const chosen = [...state.selected];
    q("curve-which").textContent = chosen.length ? `of the ${chosen.length} selected trials` : "of the latest trials with a history (select trials in the table to compare others)";
    const params = new URLSearchParams({metric});
    if (chosen.length) params.set("trials", chosen.join(","));
    return `${api}/figures/curves?${params}`;
  }
  addSlot("curves", "curves", curvesUrl, 1000);

  // Several objectives: the Pareto front first, then a history per objective (the first in the
  // page's history slot, the others added after it), and the objective selector.
  function addObjectives() {
    if (!multi()) return;
    const names = view.objectives.map((o) => o.name);
    q("pareto-box").hidden = false;
    addSlot("pareto", "pareto", () => `${api}/figures/pareto`);
    ORDER.unshift("pareto");
    const history = (name) => `${api}/figures/history?${new URLSearchParams({metric: name})}`;
    slots.history.url = () => history(names[0]);
    let after = q("history-box");
    names.slice(1).forEach((name, i) => {
      const slot = `history-${i + 1}`;
      const box = el("div", {class: "plot"}, el("div", {id: `plot-${slot}`, class: "chart", dataset: {kind: "history", metric: name}}));
      after.after(box);
      after = box;
      addSlot(slot, "history", () => history(name));
      ORDER.splice(ORDER.indexOf("history") + 1 + i, 0, slot);
    });
    q("plot-history").dataset.metric = names[0];
    replace(q("objective"), names.map((n) => el("option", {value: n}, n)));
    q("objective-controls").hidden = false;
    q("objective").addEventListener("change", () => { plots.parallel(); plots.importance(); plots.slice(); });
  }

  // Population-based training: each member's hyperparameter schedule, first.
  function addSchedule() {
    if (!view.pbt) return;
    q("schedule-box").hidden = false;
    addSlot("schedule", "schedule", () => `${api}/figures/schedule`);
    ORDER.unshift("schedule");
  }

  // The first time, every figure is asked for at once, and drawn one after the other in ORDER
  // (each draw holds the page's thread: the cheap ones should not wait behind the slow one).
  async function firstDraw() {
    const figs = Object.fromEntries(ORDER.map((s) => {
      const url = slots[s].url();
      return [s, {url, figure: getJSON(url).then((f) => { mark(`${s}:data`); return f; })}];
    }));
    loadPlotly();
    for (const slot of ORDER) await draw(slot, figs[slot]);
  }
  // Drawn in this order, the parallel coordinates (WebGL, the slowest) last.
  const ORDER = ["history", "slice", "importance", "curves", "parallel"];
  plots.all = () => { for (const slot of ORDER) plots[slot](); };

  // --- loading and live updates ----------------------------------------------------------------------

  // `configured`: the first time, /api/config asked for at the same time as the rest.
  async function reload(configured) {
    if (!configured && view) {  // a live refresh: nothing to do if the experiment did not change
      const v = await getJSON(api);
      if (v.version === view.version) return;
    }
    const recovery = getJSON(`${api}/recovery`);  // asked for now, drawn after the table
    recovery.catch(() => null);  // (its error, if any, is the one the others say)
    const [c, v, t] = await Promise.all([configured || config, getJSON(api), getJSON(`${api}/trials`)]);
    config = c;
    view = v;
    rows = t;
    byName = new Map(rows.map((r) => [r.name, r]));
    renderSummary();
    mark("summary");
    renderPhaseFilter();
    renderTable();
    renderDetail();
    mark("table");
    document.body.dataset.ready = "table";
    renderRecovery(await recovery);
    mark("recovery");
  }
  const loadTable = coalesce(() => reload(), 1000);

  async function start() {
    try {
      const configured = getJSON("/api/config");
      configured.then(hpo.showUser, () => null);  // who is signed in, even on a refused page
      await reload(configured);
      showErrors(config.errors);
    } catch (e) {
      // Not found, or not this user's to read: the reason alone, no empty page that seems to load.
      showErrors([e.message]);
      for (const part of document.querySelectorAll("main > section, header .jump")) part.hidden = true;
      q("live").hidden = true;
      return;
    }
    replace(q("curve-metric"), view.metricNames.map((m) => el("option", {value: m}, m)));
    q("curve-metric").addEventListener("change", () => plots.curves());
    addObjectives();
    addSchedule();
    firstDraw();
    q("trial-search").addEventListener("input", (e) => { state.search = e.target.value; state.page = 0; state.focus = null; renderTable(); });
    window.addEventListener("hashchange", fromHash);
    if (location.hash) fromHash();
    live((message) => {
      // The stream's first message (and the first after a reconnection) says "everything": the
      // table and the plots ask, and redraw only what changed.
      if (!concerns(message, key)) return;
      loadTable();
      plots.all();
    });
  }
  start();
})();
