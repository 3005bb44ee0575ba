// vigil web UI — Query: a PromQL editor with completion of metric names,
// label names and values (bounded requests: `match[]` narrows, `limit`
// caps), a graph (stacked or not) and a table, time range and step, and a
// URL that reproduces the view. Engine errors are shown at their position.
"use strict";
(function () {
  const V = window.V;
  const h = V.h;
  const RANGES = ["5m", "15m", "30m", "1h", "3h", "6h", "12h", "1d", "2d", "7d"];
  /** Most completions asked of the server per request. */
  const SUGGEST_LIMIT = 50;
  const FUNCTIONS = ["abs", "absent", "absent_over_time", "avg", "avg_over_time", "bottomk", "ceil", "changes", "clamp", "clamp_max", "clamp_min",
    "count", "count_over_time", "count_values", "day_of_month", "day_of_week", "delta", "deriv", "exp", "floor", "group", "histogram_quantile",
    "holt_winters", "hour", "idelta", "increase", "irate", "label_join", "label_replace", "last_over_time", "ln", "log2", "log10", "max",
    "max_over_time", "min", "min_over_time", "minute", "month", "predict_linear", "present_over_time", "quantile", "quantile_over_time",
    "rate", "resets", "round", "scalar", "sgn", "sort", "sort_desc", "sqrt", "stddev", "stddev_over_time", "stdvar", "stdvar_over_time",
    "sum", "sum_over_time", "time", "timestamp", "topk", "vector", "year"];
  const KEYWORDS = ["by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless"];

  /**
   * What the cursor is completing in `text` at `pos`:
   * {kind: "metric"|"label"|"value", prefix, metric, label, from} where
   * `from` is where the replaced word starts.
   */
  V.completionContext = function (text, pos) {
    const before = text.slice(0, pos);
    // inside a quoted label value?
    const val = /([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)$/.exec(before);
    const open = before.lastIndexOf("{"), close = before.lastIndexOf("}");
    const metricBefore = (i) => (/([a-zA-Z_:][a-zA-Z0-9_:]*)\s*$/.exec(before.slice(0, i)) || [])[1] || "";
    if (open > close) {
      const metric = metricBefore(open);
      if (val) return { kind: "value", label: val[1], prefix: val[3], metric, from: pos - val[3].length };
      const w = /([a-zA-Z_][a-zA-Z0-9_]*)?$/.exec(before)[0];
      if (/[{,]\s*[a-zA-Z0-9_]*$/.test(before)) return { kind: "label", prefix: w, metric, from: pos - w.length };
      return null;
    }
    const grouping = /\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)$/.exec(before);
    if (grouping) {
      const w = /([a-zA-Z_][a-zA-Z0-9_]*)?$/.exec(before)[0];
      return { kind: "label", prefix: w, metric: "", from: pos - w.length };
    }
    const w = /([a-zA-Z_:][a-zA-Z0-9_:]*)?$/.exec(before)[0];
    if (!w) return null;
    return { kind: "metric", prefix: w, from: pos - w.length };
  };

  /** The completions for a context: a bounded request to the series APIs. */
  async function suggestions(ctx, signal) {
    const fold = "(?i)";
    if (ctx.kind === "metric") {
      const names = await V.api("/api/v1/label/__name__/values", {
        "match[]": `{__name__=~"${fold}.*${V.reEscape(ctx.prefix)}.*"}`, limit: SUGGEST_LIMIT,
      }, { signal });
      const low = ctx.prefix.toLowerCase();
      const fns = FUNCTIONS.concat(KEYWORDS).filter((f) => f.startsWith(low)).map((f) => ({ text: f, hint: FUNCTIONS.includes(f) ? "function" : "keyword" }));
      const ms = names.map((n) => ({ text: n, hint: "metric" }));
      ms.sort((a, b) => (b.text.startsWith(ctx.prefix) - a.text.startsWith(ctx.prefix)) || a.text.localeCompare(b.text));
      return { items: fns.concat(ms), more: names.length >= SUGGEST_LIMIT };
    }
    if (ctx.kind === "label") {
      const names = await V.api("/api/v1/labels", {
        "match[]": ctx.metric ? ctx.metric : undefined, limit: 200,
      }, { signal });
      const low = ctx.prefix.toLowerCase();
      return { items: names.filter((n) => n !== "__name__" && n.toLowerCase().includes(low)).map((n) => ({ text: n, hint: "label" })), more: names.length >= 200 };
    }
    const sel = `{${ctx.metric ? `__name__=${JSON.stringify(ctx.metric)}, ` : ""}${ctx.label}=~"${fold}${V.reEscape(ctx.prefix)}.*"}`;
    const values = await V.api("/api/v1/label/" + encodeURIComponent(ctx.label) + "/values", { "match[]": sel, limit: SUGGEST_LIMIT }, { signal });
    return { items: values.map((v) => ({ text: v.replace(/\\/g, "\\\\").replace(/"/g, '\\"'), hint: "value" })), more: values.length >= SUGGEST_LIMIT };
  }

  /**
   * Completion on a textarea: a listbox under it, ↑/↓ to move, Enter or
   * Tab to take, Escape to close. `onRun` is called on Ctrl/Shift+Enter
   * (and on Enter when nothing is offered).
   */
  V.completer = function (ta, onRun) {
    const list = h("ul.suggest", { role: "listbox", id: ta.id + "-suggest", hidden: true });
    ta.setAttribute("role", "combobox");
    ta.setAttribute("aria-autocomplete", "list");
    ta.setAttribute("aria-controls", list.id);
    ta.setAttribute("aria-expanded", "false");
    let items = [], sel = -1, ctx = null, timer = null, ctl = null;
    const close = () => {
      list.hidden = true; items = []; sel = -1;
      ta.setAttribute("aria-expanded", "false");
      ta.removeAttribute("aria-activedescendant");
    };
    const mark = () => {
      [...list.children].forEach((li, i) => li.setAttribute("aria-selected", String(i === sel)));
      if (sel >= 0) {
        ta.setAttribute("aria-activedescendant", list.id + "-" + sel);
        list.children[sel].scrollIntoView({ block: "nearest" });
      }
    };
    const take = (i) => {
      const it = items[i];
      if (!it || !ctx) return;
      const pos = ta.selectionStart;
      ta.value = ta.value.slice(0, ctx.from) + it.text + ta.value.slice(pos);
      const at = ctx.from + it.text.length;
      ta.setSelectionRange(at, at);
      close();
      ta.focus();
    };
    const update = async () => {
      if (ctl) ctl.abort();
      ctx = V.completionContext(ta.value, ta.selectionStart);
      if (!ctx || (ctx.kind === "metric" && ctx.prefix.length < 1)) return close();
      ctl = new AbortController();
      try {
        const r = await suggestions(ctx, ctl.signal);
        items = r.items.slice(0, 100);
        if (!items.length) return close();
        V.clear(list);
        items.forEach((it, i) => list.append(h("li", {
          id: list.id + "-" + i, role: "option", "aria-selected": "false",
          on: { mousedown: (e) => { e.preventDefault(); take(i); } },
        }, h("span", it.text), h("small", it.hint))));
        if (r.more) list.append(h("li", { role: "presentation", "aria-disabled": "true" }, h("small", "more: type to narrow")));
        sel = 0; mark();
        list.hidden = false;
        ta.setAttribute("aria-expanded", "true");
      } catch (e) {
        if (e.name !== "AbortError") close();
      }
    };
    ta.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(update, 150); });
    ta.addEventListener("blur", () => setTimeout(close, 100));
    ta.addEventListener("keydown", (e) => {
      const open = !list.hidden && items.length;
      if (e.key === "Enter" && (e.ctrlKey || e.shiftKey || e.metaKey || !open)) {
        e.preventDefault(); close(); onRun(); return;
      }
      if (!open) return;
      if (e.key === "ArrowDown") { e.preventDefault(); sel = (sel + 1) % items.length; mark(); }
      else if (e.key === "ArrowUp") { e.preventDefault(); sel = (sel - 1 + items.length) % items.length; mark(); }
      else if (e.key === "Enter" || e.key === "Tab") { e.preventDefault(); take(sel); }
      else if (e.key === "Escape") { e.preventDefault(); close(); }
    });
    V.onLeave(() => { if (ctl) ctl.abort(); clearTimeout(timer); });
    return list;
  };

  function resultTable(d) {
    if (d.resultType === "scalar" || d.resultType === "string") {
      return V.table(["Value", "Time"], [h("tr", V.td(d.result[1], true), V.td(V.fmtTime(d.result[0] * 1000)))]);
    }
    const rows = (d.result || []).slice(0, 1000).map((r) => h("tr",
      h("td.mono", V.seriesName(r.metric)),
      r.value ? V.td(r.value[1], true) : h("td.mono", (r.values || []).map((p) => p[1] + " @" + p[0]).join("\n")),
    ));
    if (!rows.length) return h("p.empty", "Empty result.");
    const t = V.table(["Series", { label: "Value", num: true }], rows);
    if (d.result.length > 1000) t.append(h("p.legend-note", "First 1,000 of " + d.result.length + " series."));
    return t;
  }

  V.pages.query = async function (el, params) {
    const p = Object.assign({ range: "1h", view: "graph" }, params);
    el.append(h("h1", "Query"));
    const ta = h("textarea.expr#expr", { rows: 2, spellcheck: "false", "aria-label": "PromQL expression", placeholder: "e.g. sum by (name) (rate(container_cpu_usage_seconds_total[1m]))" });
    ta.value = p.expr || "";
    const range = h("select#range", RANGES.map((r) => h("option", { value: r, selected: r === p.range }, r)));
    if (!RANGES.includes(p.range)) range.append(h("option", { value: p.range, selected: true }, p.range));
    const endIn = h("input#end", { type: "datetime-local", step: "1" });
    if (p.end) {
      const d = new Date(+p.end);
      endIn.value = new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 19);
    }
    const stepIn = h("input#step", { type: "text", size: 6, placeholder: "auto", value: p.step || "" });
    const stacked = h("input#stacked", { type: "checkbox", checked: p.stacked === "1" });
    const run = h("button", { type: "button" }, "Run");
    const tabGraph = h("button", { type: "button", role: "tab", "aria-selected": String(p.view !== "table") }, "Graph");
    const tabTable = h("button", { type: "button", role: "tab", "aria-selected": String(p.view === "table") }, "Table");
    const out = h("div#result", { role: "tabpanel" });
    const info = h("p.note#info");
    const editor = h("div.editor", ta);
    editor.append(V.completer(ta, () => go()));
    el.append(
      editor,
      h("div.controls",
        h("label", "Range", range),
        h("label", "End (empty: now)", endIn),
        h("label", "Step (s or 1m)", stepIn),
        h("label.inline", stacked, "Stacked"),
        run),
      h("div.tabs", { role: "tablist" }, tabGraph, tabTable),
      info, out);
    let view = p.view === "table" ? "table" : "graph";
    let lastMatrix = null;

    const endMs = () => (endIn.value ? new Date(endIn.value).getTime() : null);
    function current() {
      return { expr: ta.value.trim(), range: range.value, end: endMs() || "", step: stepIn.value.trim(), view, stacked: stacked.checked ? "1" : "" };
    }
    async function go() {
      const q = current();
      V.setParams(q);
      V.clear(out); info.textContent = "";
      if (!q.expr) { out.append(h("p.empty", "Type an expression; Ctrl+Enter runs it. Completion offers metric names, labels and values as you type.")); return; }
      const end = (endMs() || Date.now()) / 1000;
      const t0 = performance.now();
      try {
        if (view === "table") {
          const d = await V.api("/api/v1/query", { query: q.expr, time: end.toFixed(3) }, { post: true });
          out.append(resultTable(d));
          info.textContent = (d.result ? (Array.isArray(d.result) && d.resultType !== "scalar" && d.resultType !== "string" ? d.result.length + " series" : "1 value") : "") + " at " + V.fmtTime(end * 1000) + " · " + Math.round(performance.now() - t0) + " ms";
        } else {
          const secs = V.parseDur(q.range);
          if (!(secs > 0)) throw new Error("range " + JSON.stringify(q.range) + " is not a duration");
          const step = q.step ? V.parseDur(q.step) : V.autoStep(secs);
          if (!(step > 0)) throw new Error("step " + JSON.stringify(q.step) + " is not a duration");
          const start = end - secs;
          const graph = h("div.chart#graph", { "data-start": start.toFixed(3), "data-end": end.toFixed(3), "data-step": String(step) });
          out.append(graph);
          const d = await V.api("/api/v1/query_range", { query: q.expr, start: start.toFixed(3), end: end.toFixed(3), step }, { post: true });
          lastMatrix = d.result || [];
          draw(graph);
          const points = lastMatrix.reduce((n, s) => n + (s.values || []).length, 0);
          info.textContent = lastMatrix.length + " series, " + points + " points, step " + V.fmtSeconds(step) + " · " + Math.round(performance.now() - t0) + " ms";
        }
      } catch (e) {
        if (e.name === "AbortError") return;
        V.clear(out).append(V.errorBox(e, q.expr));
      }
    }
    function draw(graph) {
      if (!lastMatrix.length) { V.clear(graph).append(h("p.empty", "Empty result.")); return; }
      if (lastMatrix[0] && !lastMatrix[0].values) { V.clear(graph).append(h("p.empty", "Not a range vector.")); return; }
      V.chart(graph, Object.assign({ stacked: stacked.checked, height: 320, xRange: [+graph.dataset.start, +graph.dataset.end] }, V.matrixToData(lastMatrix)));
    }
    const pick = (v) => () => {
      view = v;
      tabGraph.setAttribute("aria-selected", String(v === "graph"));
      tabTable.setAttribute("aria-selected", String(v === "table"));
      go();
    };
    tabGraph.addEventListener("click", pick("graph"));
    tabTable.addEventListener("click", pick("table"));
    run.addEventListener("click", go);
    range.addEventListener("change", go);
    endIn.addEventListener("change", go);
    stepIn.addEventListener("change", go);
    stacked.addEventListener("change", () => {
      V.setParams(current());
      const g = out.querySelector("#graph");
      if (g && lastMatrix) draw(g);
    });
    await go();
  };
})();
