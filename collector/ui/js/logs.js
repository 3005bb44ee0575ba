// vigil web UI — Logs: LogQL with label pickers, a line-rate histogram above
// the lines, newest first with their labels, and a live tail that polls the
// query API every 2 seconds for lines newer than the newest shown.
"use strict";
(function () {
  const V = window.V;
  const h = V.h;
  const RANGES = ["5m", "15m", "1h", "3h", "6h", "12h", "1d"];
  const LIMITS = ["100", "200", "500", "1000"];
  /** Lines kept on the page while tailing (the oldest go first). */
  const KEEP = 2000;
  const TAIL_MS = 2000;
  /** Labels shown first on a line (the rest follow). */
  const FIRST = ["container_name", "namespace", "pod", "container", "stream", "node"];

  /** Adds `name="value"` to the stream selector of a LogQL query. */
  V.addMatcher = function (query, name, value) {
    const m = name + "=" + JSON.stringify(value);
    const q = query.trim();
    const i = q.indexOf("{"), j = q.indexOf("}");
    if (i < 0 || j < i) return "{" + m + "}" + (q ? " " + q : "");
    const inner = q.slice(i + 1, j).trim();
    return q.slice(0, i + 1) + (inner ? inner + ", " : "") + m + q.slice(j);
  };

  /** Whether a LogQL query is a metric query (a function around a selector). */
  const isMetric = (q) => /^\s*[a-z_]+\s*\(/.test(q);

  function lineItem(e) {
    const labels = Object.entries(e.labels).sort(([a], [b]) => {
      const ia = FIRST.indexOf(a), ib = FIRST.indexOf(b);
      return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
    });
    const ms = Number(BigInt(e.ts) / 1000000n);
    return h("li", { class: e.labels.stream === "stderr" ? "stderr" : null },
      h("time", { datetime: new Date(ms).toISOString() }, V.fmtTime(ms, true)),
      h("span.line", e.line),
      h("span.labels", labels.filter(([k]) => k !== "container_id").map(([k, v]) => h("span.chip", k + "=" + v))));
  }

  /** Entries of a streams result, newest first. */
  function entries(result) {
    const out = [];
    for (const s of result || []) for (const [ts, line] of s.values || []) out.push({ ts, line, labels: s.stream });
    out.sort((a, b) => (BigInt(b.ts) > BigInt(a.ts) ? 1 : BigInt(b.ts) < BigInt(a.ts) ? -1 : 0));
    return out;
  }

  V.pages.logs = async function (el, params) {
    const p = Object.assign({ range: "1h", limit: "200" }, params);
    el.append(h("h1", "Logs"));
    const ta = h("textarea.expr#logql", { rows: 2, spellcheck: "false", "aria-label": "LogQL query", placeholder: '{container_name="web"} |= "error"' });
    ta.value = p.query || '{node=~".+"}';
    const range = h("select#range", RANGES.map((r) => h("option", { value: r, selected: r === p.range }, r)));
    const limit = h("select#limit", LIMITS.map((r) => h("option", { value: r, selected: r === p.limit }, r)));
    const live = h("input#live", { type: "checkbox", checked: p.live === "1" });
    const run = h("button", { type: "button" }, "Run");
    const labelSel = h("select#label-name", { "aria-label": "label name" }, h("option", { value: "" }, "label…"));
    const valueSel = h("select#label-value", { "aria-label": "label value", disabled: true }, h("option", { value: "" }, "value…"));
    const add = h("button.secondary", { type: "button", disabled: true }, "Add to query");
    const around = p.around ? +p.around : null;
    const aroundNote = around ? h("p.note", "Around " + V.fmtTime(around) + " (± 5 minutes). ", h("a", { href: "#/logs?" + new URLSearchParams({ query: ta.value }) }, "Latest instead")) : null;
    const hist = h("div.chart#histogram");
    const info = h("p.note#info");
    const out = h("div#lines");
    V.append(el, [
      ta,
      h("div.controls",
        h("label", "Range", range), h("label", "Lines", limit),
        h("label.inline", live, "Live (polls every 2 s)"), run,
        h("label", "Pick a label", labelSel), h("label", "Value", valueSel), add),
      aroundNote, hist, info, out]);

    const window_ = () => {
      if (around) return { start: (around - 300e3) * 1e6, end: (around + 300e3) * 1e6 };
      const end = Date.now();
      return { start: (end - V.parseDur(range.value) * 1000) * 1e6, end: end * 1e6 };
    };
    const ns = (x) => BigInt(Math.round(x)).toString();
    let newest = null, list = null, shown = 0, tailing = null;

    async function loadLabels() {
      const w = window_();
      const names = await V.api("/loki/api/v1/labels", { start: ns(w.start), end: ns(w.end) });
      V.clear(labelSel).append(h("option", { value: "" }, "label…"), ...names.map((n) => h("option", { value: n }, n)));
    }
    labelSel.addEventListener("change", async () => {
      V.clear(valueSel).append(h("option", { value: "" }, "value…"));
      valueSel.disabled = add.disabled = !labelSel.value;
      if (!labelSel.value) return;
      const w = window_();
      const sel = (/\{[^}]*\}/.exec(ta.value) || [""])[0];
      let values = await V.api("/loki/api/v1/label/" + encodeURIComponent(labelSel.value) + "/values",
        { start: ns(w.start), end: ns(w.end), query: sel || undefined }).catch(() => []);
      const more = values.length > 500;
      values = values.slice(0, 500);
      valueSel.append(...values.map((v) => h("option", { value: v }, v)));
      if (more) valueSel.append(h("option", { value: "", disabled: true }, "… first 500 shown"));
    });
    add.addEventListener("click", () => {
      if (!labelSel.value || !valueSel.value) return;
      ta.value = V.addMatcher(ta.value, labelSel.value, valueSel.value);
      go();
    });

    async function histogram(q, w) {
      const secs = (w.end - w.start) / 1e9;
      const step = V.autoStep(secs, 60);
      const d = await V.api("/loki/api/v1/query_range", {
        query: `sum(count_over_time(${q} [${V.fmtSeconds(step)}]))`, start: ns(w.start), end: ns(w.end), step,
      }, { post: true });
      const data = V.matrixToData(d.result || [], () => "lines per " + V.fmtSeconds(step));
      if (!data.ys.length) { V.clear(hist); return; }
      V.chart(hist, Object.assign({ bars: true, height: 140, legend: false, xRange: [w.start / 1e9, w.end / 1e9] }, data));
    }

    async function go() {
      stopTail();
      const q = ta.value.trim();
      V.setParams({ query: q, range: range.value, limit: limit.value, live: live.checked ? "1" : "", around: around || "" });
      V.clear(out); V.clear(hist); info.textContent = "";
      newest = null; shown = 0;
      const w = window_();
      const t0 = performance.now();
      try {
        if (isMetric(q)) {
          const step = V.autoStep((w.end - w.start) / 1e9);
          const d = await V.api("/loki/api/v1/query_range", { query: q, start: ns(w.start), end: ns(w.end), step }, { post: true });
          const g = h("div.chart#graph");
          out.append(g);
          const data = V.matrixToData(d.result || []);
          if (data.ys.length) V.chart(g, Object.assign({ height: 300, xRange: [w.start / 1e9, w.end / 1e9] }, data));
          else g.append(h("p.empty", "Empty result."));
          info.textContent = (d.result || []).length + " series · " + Math.round(performance.now() - t0) + " ms";
          return;
        }
        const [d] = await Promise.all([
          V.api("/loki/api/v1/query_range", { query: q, start: ns(w.start), end: ns(w.end), limit: limit.value, direction: "backward" }, { post: true }),
          histogram(q, w).catch(() => {}),
        ]);
        const es = entries(d.result);
        list = h("ol.loglines", { "aria-label": "log lines, newest first" });
        out.append(list);
        if (!es.length) out.append(h("p.empty", "No lines in this range."));
        for (const e of es) list.append(lineItem(e));
        shown = es.length;
        if (es.length) newest = es[0].ts;
        info.textContent = es.length + " lines, newest first" + (es.length >= +limit.value ? " (the limit: narrow the query or raise the limit)" : "") + " · " + Math.round(performance.now() - t0) + " ms";
        if (live.checked && !around) startTail(q);
      } catch (e) {
        if (e.name !== "AbortError") V.clear(out).append(V.errorBox(e, q));
      }
    }

    function startTail(q) {
      tailing = setInterval(async () => {
        try {
          const start = newest ? (BigInt(newest) + 1n).toString() : ns((Date.now() - 60e3) * 1e6);
          const d = await V.api("/loki/api/v1/query_range", { query: q, start, end: ns(Date.now() * 1e6), limit: 1000, direction: "forward" }, { post: true });
          const es = entries(d.result);
          if (!es.length) return;
          newest = es[0].ts;
          for (const e of es.reverse()) list.prepend(lineItem(e));
          shown += es.length;
          while (list.children.length > KEEP) list.lastChild.remove();
          info.textContent = "Live: " + shown + " lines (" + list.children.length + " kept), newest " + V.fmtTime(Number(BigInt(newest) / 1000000n), true);
        } catch (e) {
          if (e.name !== "AbortError") { stopTail(); out.prepend(V.errorBox(e, q)); }
        }
      }, TAIL_MS);
    }
    function stopTail() { if (tailing) { clearInterval(tailing); tailing = null; } }
    V.onLeave(stopTail);

    run.addEventListener("click", go);
    range.addEventListener("change", () => { go(); loadLabels().catch(() => {}); });
    limit.addEventListener("change", go);
    live.addEventListener("change", go);
    ta.addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); go(); } });
    await Promise.all([go(), loadLabels().catch((e) => el.append(V.errorBox(e)))]);
  };
})();
