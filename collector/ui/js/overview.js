// vigil web UI — Overview: nodes and their agents, containers per node with
// CPU and memory against their limits, firing alerts, the latest actions.
"use strict";
(function () {
  const V = window.V;
  const h = V.h;
  /** Most containers listed (the busiest by CPU); the page stays light on big fleets. */
  const TOP = 200;
  const BY = "node, namespace, pod, container, name";

  async function agentsCard(now) {
    const card = V.section("Nodes and agents");
    const [roster, buf, bufMax, cpu, mem, memTotal, cores] = await Promise.all([
      V.api("/api/v1/status/agents"),
      V.instant("max by (node) (vigil_agent_buffer_bytes)"),
      V.instant("max by (node) (vigil_agent_buffer_max_bytes)"),
      V.instant("1 - avg by (node) (rate(node_cpu_seconds_total{mode=\"idle\"}[2m]))"),
      V.instant("max by (node) (node_memory_MemAvailable_bytes)"),
      V.instant("max by (node) (node_memory_MemTotal_bytes)"),
      V.instant("count by (node) (node_cpu_seconds_total{mode=\"idle\"})"),
    ]);
    const byNode = (res) => Object.fromEntries(res.map((r) => [r.metric.node || "", +r.value[1]]));
    const b = byNode(buf), bm = byNode(bufMax), c = byNode(cpu), ma = byNode(mem), mt = byNode(memTotal), nc = byNode(cores);
    const agents = roster.agents || [];
    if (!agents.length) {
      card.append(h("p.empty", "No agent has connected since the collector started. Start one with vigil-agent --collector http://<this host>:9491."));
      return card;
    }
    const rows = agents.map((a) => {
      const up = a.streams > 0;
      const state = up
        ? V.badge("connected", "ok")
        : V.badge("disconnected", "bad");
      const since = up ? "since " + V.fmtTime(a.connectedAtMs) : V.ago(a.disconnectedAtMs, roster.now) + (a.lastError ? ": " + a.lastError : "");
      const node = a.node;
      const memUsed = mt[node] !== undefined && ma[node] !== undefined ? mt[node] - ma[node] : null;
      return h("tr",
        h("th", { scope: "row" }, node, h("div.muted.mono", a.agentId.slice(0, 12))),
        h("td", state, h("div.muted", since)),
        V.td(a.version || "—"),
        V.td(a.lastBatchAtMs ? V.ago(a.lastBatchAtMs, roster.now) : "—"),
        V.td(a.lastBatchAtMs ? V.fmtDur(a.lastBatchLagMs) : "—", true),
        h("td", b[node] !== undefined ? [V.meter(b[node], bm[node] || 0, "disk buffer of " + node), h("span.meter-label", V.fmtBytes(b[node]) + " of " + V.fmtBytes(bm[node]))] : "—"),
        h("td", c[node] !== undefined ? [V.meter(c[node], 1, "CPU of " + node), h("span.meter-label", (c[node] * 100).toFixed(1) + "% of " + (nc[node] || "?") + " cores")] : "—"),
        h("td", memUsed !== null ? [V.meter(memUsed, mt[node], "memory of " + node), h("span.meter-label", V.fmtBytes(memUsed) + " of " + V.fmtBytes(mt[node]))] : "—"),
      );
    });
    card.append(V.table(["Node / agent", "Stream", "Version", "Last batch", { label: "Lag", num: true }, "Disk buffer", "CPU", "Memory"], rows));
    card.append(h("p.note", "Lag: how long the last batch waited on the agent before it arrived (large while an agent drains its disk buffer)."));
    return card;
  }

  async function containersCard() {
    const card = V.section("Containers");
    const [cpu, mem, memLimit, cpuLimit] = await Promise.all([
      V.instant(`topk(${TOP}, sum by (${BY}) (rate(container_cpu_usage_seconds_total[2m])))`),
      V.instant(`topk(${TOP * 2}, sum by (${BY}) (container_memory_working_set_bytes))`),
      V.instant(`topk(${TOP * 2}, max by (${BY}) (container_spec_memory_limit_bytes > 0))`),
      V.instant(`topk(${TOP * 2}, max by (${BY}) (container_spec_cpu_quota > 0) / max by (${BY}) (container_spec_cpu_period > 0))`),
    ]);
    const rows = new Map();
    const put = (res, field) => {
      for (const r of res) {
        const c = V.containerOf(r.metric);
        if (!c) continue;
        const row = rows.get(c.key) || Object.assign({}, c);
        row[field] = +r.value[1];
        rows.set(c.key, row);
      }
    };
    put(cpu, "cpu"); put(mem, "mem"); put(memLimit, "memLimit"); put(cpuLimit, "cpuLimit");
    const list = Array.from(rows.values()).filter((r) => r.cpu !== undefined || r.mem !== undefined);
    if (!list.length) {
      card.append(h("p.empty", "No container metrics yet."));
      return card;
    }
    list.sort((a, b) => (a.node || "").localeCompare(b.node || "") || (b.cpu || 0) - (a.cpu || 0));
    const nodes = [...new Set(list.map((r) => r.node))];
    const now = Date.now();
    for (const n of nodes) {
      const mine = list.filter((r) => r.node === n).slice(0, TOP);
      card.append(h("h3", "Node " + (n || "(none)")));
      card.append(V.table(["Container", "CPU (cores)", "Memory (working set)", "Logs"], mine.map((r) => h("tr",
        h("th", { scope: "row", class: "mono" }, r.title),
        h("td", r.cpu === undefined ? "—" : [
          r.cpuLimit ? V.meter(r.cpu, r.cpuLimit, "CPU of " + r.title) : null,
          h("span.meter-label", V.fmtNum(+r.cpu.toFixed(3)) + (r.cpuLimit ? " of " + V.fmtNum(+r.cpuLimit.toFixed(2)) : " (no limit)")),
        ]),
        h("td", r.mem === undefined ? "—" : [
          r.memLimit ? V.meter(r.mem, r.memLimit, "memory of " + r.title) : null,
          h("span.meter-label", V.fmtBytes(r.mem) + (r.memLimit ? " of " + V.fmtBytes(r.memLimit) : " (no limit)")),
        ]),
        h("td", h("a", { href: V.logsLink(r.logs, now), "aria-label": "logs of " + r.title }, "logs")),
      ))));
    }
    card.append(h("p.note", `The ${TOP} busiest containers by CPU over the last 2 minutes; limits from the container's cgroup.`));
    return card;
  }

  async function alertsCard() {
    const card = V.section("Firing alerts");
    let alerts = [];
    try {
      alerts = ((await V.api("/api/v1/alerts")).alerts || []).filter((a) => a.state === "firing");
    } catch (e) {
      card.append(V.errorBox(e));
      return card;
    }
    if (!alerts.length) {
      card.append(h("p.empty", "Nothing is firing."));
      return card;
    }
    card.append(V.table(["Alert", "Since", "Labels"], alerts.map((a) => h("tr",
      h("th", { scope: "row" }, a.labels.alertname, a.annotations && a.annotations.summary ? h("div.muted", a.annotations.summary) : null),
      V.td(a.activeAt ? V.ago(Date.parse(a.activeAt)) : "—"),
      h("td", Object.entries(a.labels).filter(([k]) => k !== "alertname").map(([k, v]) => h("span.chip", k + "=" + v))),
    ))));
    return card;
  }

  async function actionsCard() {
    const card = V.section("Latest actions");
    try {
      const d = await V.api("/api/v1/actions", { limit: 8 });
      const list = d.actions || [];
      if (!list.length) card.append(h("p.empty", "No action yet."));
      else card.append(V.table(["When", "Action", "Result", "Target"], list.map((e) => h("tr",
        V.td(V.ago(e.time_ms)),
        V.td(e.action + " · " + e.rule + (e.to_replicas !== undefined ? " (" + e.from_replicas + " → " + e.to_replicas + ")" : "")),
        h("td", V.actionBadge(e.result)),
        h("td", Object.entries(e.target || {}).map(([k, v]) => h("span.chip", k + "=" + v))),
      ))));
      card.append(h("p", h("a", { href: "#/actions" }, "All actions and autoscalers")));
    } catch (e) {
      card.append(e.status === 403 ? h("p.empty", "The audit log needs the admin role. " + e.message) : V.errorBox(e));
    }
    return card;
  }

  V.actionBadge = function (result) {
    const kind = { delivered: "ok", decided: "info", dry_run: "plain", failed: "bad", gave_up: "bad", crash_looping: "bad", skipped_cooldown: "warn", skipped_rate_limit: "warn", gone: "plain" }[result] || "plain";
    return V.badge(result, kind);
  };

  V.pages.overview = async function (el) {
    el.append(h("h1", "Overview"));
    const slots = [h("div"), h("div.grid"), h("div")];
    el.append(slots[0], slots[1], slots[2]);
    const load = async () => {
      const now = Date.now();
      const parts = await Promise.all([
        agentsCard(now).catch((e) => V.section("Nodes and agents", V.errorBox(e))),
        alertsCard(),
        actionsCard(),
        containersCard().catch((e) => V.section("Containers", V.errorBox(e))),
      ]);
      V.clear(slots[0]).append(parts[0]);
      V.clear(slots[1]).append(parts[1], parts[2]);
      V.clear(slots[2]).append(parts[3]);
    };
    await load();
    V.every(15000, () => load().catch(() => {}));
  };
})();
