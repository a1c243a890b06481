// weir console: the little script the pages need. Pages work without it;
// it adds live updates and confirmations.
"use strict";

// <main data-live="N">: re-fetch the page every N seconds while the tab is
// visible and swap in the new <main>, keeping which <details> are open.
// A page that is no longer live (a finished run) stops refreshing.
(function live() {
  const main = document.querySelector("main[data-live]");
  if (!main) return;
  const every = (Number(main.dataset.live) || 3) * 1000;
  async function tick() {
    if (!document.hidden) {
      try {
        const r = await fetch(location.href, { credentials: "same-origin" });
        if (r.redirected || r.status === 401) { location.reload(); return; }
        if (r.ok) {
          const doc = new DOMParser().parseFromString(await r.text(), "text/html");
          const next = doc.querySelector("main");
          if (next) {
            const open = new Set([...main.querySelectorAll("details[id]")].filter(d => d.open).map(d => d.id));
            const closed = new Set([...main.querySelectorAll("details[id]")].filter(d => !d.open).map(d => d.id));
            main.replaceChildren(...document.adoptNode(next).childNodes);
            for (const d of main.querySelectorAll("details[id]")) {
              if (open.has(d.id)) d.open = true;
              if (closed.has(d.id)) d.open = false;
            }
            document.dispatchEvent(new CustomEvent("weir:updated"));
            if (!next.hasAttribute("data-live")) { main.removeAttribute("data-live"); return; }
          }
        }
      } catch (_) { /* the daemon is restarting: try again later */ }
    }
    setTimeout(tick, every);
  }
  setTimeout(tick, every);
})();

// <form data-confirm="question">: ask before posting.
document.addEventListener("submit", (e) => {
  const q = e.target.dataset && e.target.dataset.confirm;
  if (q && !window.confirm(q)) e.preventDefault();
});

// A click on a node of a run's graph (or Enter on it) opens that node's
// details.
function openNode(e) {
  const node = e.target.closest && e.target.closest("svg .node[data-node]");
  if (!node) return;
  const d = document.querySelector(`details.node-detail[data-node="${CSS.escape(node.dataset.node)}"]`);
  if (!d) return;
  e.preventDefault();
  d.open = true;
  d.scrollIntoView({ behavior: "smooth", block: "start" });
  d.querySelector("summary").focus({ preventScroll: true });
}
document.addEventListener("click", openNode);
document.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") openNode(e); });
