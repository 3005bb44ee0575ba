// vigil web UI — start: routes the hash (#/page?params) to a page, marks the
// current link, and offers a few keys ("/" focuses the page's main input).
"use strict";
(function () {
  const V = window.V;
  const main = document.getElementById("main");
  const titles = { overview: "Overview", query: "Query", logs: "Logs", alerts: "Alerts and rules", actions: "Actions", status: "Status" };

  function show() {
    V.leave();
    const { page, params } = V.route();
    const p = V.pages[page] ? page : "overview";
    for (const a of document.querySelectorAll(".top nav a")) {
      if (a.dataset.page === p) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    document.title = titles[p] + " · vigil";
    V.clear(main);
    delete main.dataset.ready;
    main.dataset.page = p;
    const el = V.h("div.page");
    main.append(el);
    Promise.resolve()
      .then(() => V.pages[p](el, params))
      .catch((e) => { if (!(e && e.name === "AbortError")) el.append(V.errorBox(e)); })
      .finally(() => V.ready(main));
  }

  // Links change the hash; a page that rewrote its own parameters with
  // V.setParams does not re-render (replaceState fires no hashchange).
  window.addEventListener("hashchange", () => {
    show();
    main.focus({ preventScroll: true });
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "/" && !/^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName)) {
      const first = main.querySelector("textarea, input[type=search], input[type=text]");
      if (first) { e.preventDefault(); first.focus(); }
    }
  });
  show();
})();
