// The experiment list: `kubectl hpo list` with its filters, kept in the URL, refreshed live.
"use strict";

(() => {
  const {el, replace, number, time, badge, getJSON, showErrors, live, coalesce, mark, q} = hpo;
  const form = q("filters");
  let config = {namespaces: null};

  // The form <-> the query string (so a filtered list can be bookmarked or shared).
  function query() {
    const params = new URLSearchParams();
    for (const name of ["name", "creator", "since", "until", "selector", "sort", "order"]) {
      const value = form.elements[name].value.trim();
      if (value) params.set(name, value);
    }
    for (const name of ["mine", "bookmarked"]) if (form.elements[name].checked) params.set(name, "true");
    const phases = [...form.querySelectorAll("input[name=status]:checked")].map((i) => i.value);
    if (phases.length) params.set("status", phases.join(","));
    for (const tag of form.elements.tag.value.split(",").map((t) => t.trim()).filter(Boolean)) params.append("tag", tag);
    return params;
  }

  function fill(params) {
    for (const name of ["name", "creator", "since", "until", "selector", "sort", "order"]) {
      if (params.has(name)) form.elements[name].value = params.get(name);
    }
    for (const name of ["mine", "bookmarked"]) form.elements[name].checked = params.get(name) === "true";
    const phases = (params.get("status") || "").split(",");
    for (const box of form.querySelectorAll("input[name=status]")) box.checked = phases.includes(box.value);
    form.elements.tag.value = params.getAll("tag").join(", ");
  }

  const COUNTS = [["Succeeded", "Succeeded"], ["Running", "Running"], ["Pending", "Pending"], ["Queued", "Queued"], ["Failed", "Failed"],
                  ["Killed", "Killed"], ["EarlyStopped", "Early-stopped"]];

  function render(rows) {
    const all = config.namespaces === null;
    const head = [...(all ? ["Namespace"] : []), "Name", "Status", "Creator", "Configs", "Trials",
                  ...COUNTS.map(([, label]) => label), "Best", "Bookmarked", "Created (UTC)"];
    replace(q("experiments").tHead, el("tr", {}, head.map((h) => el("th", {}, h))));
    const body = rows.map((e) => {
      const href = `/experiments/${encodeURIComponent(e.namespace)}/${encodeURIComponent(e.name)}`;
      return el("tr", {dataset: {name: e.name, namespace: e.namespace}},
        all ? el("td", {}, e.namespace) : null,
        el("td", {}, el("a", {href}, e.name)),
        el("td", {}, badge(e.phase), e.reason && e.reason !== e.phase ? el("span", {class: "muted"}, " ", e.reason) : null),
        el("td", {class: e.creator ? "" : "muted"}, e.creator || "<none>"),
        el("td", {class: "num"}, `${e.configurations}/${e.maxTrialCount ?? ""}`),
        el("td", {class: "num"}, e.trials),
        COUNTS.map(([phase]) => el("td", {class: "num"}, e.trialStatus[phase] || 0)),
        el("td", {class: "num", title: e.bestTrial || ""}, number(e.bestValue)),
        el("td", {}, e.bookmarked ? "yes" : ""),
        el("td", {}, time(e.created)));
    });
    replace(q("experiments").tBodies[0], body);
    q("empty").hidden = rows.length > 0;
  }

  const refresh = coalesce(async () => {
    const params = query();
    history.replaceState(null, "", params.toString() ? `?${params}` : location.pathname);
    const box = q("filter-error");
    try {
      const answer = await getJSON(`/api/experiments?${params}`);
      box.hidden = true;
      showErrors(answer.errors);
      render(answer.experiments);
      mark("list");
    } catch (e) {
      box.hidden = false;
      replace(box, e.message);
    }
  }, 500);

  let typing = null;
  form.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(refresh, 300); });
  form.addEventListener("submit", (event) => { event.preventDefault(); refresh(); });

  async function start() {
    fill(new URLSearchParams(location.search));
    config = await getJSON("/api/config");
    const where = config.namespaces === null ? (config.user ? "all namespaces you may read" : "all namespaces")
      : config.namespaces.length ? `namespace ${config.namespaces.join(", ")}` : "no namespace you may read";
    q("scope").textContent = (config.context ? `${config.context} · ` : "") + where +
      (config.allowWrite ? " · read-write" : " · read-only");
    showErrors(config.errors);
    hpo.showUser(config);
    refresh();
    live(() => refresh());  // any experiment's change can change the list
  }
  start();
})();
