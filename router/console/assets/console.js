// hookrouter console: local times, self-refreshing pages, keyboard
// shortcuts and the events page's live mode. Values from events are only
// ever set with textContent, never as HTML.
"use strict";

const pad = (n) => String(n).padStart(2, "0");

// localTime shows an ISO time in the viewer's time zone.
function localTime(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return iso;
  const tz = new Intl.DateTimeFormat(undefined, { timeZoneName: "short" })
    .formatToParts(d).find((p) => p.type === "timeZoneName");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}` +
    (tz ? " " + tz.value : "");
}

function localTimes(root) {
  for (const t of root.querySelectorAll("time[datetime]")) {
    if (t.dataset.local) continue;
    t.title = t.textContent;
    t.textContent = localTime(t.getAttribute("datetime"));
    t.dataset.local = "1";
  }
}

// refresh reloads the page's main part every data-refresh seconds while the
// tab is visible and the user is not typing in it.
function refresh(seconds) {
  const main = document.getElementById("main");
  setInterval(async () => {
    if (document.hidden || main.contains(document.activeElement) && document.activeElement !== document.body) return;
    try {
      const res = await fetch(location.href, { headers: { "X-Console-Part": "1" }, credentials: "same-origin" });
      if (!res.ok || !(res.headers.get("Content-Type") || "").startsWith("text/html")) return;
      // The server rendered (and escaped) this HTML, as it did the page.
      main.innerHTML = await res.text();
      localTimes(main);
      document.body.dataset.refreshed = String(Date.now());
    } catch (e) { /* the router is restarting: try again next time */ }
  }, seconds * 1000);
}

function keys() {
  document.addEventListener("keydown", (e) => {
    const el = document.activeElement;
    const typing = el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT");
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && el && el.form) {
      e.preventDefault();
      el.form.requestSubmit();
      return;
    }
    if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "/") {
      const f = document.querySelector("[data-focus]");
      if (f) { e.preventDefault(); f.focus(); f.select && f.select(); }
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  keys();
  const r = Number(document.body.dataset.refresh);
  if (r > 0) refresh(r);
  if (window.hookrouterPage) window.hookrouterPage();
});
