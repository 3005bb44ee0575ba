// vigil web UI — Actions: each autoscaler's current and desired replicas
// over time next to its metric and target, restart rules with cooldowns and
// crash-loop marks, and the audit log as a timeline (decision, reason with
// the metric values, delivery attempts and results).
"use strict";
(function () {
  const V = window.V;
  const h = V.h;
  const RANGES = ["15m", "1h", "3h", "6h", "1d", "7d"];

  /** Audit entries grouped by their idempotency id, newest decision first. */
  V.groupAudit = function (entries) {
    const byId = new Map();
    const order = [];
    for (const e of entries.slice().sort((a, b) => a.seq - b.seq)) {
      let g = byId.get(e.id);
      if (!g || !e.id) {
        g = { first: e, attempts: [] };
        if (e.id) byId.set(e.id, g);
        order.push(g);
      } else {
        g.attempts.push(e);
      }
    }
    return order.reverse();
  };

  /** Log labels of a restart target (metric `name` is the log's `container_name`). */
  function logLabels(target) {
    const t = target || {};
    if (t.namespace && t.pod) return { namespace: t.namespace, pod: t.pod, container: t.container };
    if (t.name) return { container_name: t.name };
    if (t.container_id) return { container_id: t.container_id };
    return null;
  }

  function timeline(entries) {
    const groups = V.groupAudit(entries);
    if (!groups.length) return h("p.empty", "No decision in the audit log yet.");
    return h("ol.timeline", { "aria-label": "audit log, newest first" }, groups.map((g) => {
      const e = g.first;
      const logs = e.action === "restart" ? logLabels(e.target) : null;
      return h("li", { class: e.action, "data-id": e.id, "data-rule": e.rule },
        h("div.head",
          h("time", { datetime: new Date(e.time_ms).toISOString() }, V.fmtTime(e.time_ms)),
          h("strong", e.action + " · " + e.rule),
          V.actionBadge(e.result),
          e.to_replicas !== undefined ? h("span", e.from_replicas + " → " + e.to_replicas + " replicas") : null,
          h("span", Object.entries(e.target || {}).map(([k, v]) => h("span.chip", k + "=" + v))),
          h("span.muted", "via " + e.executor),
          logs ? h("a", { href: V.logsLink(logs, e.time_ms) }, "logs around then") : null),
        e.detail ? h("p.detail", e.detail) : null,
        g.attempts.length ? h("ul.attempts", g.attempts.map((a) => h("li",
          V.actionBadge(a.result), " ", V.fmtTime(a.time_ms, true), " (+" + V.fmtDur(a.time_ms - e.time_ms) + ")", a.detail ? " — " + a.detail : ""))) : null);
    }));
  }

  async function scalerCard(sc, range, now) {
    const secs = V.parseDur(range);
    const end = now / 1000, start = end - secs, step = V.autoStep(secs, 200);
    const sel = `{scaler=${JSON.stringify(sc.name)}}`;
    const replicas = h("div.chart", { "data-scaler": sc.name, "data-kind": "replicas" });
    const metric = h("div.chart", { "data-scaler": sc.name, "data-kind": "metric" });
    const card = h("section.card", { "aria-label": "autoscaler " + sc.name },
      h("h3", "Autoscaler " + sc.name),
      sc.query ? h("p.note", h("code", sc.query), " · target " + V.fmtNum(sc.target) + " · " + sc.minReplicas + "–" + sc.maxReplicas + " replicas · every " + V.fmtDur(sc.intervalMs) + (sc.dryRun ? " · dry run" : "")) : null,
      h("div.grid", h("div", h("h4.muted", "Replicas"), replicas), h("div", h("h4.muted", "Metric and target"), metric)));
    const [cur, des] = await Promise.all([
      V.api("/api/v1/query_range", { query: `max(vigil_actions_scaler_current_replicas${sel})`, start, end, step }),
      V.api("/api/v1/query_range", { query: `max(vigil_actions_scaler_desired_replicas${sel})`, start, end, step }),
    ]);
    const both = [];
    if (cur.result[0]) both.push({ metric: { __name__: "current" }, values: cur.result[0].values });
    if (des.result[0]) both.push({ metric: { __name__: "desired" }, values: des.result[0].values });
    if (both.length) V.chart(replicas, Object.assign({ height: 180, colors: ["#0b57d0", "#c5221f"], xRange: [start, end] }, V.matrixToData(both, (m) => m.__name__)));
    else replicas.append(h("p.empty", "No replica figures yet (they come from the collector's self-scrape)."));
    if (!sc.query) {
      metric.append(h("p.empty", "The autoscaler's query needs the admin role to be shown."));
      return card;
    }
    const m = await V.api("/api/v1/query_range", { query: sc.query, start, end, step }, { post: true }).catch((e) => e);
    if (m instanceof Error) { metric.append(V.errorBox(m, sc.query)); return card; }
    const series = (m.result || []).slice();
    if (!series.length) { metric.append(h("p.empty", "No data for the query in this range.")); return card; }
    const data = V.matrixToData(series, (mt) => (Object.keys(mt).length ? V.seriesName(mt) : "metric"));
    data.ys.push(data.x.map(() => sc.target));
    data.labels.push("target");
    V.chart(metric, Object.assign({ height: 180, xRange: [start, end] }, data));
    return card;
  }

  V.pages.actions = async function (el, params) {
    const p = Object.assign({ range: "1h" }, params);
    el.append(h("h1", "Actions"));
    const range = h("select#range", RANGES.map((r) => h("option", { value: r, selected: r === p.range }, r)));
    const scalersBox = h("div");
    const restartBox = h("div");
    const auditBox = h("div");
    el.append(h("div.controls", h("label", "Range", range)), scalersBox, restartBox, auditBox);

    async function load() {
      V.setParams({ range: range.value });
      const now = Date.now();
      let ov = null, audit = null, denied = null;
      try {
        [ov, audit] = await Promise.all([V.api("/api/v1/actions/overview"), V.api("/api/v1/actions", { limit: 500 })]);
      } catch (e) {
        if (e.status !== 403) throw e;
        denied = e;
      }
      // autoscalers: from the configuration, or (read role) from their metrics
      let scalers = ov ? ov.autoscalers : [];
      if (!ov) {
        const names = await V.instant("count by (scaler) (vigil_actions_scaler_desired_replicas)");
        scalers = names.map((r) => ({ name: r.metric.scaler }));
      }
      V.clear(scalersBox).append(h("h2", "Autoscalers"));
      if (denied) scalersBox.append(h("p.note", "Signed in without the admin role: the audit log, the autoscalers' queries and the restart state are not shown. " + denied.message));
      if (!scalers.length) scalersBox.append(h("p.empty", ov && !ov.configured ? "No actions are configured (--actions)." : "No autoscaler."));
      const cards = await Promise.all(scalers.map((sc) => scalerCard(sc, range.value, now).catch((e) => V.section(sc.name, V.errorBox(e)))));
      scalersBox.append(...cards);

      V.clear(restartBox);
      if (ov) {
        restartBox.append(V.section("Restart rules",
          ov.restartRules.length ? V.table(["Rule", "Match", "Executor", "Cooldown", "At most"], ov.restartRules.map((r) => h("tr",
            h("th", { scope: "row" }, r.name, r.dryRun ? h("div", V.badge("dry run")) : null),
            h("td", r.match.map((m) => h("span.chip", m))),
            V.td(r.executor), V.td(V.fmtDur(r.cooldownMs)),
            V.td(r.maxRestarts + " per " + V.fmtDur(r.windowMs))))) : h("p.empty", "No restart rule."),
          h("h3", "Cooldowns and restarts in the window"),
          ov.cooldowns.length ? V.table(["Target", "Rule", "Last restart", "Cooldown", "Restarts in window"], ov.cooldowns.map((c) => h("tr",
            h("th", { scope: "row" }, Object.entries(c.target).map(([k, v]) => h("span.chip", k + "=" + v))),
            V.td(c.rule), V.td(V.fmtTime(c.lastRestartMs)),
            h("td", c.inCooldown ? V.badge("until " + V.fmtTime(c.cooldownUntilMs), "warn") : V.badge("over", "ok")),
            V.td(c.restartsInWindow + " of " + c.maxRestarts, true)))) : h("p.empty", "No target restarted recently."),
          h("h3", "Crash-loop marks"),
          ov.crashLooping.length ? V.table(["Target", "Since"], ov.crashLooping.map((c) => h("tr",
            h("th", { scope: "row", class: "mono" }, c.target), h("td", V.badge("crash-looping since " + V.fmtTime(c.sinceMs), "bad"))))) : h("p.empty", "No target is marked crash-looping.")));
      }
      V.clear(auditBox);
      if (audit) auditBox.append(V.section("Audit log", h("p.note", "Newest first; a decision and its delivery attempts share one id (the webhook's idempotency id)."), timeline(audit.actions || [])));
    }
    range.addEventListener("change", () => load().catch((e) => el.append(V.errorBox(e))));
    await load();
    V.every(15000, () => load().catch(() => {}));
  };
})();
