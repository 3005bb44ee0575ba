// vigil web UI — Alerts and rules: what /api/v1/alerts and /api/v1/rules
// say, readable: active alerts with their labels and `for` progress, then
// every group with its rules, state, health, last evaluation and errors.
"use strict";
(function () {
  const V = window.V;
  const h = V.h;
  const stateKind = { firing: "bad", pending: "warn", inactive: "ok" };
  const goTime = (s) => (!s || s.startsWith("0001-") ? 0 : Date.parse(s));

  /** How far a pending alert is through its `for` duration. */
  function forProgress(activeAt, holdSec, now) {
    if (!holdSec) return null;
    const frac = Math.min((now - activeAt) / (holdSec * 1000), 1);
    return h("div", { title: "for " + V.fmtSeconds(holdSec) },
      h("div.progress", { role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(Math.round(frac * 100)), "aria-label": "for progress" },
        h("span", { style: { width: (frac * 100).toFixed(0) + "%" } })),
      h("span.meter-label", V.fmtDur(now - activeAt) + " of " + V.fmtSeconds(holdSec)));
  }

  V.pages.alerts = async function (el) {
    el.append(h("h1", "Alerts and rules"));
    const filter = h("input#filter", { type: "search", placeholder: "filter by name or label", "aria-label": "filter rules" });
    const show = {};
    const boxes = ["firing", "pending", "inactive"].map((s) => {
      show[s] = h("input", { type: "checkbox", checked: true, id: "show-" + s });
      return h("label.inline", show[s], s);
    });
    const alertsBox = h("div");
    const groupsBox = h("div");
    el.append(h("div.controls", h("label", "Filter", filter), ...boxes), alertsBox, groupsBox);
    let rules = null, alerts = null;

    function render() {
      const now = Date.now();
      const f = filter.value.trim().toLowerCase();
      const match = (name, labels) => !f || name.toLowerCase().includes(f) || Object.entries(labels || {}).some(([k, v]) => (k + "=" + v).toLowerCase().includes(f));
      V.clear(alertsBox); V.clear(groupsBox);
      const active = (alerts || []).filter((a) => show[a.state] && show[a.state].checked && match(a.labels.alertname || "", a.labels));
      const holds = {};
      for (const g of rules.groups || []) for (const r of g.rules) if (r.type === "alerting") holds[r.name] = r.duration;
      alertsBox.append(V.section("Active alerts (" + active.length + ")",
        active.length ? V.table(["Alert", "State", "Active since", "For", "Value", "Labels"], active.map((a) => h("tr",
          h("th", { scope: "row" }, a.labels.alertname, a.annotations && a.annotations.summary ? h("div.muted", a.annotations.summary) : null),
          h("td", V.badge(a.state, stateKind[a.state])),
          V.td(V.fmtTime(goTime(a.activeAt))),
          h("td", a.state === "pending" ? forProgress(goTime(a.activeAt), holds[a.labels.alertname], now) : V.fmtDur(now - goTime(a.activeAt))),
          V.td(a.value, true),
          h("td", Object.entries(a.labels).filter(([k]) => k !== "alertname").map(([k, v]) => h("span.chip", k + "=" + v))),
        ))) : h("p.empty", "No active alert matches.")));
      const groups = rules.groups || [];
      if (!groups.length) groupsBox.append(V.section("Rule groups", h("p.empty", "No rule files are loaded (--rules).")));
      for (const g of groups) {
        const rs = g.rules.filter((r) => match(r.name, r.labels) && (r.type !== "alerting" || (show[r.state] && show[r.state].checked)));
        if (!rs.length && f) continue;
        const last = goTime(g.lastEvaluation);
        groupsBox.append(V.section(g.name,
          h("p.note", g.file + " · every " + V.fmtSeconds(g.interval) + " · last evaluation " + (last ? V.ago(last, now) : "never") + " in " + V.fmtDur((g.evaluationTime || 0) * 1000)),
          V.table(["Rule", "State", "Health", "Last evaluation", "Expression"], rs.map((r) => {
            const le = goTime(r.lastEvaluation);
            return h("tr",
              h("th", { scope: "row" }, r.name, h("div.muted", r.type === "alerting" ? "alert" + (r.duration ? ", for " + V.fmtSeconds(r.duration) : "") : "record")),
              h("td", r.type === "alerting" ? [V.badge(r.state, stateKind[r.state]), r.alerts && r.alerts.length ? h("div.muted", r.alerts.length + " alert" + (r.alerts.length > 1 ? "s" : "")) : null] : "—"),
              h("td", V.badge(r.health, r.health === "ok" ? "ok" : r.health === "err" ? "bad" : "plain"), r.lastError ? h("div.error", r.lastError) : null),
              V.td(le ? V.ago(le, now) + " (" + V.fmtDur((r.evaluationTime || 0) * 1000) + ")" : "never"),
              h("td", h("a.mono", { href: "#/query?" + new URLSearchParams({ expr: r.query, range: "1h" }) }, r.query)));
          }))));
      }
    }
    const load = async () => {
      const [r, a] = await Promise.all([V.api("/api/v1/rules"), V.api("/api/v1/alerts")]);
      rules = r; alerts = a.alerts || [];
      render();
    };
    filter.addEventListener("input", render);
    for (const s of Object.values(show)) s.addEventListener("change", render);
    await load();
    V.every(15000, () => load().catch(() => {}));
  };
})();
