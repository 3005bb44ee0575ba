// vigil web UI — Status: build and runtime information, store statistics
// with a cardinality explorer (top metric names, label names and label
// pairs by series, bounded by `limit`), the WAL and forwarding queues (from
// the collector's self-scrape), flags and configuration with secrets hidden.
"use strict";
(function () {
  const V = window.V;
  const h = V.h;
  const SELF = '{job="vigil-collector"}';
  const LIMITS = ["10", "20", "50", "100"];

  function kv(obj) {
    return h("dl.kv", Object.entries(obj).map(([k, v]) => [h("dt", k), h("dd", v === "" || v === null || v === undefined ? "—" : String(v))]));
  }

  /** One top list of the TSDB status as a table with bars. */
  function topTable(title, rows, unit, onPick, pickLabel) {
    const max = rows.reduce((m, r) => Math.max(m, r.value), 0);
    return h("div.card",
      h("h3", title),
      rows.length ? V.table(["Name", { label: unit, num: true }, ""], rows.map((r) => h("tr",
        h("td.mono", onPick ? h("button.chip", { type: "button", title: pickLabel, on: { click: () => onPick(r.name) } }, r.name) : r.name),
        V.td(unit === "bytes" ? V.fmtBytes(r.value) : V.fmtNum(r.value), true),
        h("td", { style: { width: "30%" } }, V.meter(r.value, max, r.name, true)))))
        : h("p.empty", "Nothing here."));
  }

  async function cardinality(box, state) {
    const q = { limit: state.limit, "match[]": state.match || undefined, focusLabel: state.focus || undefined };
    const d = await V.api("/api/v1/status/tsdb", q);
    V.clear(box);
    const hs = d.headStats;
    box.append(h("p", h("strong", V.fmtNum(hs.numSeries)), state.match ? [" series match ", h("code", state.match)] : " series in the store",
      " · " + V.fmtNum(hs.numLabelPairs) + " label pairs · " + V.fmtNum(hs.numSamples) + " samples in " + V.fmtNum(hs.chunkCount) + " sealed chunks"));
    const setMatch = (sel) => { state.set({ match: sel }); };
    const grid = h("div.grid",
      topTable("Series by metric name", d.seriesCountByMetricName, "series", (n) => setMatch(`{__name__=${JSON.stringify(n)}}`), "explore this metric"),
      topTable("Values by label name", d.labelValueCountByLabelName, "values", (n) => state.set({ focus: n }), "series per value of this label"),
      topTable("Series by label pair", d.seriesCountByLabelValuePair, "series", (n) => { const i = n.indexOf("="); setMatch(`{${n.slice(0, i)}=${JSON.stringify(n.slice(i + 1))}}`); }, "explore these series"),
      topTable("Bytes of values by label name", d.memoryInBytesByLabelName, "bytes"));
    if (d.seriesCountByFocusLabelValue) {
      grid.prepend(topTable("Series by value of " + state.focus, d.seriesCountByFocusLabelValue, "series",
        (v) => setMatch(state.match && state.match !== "{}" ? state.match.replace(/\}\s*$/, (state.match.trim() === "{}" ? "" : ", ") + state.focus + "=" + JSON.stringify(v) + "}") : `{${state.focus}=${JSON.stringify(v)}}`), "narrow to this value"));
    }
    box.append(grid);
  }

  async function queues(box) {
    const q = (e) => V.instant(e).catch(() => []);
    const one = async (e) => { const r = await q(e); return r.length ? +r[0].value[1] : null; };
    const [walBytes, walSegs, held, ckpt, pending, backlog, sent, failed, retried, shards] = await Promise.all([
      one(`sum(vigil_collector_wal_bytes${SELF})`),
      one(`sum(vigil_collector_wal_segments${SELF})`),
      one(`sum(vigil_collector_forward_wal_held_bytes${SELF})`),
      one(`max(vigil_collector_checkpoint_last_success_timestamp_seconds${SELF})`),
      q(`vigil_collector_forward_samples_pending${SELF}`),
      q(`vigil_collector_forward_backlog_bytes${SELF}`),
      q(`rate(vigil_collector_forward_samples_sent_total${SELF}[5m])`),
      q(`increase(vigil_collector_forward_samples_failed_total${SELF}[1h])`),
      q(`increase(vigil_collector_forward_samples_retried_total${SELF}[1h])`),
      q(`vigil_collector_forward_shards${SELF}`),
    ]);
    V.clear(box);
    if (walBytes === null) {
      box.append(h("p.empty", "No self-scraped figures yet: they are written every --self-scrape-interval (15 s by default; 0 disables them)."));
      return;
    }
    box.append(kv({
      "WAL size": V.fmtBytes(walBytes),
      "WAL segments": V.fmtNum(walSegs),
      "held for forwarding": held === null ? "—" : V.fmtBytes(held),
      "last checkpoint": ckpt ? V.fmtTime(ckpt * 1000) + " (" + V.ago(ckpt * 1000) + ")" : "—",
    }));
    const key = (m) => (m.remote_name || "") + " " + (m.url || "");
    const rows = new Map();
    const put = (res, f) => { for (const r of res) { const k = key(r.metric); const row = rows.get(k) || { name: r.metric.remote_name, url: r.metric.url }; row[f] = +r.value[1]; rows.set(k, row); } };
    put(pending, "pending"); put(backlog, "backlog"); put(sent, "sent"); put(failed, "failed"); put(retried, "retried"); put(shards, "shards");
    // lag per endpoint: newest read − newest delivered
    const lagBy = {};
    for (const r of await q(`vigil_collector_forward_highest_timestamp_in_seconds${SELF}`)) lagBy[key(r.metric)] = +r.value[1];
    for (const r of await q(`vigil_collector_forward_highest_sent_timestamp_seconds${SELF}`)) {
      const k = key(r.metric);
      if (lagBy[k] !== undefined && rows.has(k)) rows.get(k).lag = lagBy[k] - +r.value[1];
    }
    if (!rows.size) { box.append(h("p.empty", "No forwarding endpoint is configured (remote_write, loki_push, otlp_export).")); return; }
    box.append(V.table(["Endpoint", { label: "Pending", num: true }, { label: "WAL backlog", num: true }, { label: "Behind by", num: true }, { label: "Sent/s", num: true }, { label: "Retried (1h)", num: true }, { label: "Failed (1h)", num: true }, { label: "Shards", num: true }],
      [...rows.values()].map((r) => h("tr",
        h("th", { scope: "row" }, r.name, h("div.muted.mono", r.url)),
        V.td(V.fmtNum(r.pending), true), V.td(V.fmtBytes(r.backlog), true),
        V.td(r.lag === undefined ? "—" : V.fmtDur(r.lag * 1000), true),
        V.td(V.fmtNum(r.sent), true), V.td(V.fmtNum(r.retried), true),
        h("td.num", r.failed > 0 ? V.badge(V.fmtNum(r.failed), "bad") : V.fmtNum(r.failed)), V.td(V.fmtNum(r.shards), true)))));
  }

  V.pages.status = async function (el, params) {
    el.append(h("h1", "Status"));
    const info = h("div.grid");
    const card = h("section.card#cardinality", h("h2", "Store statistics and cardinality"));
    const match = h("input#match", { type: "text", size: 40, placeholder: '{__name__="container_cpu_usage_seconds_total"}', value: params.match || "" });
    const focus = h("input#focus", { type: "text", size: 16, placeholder: "e.g. namespace", value: params.focus || "" });
    const limit = h("select#limit", LIMITS.map((l) => h("option", { value: l, selected: l === (params.limit || "10") }, l)));
    const reset = h("button.secondary", { type: "button" }, "Whole store");
    const apply = h("button", { type: "button" }, "Explore");
    const cbox = h("div");
    card.append(h("div.controls", h("label", "Series selector", match), h("label", "Focus label", focus), h("label", "Top", limit), apply, reset), cbox);
    const qbox = h("div");
    const flagsBox = h("div");
    const cfgBox = h("div");
    el.append(info, card, V.section("WAL and forwarding", qbox), h("div.grid", V.section("Flags", flagsBox), V.section("Configuration", cfgBox)));

    const state = {
      limit: limit.value, match: match.value.trim(), focus: focus.value.trim(),
      set(ch) {
        Object.assign(state, ch);
        match.value = state.match; focus.value = state.focus; limit.value = state.limit;
        V.setParams({ match: state.match, focus: state.focus, limit: state.limit === "10" ? "" : state.limit });
        V.clear(cbox).append(h("p.empty", "Loading…"));
        cardinality(cbox, state).catch((e) => V.clear(cbox).append(V.errorBox(e, state.match)));
      },
    };
    apply.addEventListener("click", () => state.set({ match: match.value.trim(), focus: focus.value.trim(), limit: limit.value }));
    reset.addEventListener("click", () => state.set({ match: "", focus: "" }));
    limit.addEventListener("change", () => state.set({ limit: limit.value }));
    for (const i of [match, focus]) i.addEventListener("keydown", (e) => { if (e.key === "Enter") apply.click(); });

    const [build, rt, flags, cfg] = await Promise.all([
      V.api("/api/v1/status/buildinfo"), V.api("/api/v1/status/runtimeinfo"),
      V.api("/api/v1/status/flags"), V.api("/api/v1/status/config"),
    ]);
    info.append(V.section("Build", kv({ version: build.version })),
      V.section("Runtime", kv({ "started": rt.startTime, "data folder": rt.dataDir, "retention": rt.storageRetention, "self-scrape": rt.selfScrapeInterval, "corrupt chunks": rt.corruptionCount, "working folder": rt.CWD })));
    const ff = h("input#flag-filter", { type: "search", placeholder: "filter flags", "aria-label": "filter flags" });
    const ft = h("div");
    const drawFlags = () => {
      const f = ff.value.toLowerCase();
      V.clear(ft).append(V.table(["Flag", "Value"], Object.entries(flags).filter(([k, v]) => !f || k.includes(f) || v.toLowerCase().includes(f))
        .map(([k, v]) => h("tr", h("th.mono", { scope: "row" }, "--" + k), h("td.mono", v)))));
    };
    ff.addEventListener("input", drawFlags);
    flagsBox.append(h("p.note", "Values as given (flags over environment over file), else the defaults."), ff, ft);
    drawFlags();
    cfgBox.append(h("p.note", "The settings as given, secrets shown as <secret>."), h("pre.yaml", cfg.yaml));
    await Promise.all([
      cardinality(cbox, state).catch((e) => cbox.append(V.errorBox(e, state.match))),
      queues(qbox).catch((e) => qbox.append(V.errorBox(e))),
    ]);
  };
})();
