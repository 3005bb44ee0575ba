// vigil web UI — core: API calls, DOM building, formatting, routing state.
// Everything lives under window.V. No framework; pages are functions that
// fill the <main> element.
"use strict";
(function () {
  const V = (window.V = { pages: {}, state: {} });

  // ---- API ---------------------------------------------------------------

  /** An API failure: HTTP status, Prometheus' errorType and message. */
  class ApiError extends Error {
    constructor(status, type, message) {
      super(message);
      this.status = status;
      this.type = type;
    }
  }
  V.ApiError = ApiError;

  // Requests of the page now shown; aborted when the page changes.
  let controllers = new Set();
  V.abortAll = function () {
    for (const c of controllers) c.abort();
    controllers = new Set();
  };

  /**
   * GET (or, for long parameters, a form POST where the API takes one) of a
   * JSON API on this origin; returns `data` of the envelope. URLs are built
   * from location.origin so a page opened as http://user:pass@host/ still
   * works (fetch refuses URLs that carry credentials; the browser sends the
   * remembered basic-auth credentials by itself).
   */
  V.api = async function (path, params, opts) {
    opts = opts || {};
    const url = new URL(path, location.origin);
    const body = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) {
      if (v === undefined || v === null || v === "") continue;
      for (const x of Array.isArray(v) ? v : [v]) body.append(k, String(x));
    }
    const ctl = new AbortController();
    if (opts.signal) opts.signal.addEventListener("abort", () => ctl.abort());
    controllers.add(ctl);
    let resp;
    try {
      const qs = body.toString();
      if (opts.post && qs.length > 1500) {
        resp = await fetch(url, { method: "POST", body, signal: ctl.signal, credentials: "same-origin" });
      } else {
        if (qs) url.search = qs;
        resp = await fetch(url, { signal: ctl.signal, credentials: "same-origin" });
      }
    } finally {
      controllers.delete(ctl);
    }
    let json = null;
    const text = await resp.text();
    try { json = JSON.parse(text); } catch (e) { /* not JSON: use the text */ }
    if (!resp.ok || (json && json.status === "error")) {
      let msg = (json && json.error) || text.trim() || resp.statusText;
      if (resp.status === 401) msg = "Not signed in: " + msg + ". Reload the page to sign in.";
      if (resp.status === 403) msg = "Not allowed with these credentials: " + msg;
      throw new ApiError(resp.status, (json && json.errorType) || "http_" + resp.status, msg);
    }
    return json && "data" in json ? json.data : json;
  };

  /** Instant PromQL query; returns the result list (vector) or []. */
  V.instant = async function (query, time) {
    const d = await V.api("/api/v1/query", { query, time }, { post: true });
    return d.result || [];
  };

  // ---- DOM ---------------------------------------------------------------

  /** h("tag.class#id", {attrs, on: {event: fn}}, ...children) */
  V.h = function (spec, attrs, ...kids) {
    const m = /^([a-z0-9]+)?((?:[.#][\w-]+)*)$/i.exec(spec) || [];
    const el = document.createElement(m[1] || "div");
    for (const part of (m[2] || "").match(/[.#][\w-]+/g) || []) {
      if (part[0] === ".") el.classList.add(part.slice(1));
      else el.id = part.slice(1);
    }
    if (attrs && (typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs))) {
      kids.unshift(attrs);
      attrs = null;
    }
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "on") for (const [e, f] of Object.entries(v)) el.addEventListener(e, f);
      else if (k === "style") for (const [p, x] of Object.entries(v)) el.style.setProperty(p, x);
      else if (k in el && typeof v !== "string") el[k] = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    V.append(el, kids);
    return el;
  };
  V.append = function (el, kids) {
    for (const k of kids.flat(Infinity)) {
      if (k === undefined || k === null || k === false) continue;
      el.append(k instanceof Node ? k : document.createTextNode(String(k)));
    }
    return el;
  };
  V.clear = function (el) {
    while (el.firstChild) el.removeChild(el.firstChild);
    return el;
  };
  V.table = function (headers, rows, opts) {
    opts = opts || {};
    const thead = V.h("thead", V.h("tr", headers.map((x) => {
      const label = typeof x === "string" ? x : x.label;
      return V.h("th", { scope: "col", class: x.num ? "num" : null }, label);
    })));
    const tbody = V.h("tbody", rows);
    const t = V.h("table", opts.caption ? V.h("caption.muted", opts.caption) : null, thead, tbody);
    return V.h("div.table-wrap", t);
  };
  V.td = (v, num) => V.h("td", { class: num ? "num" : null }, v);
  V.badge = (text, kind) => V.h("span.badge." + (kind || "plain"), text);
  V.errorBox = function (err, expr) {
    const box = V.h("div.error", { role: "alert" });
    const msg = err && err.message ? err.message : String(err);
    V.append(box, [(err && err.type ? err.type + ": " : "") + msg]);
    // the engines' positions: "line:col: parse error: …"
    const pos = /(?:^|: )(\d+):(\d+): /.exec(msg);
    if (expr && pos) {
      const line = +pos[1], col = +pos[2];
      const lines = expr.split("\n");
      const l = lines[line - 1];
      if (l !== undefined) {
        const i = Math.min(Math.max(col - 1, 0), l.length);
        const at = l.slice(i, i + 1) || " ";
        box.append(V.h("pre", { "aria-label": "position of the error" },
          l.slice(0, i), V.h("mark", at), l.slice(i + 1), "\n", " ".repeat(i) + "^ line " + line + ", column " + col));
      }
    }
    return box;
  };
  /** A bar of value/max; `neutral`: a share, not a level to worry about. */
  V.meter = function (value, max, label, neutral) {
    const frac = max > 0 ? Math.min(value / max, 1) : 0;
    const kind = neutral ? "" : frac >= 0.9 ? ".bad" : frac >= 0.75 ? ".warn" : "";
    const m = V.h("div.meter" + kind, { role: "meter", "aria-valuemin": "0", "aria-valuemax": String(max || 0), "aria-valuenow": String(value), "aria-label": label || "" },
      V.h("span", { style: { width: (frac * 100).toFixed(1) + "%" } }));
    return m;
  };
  V.section = (title, ...kids) => V.h("section.card", V.h("h2", title), ...kids);

  // ---- formatting --------------------------------------------------------

  const pad = (n, w) => String(n).padStart(w || 2, "0");
  /** Local time, YYYY-MM-DD HH:MM:SS. */
  V.fmtTime = function (ms, withMs) {
    if (!ms) return "—";
    const d = new Date(ms);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + (withMs ? "." + pad(d.getMilliseconds(), 3) : "");
  };
  V.fmtDur = function (ms) {
    if (ms === null || ms === undefined || isNaN(ms)) return "—";
    const neg = ms < 0; ms = Math.abs(ms);
    let out;
    if (ms < 1000) out = Math.round(ms) + "ms";
    else if (ms < 60e3) out = (ms / 1000).toFixed(ms < 10e3 ? 1 : 0) + "s";
    else if (ms < 3600e3) out = Math.floor(ms / 60e3) + "m" + (Math.floor(ms / 1000) % 60 ? (Math.floor(ms / 1000) % 60) + "s" : "");
    else if (ms < 86400e3) out = Math.floor(ms / 3600e3) + "h" + (Math.floor(ms / 60e3) % 60 ? (Math.floor(ms / 60e3) % 60) + "m" : "");
    else out = Math.floor(ms / 86400e3) + "d" + (Math.floor(ms / 3600e3) % 24 ? (Math.floor(ms / 3600e3) % 24) + "h" : "");
    return (neg ? "-" : "") + out;
  };
  V.ago = (ms, now) => (ms ? V.fmtDur((now || Date.now()) - ms) + " ago" : "never");
  V.fmtBytes = function (b) {
    if (b === null || b === undefined || isNaN(b)) return "—";
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0; b = +b;
    while (Math.abs(b) >= 1024 && i < u.length - 1) { b /= 1024; i++; }
    return (i ? b.toFixed(b < 10 ? 2 : 1) : String(Math.round(b))) + " " + u[i];
  };
  V.fmtNum = function (v) {
    v = +v;
    if (isNaN(v)) return "NaN";
    if (!isFinite(v)) return v > 0 ? "+Inf" : "-Inf";
    const a = Math.abs(v);
    if (a !== 0 && (a < 0.001 || a >= 1e15)) return v.toExponential(3);
    if (Number.isInteger(v)) return v.toLocaleString("en-US");
    return v.toLocaleString("en-US", { maximumSignificantDigits: 6 });
  };
  /** Prometheus duration ("5m", "1h30m", "90s") → seconds; NaN if invalid. */
  V.parseDur = function (s) {
    s = String(s || "").trim();
    if (/^\d+(\.\d+)?$/.test(s)) return +s;
    const re = /(\d+)(ms|y|w|d|h|m|s)/g, mult = { y: 31536000, w: 604800, d: 86400, h: 3600, m: 60, s: 1, ms: 0.001 };
    let total = 0, used = 0, m;
    while ((m = re.exec(s))) { total += +m[1] * mult[m[2]]; used += m[0].length; }
    return used === s.length && used > 0 ? total : NaN;
  };
  V.fmtSeconds = function (sec) {
    const units = [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]];
    let out = "";
    for (const [u, n] of units) { if (sec >= n) { out += Math.floor(sec / n) + u; sec %= n; } }
    return out || Math.round(sec * 1000) + "ms";
  };
  /** {a="b", …} as PromQL/LogQL selector text (without __name__). */
  V.selector = function (labels, skip) {
    const parts = [];
    for (const [k, v] of Object.entries(labels || {})) {
      if (k === "__name__" || (skip && skip.includes(k))) continue;
      parts.push(k + "=" + JSON.stringify(v));
    }
    return "{" + parts.join(", ") + "}";
  };
  V.seriesName = function (metric) {
    const name = metric.__name__ || "";
    const rest = V.selector(metric);
    return rest === "{}" ? name || "{}" : name + rest;
  };
  /** Escapes text for use inside an RE2 regular expression. */
  V.reEscape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

  // ---- identity of a container (the same rules as the dashboards) --------

  /**
   * How a container series names its container: Kubernetes sets
   * namespace/pod/container; Docker and Podman only `name`. Returns null
   * for series that are not a container (a pod's own cgroup, a pause
   * container, a system slice).
   */
  V.containerOf = function (m) {
    if (m.container && m.container !== "POD") {
      return { key: [m.node, m.namespace, m.pod, m.container].join("/"), title: (m.namespace || "") + "/" + (m.pod || "") + "/" + m.container, logs: { namespace: m.namespace, pod: m.pod, container: m.container }, node: m.node || "" };
    }
    if (!m.container && !m.pod && m.name) {
      return { key: [m.node, m.name].join("/"), title: m.name, logs: { container_name: m.name }, node: m.node || "" };
    }
    return null;
  };
  /** Logs page URL for a container's streams around `ms` (± 5 minutes). */
  V.logsLink = function (logLabels, ms) {
    const clean = {};
    for (const [k, v] of Object.entries(logLabels)) if (v) clean[k] = v;
    return "#/logs?" + new URLSearchParams({ query: V.selector(clean), around: String(Math.round(ms || Date.now())) });
  };

  // ---- routing -----------------------------------------------------------

  /** Current route: page name and its parameters from the hash. */
  V.route = function () {
    const h = location.hash.replace(/^#\/?/, "");
    const i = h.indexOf("?");
    const page = (i >= 0 ? h.slice(0, i) : h) || "overview";
    const params = Object.fromEntries(new URLSearchParams(i >= 0 ? h.slice(i + 1) : ""));
    return { page, params };
  };
  /** Rewrites the URL's parameters (a shareable link) without reloading. */
  V.setParams = function (params) {
    const { page } = V.route();
    const clean = {};
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") clean[k] = v;
    const qs = new URLSearchParams(clean).toString();
    history.replaceState(null, "", "#/" + page + (qs ? "?" + qs : ""));
  };
  // Timers and listeners of the page now shown; cleared when it changes.
  let cleanups = [];
  V.onLeave = (f) => cleanups.push(f);
  V.leave = function () {
    for (const f of cleanups) { try { f(); } catch (e) { console.warn(e); } }
    cleanups = [];
    V.abortAll();
  };
  V.every = function (ms, f) {
    const id = setInterval(f, ms);
    V.onLeave(() => clearInterval(id));
  };

  /** Marks the page's first load as done (tests and screenshots wait for it). */
  V.ready = function (el) {
    el.dataset.ready = "1";
  };
  /** Runs `f`; a failure becomes an error box in `el` instead of a throw. */
  V.guard = async function (el, f) {
    try {
      await f();
    } catch (e) {
      if (e && e.name === "AbortError") return;
      V.append(el, [V.errorBox(e)]);
    }
  };
})();
