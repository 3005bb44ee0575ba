// vigil web UI — charts: a thin layer over uPlot (vendored) for time series
// from the Prometheus and Loki APIs: aligned x values, stacking, bars,
// resizing with the container, readable colours.
"use strict";
(function () {
  const V = window.V;
  // Colours with at least 3:1 contrast against white (WCAG for graphics).
  const PALETTE = ["#0b57d0", "#c5221f", "#188038", "#a142f4", "#e37400", "#007b83", "#b80672", "#5f6368",
    "#1967d2", "#d93025", "#137333", "#8430ce", "#b06000", "#12737a", "#9c166b", "#3c4043"];
  V.color = (i) => PALETTE[i % PALETTE.length];

  /** Most series drawn in one chart; the rest are counted, not drawn. */
  V.MAX_SERIES = 200;

  /**
   * A Prometheus matrix ([{metric, values: [[t, "v"], …]}]) as uPlot data:
   * x = the sorted union of timestamps (seconds), one y array per series
   * with null where the series has no point.
   */
  V.matrixToData = function (matrix, name) {
    const xs = new Set();
    for (const s of matrix) for (const [t] of s.values || []) xs.add(+t);
    const x = Array.from(xs).sort((a, b) => a - b);
    const index = new Map(x.map((t, i) => [t, i]));
    const ys = matrix.map((s) => {
      const y = new Array(x.length).fill(null);
      for (const [t, v] of s.values || []) {
        const f = parseFloat(v);
        y[index.get(+t)] = isFinite(f) ? f : null;
      }
      return y;
    });
    return { x, ys, labels: matrix.map((s) => (name ? name(s.metric) : V.seriesName(s.metric))) };
  };

  /**
   * Draws series into `el` (emptied first). opts: {x, ys, labels, stacked,
   * bars, height, yFmt, colors, title, xRange: [start, end] seconds}. Returns the uPlot instance, also
   * kept as el.__uplot (tests read what was drawn from it).
   */
  V.chart = function (el, opts) {
    V.clear(el);
    if (el.__ro) { el.__ro.disconnect(); el.__ro = null; }
    if (el.__uplot) { el.__uplot.destroy(); el.__uplot = null; }
    const n = Math.min(opts.ys.length, V.MAX_SERIES);
    const raw = opts.ys.slice(0, n);
    let ys = raw;
    const yFmt = opts.yFmt || V.fmtNum;
    if (opts.stacked) {
      // cumulative sums; the legend shows each series' own value
      const acc = new Array(opts.x.length).fill(0);
      ys = raw.map((y) => y.map((v, i) => (v === null ? null : (acc[i] += v))));
    }
    const width = Math.max(el.clientWidth || 600, 280);
    const series = [{ label: "time", value: (u, v) => (v === null ? "—" : V.fmtTime(v * 1000)) }];
    const colors = opts.colors || [];
    for (let i = 0; i < n; i++) {
      const c = colors[i] || V.color(i);
      series.push({
        label: opts.labels[i],
        stroke: c,
        width: opts.bars ? 0 : 1.5,
        fill: opts.bars || opts.stacked ? c + (opts.bars ? "cc" : "55") : undefined,
        paths: opts.bars ? uPlot.paths.bars({ size: [0.8, 40] }) : undefined,
        points: { show: !opts.bars && opts.x.length < 40 },
        spanGaps: false,
        value: (u, v, si, di) => {
          const own = di === null || di === undefined ? null : raw[si - 1][di];
          return own === null || own === undefined ? "—" : yFmt(own);
        },
      });
    }
    const bands = [];
    if (opts.stacked) for (let i = n; i > 1; i--) bands.push({ series: [i, i - 1] });
    const u = new uPlot({
      width,
      height: opts.height || 260,
      title: opts.title,
      series,
      bands,
      scales: { x: opts.xRange ? { time: true, range: () => opts.xRange } : { time: true } },
      axes: [
        { stroke: "#4d5661", grid: { stroke: "#e6e9ed" } },
        { stroke: "#4d5661", grid: { stroke: "#e6e9ed" }, size: 70, values: (u, vals) => vals.map((v) => yFmt(v)) },
      ],
      legend: { show: opts.legend !== false, live: true },
      cursor: { drag: { x: true, y: false } },
    }, [opts.x, ...ys], el);
    el.__uplot = u;
    // time to the first chart drawn since navigation (docs/ui.md quotes it)
    if (V.state.firstChartMs === undefined) V.state.firstChartMs = performance.now();
    el.__raw = { x: opts.x, ys: raw, labels: opts.labels.slice(0, n) };
    if (opts.ys.length > n) {
      el.append(V.h("p.legend-note", "Showing " + n + " of " + opts.ys.length + " series; narrow the query to see the rest."));
    }
    if (window.ResizeObserver) {
      let last = width;
      // resized on the next frame, not inside the observer's callback (a
      // resize there would trigger the observer again within the same frame)
      const ro = new ResizeObserver(() => requestAnimationFrame(() => {
        const w = Math.max(el.clientWidth, 280);
        if (Math.abs(w - last) > 4 && el.__uplot === u) { last = w; u.setSize({ width: w, height: opts.height || 260 }); }
      }));
      ro.observe(el);
      el.__ro = ro;
      V.onLeave(() => ro.disconnect());
    }
    return u;
  };

  /** A chart of a range query: fetches, draws, returns the matrix. */
  V.rangeChart = async function (el, query, start, end, step, opts) {
    const d = await V.api("/api/v1/query_range", { query, start, end, step }, { post: true });
    const data = V.matrixToData(d.result || [], opts && opts.name);
    if (!data.ys.length) {
      V.clear(el).append(V.h("p.empty", (opts && opts.empty) || "No data for " + query));
      return d.result || [];
    }
    V.chart(el, Object.assign({ xRange: [+start, +end] }, opts || {}, data));
    return d.result;
  };

  /** A step that gives about `points` points over `seconds` (≥ 1 s, round). */
  V.autoStep = function (seconds, points) {
    const raw = seconds / (points || 250);
    const nice = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400];
    for (const s of nice) if (s >= raw) return s;
    return Math.ceil(raw / 86400) * 86400;
  };
})();
