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
  // An option cannot hold a <time>: the tester's recent events carry theirs
  // in data-at, and the rest of their label in data-label.
  for (const o of root.querySelectorAll("option[data-at]")) {
    if (o.dataset.local) continue;
    o.textContent = localTime(o.dataset.at) + " · " + o.dataset.label;
    o.dataset.local = "1";
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

// Rows with data-href open their page on click (the id cell is a real link,
// for the keyboard and for opening in a new tab).
function rowLinks() {
  document.addEventListener("click", (e) => {
    const tr = e.target.closest("tr[data-href]");
    if (!tr || e.target.closest("a, button, input, label")) return;
    location.href = tr.dataset.href;
  });
}

// Filter forms leave out empty fields, so their URLs are short enough to
// share.
function shortFilters() {
  for (const f of document.querySelectorAll("form.filters")) {
    f.addEventListener("submit", () => {
      for (const i of f.querySelectorAll("input, select")) if (!i.value) i.disabled = true;
    });
    // Coming back to the page (the back button) finds them enabled again.
    window.addEventListener("pageshow", () => {
      for (const i of f.querySelectorAll("input, select")) i.disabled = false;
    });
  }
}

// pickAll selects every dead letter not yet replayed.
function pickAll() {
  const all = document.getElementById("pick-all");
  if (!all) return;
  all.addEventListener("change", () => {
    for (const tr of document.querySelectorAll("#dead tbody tr[data-id]")) {
      const box = tr.querySelector("input[name=pick]");
      if (box && !tr.querySelector(".replayed .badge")) box.checked = all.checked;
    }
  });
}

const verdictClass = { accepted: "ok", duplicate: "warn", rejected: "bad" };
const stateClass = { delivered: "ok", queued: "warn", retrying: "warn", replayed: "shadow", dead_letter: "bad" };

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function chip(sink, state) {
  const c = el("span", "badge " + (stateClass[state] || "bad"), sink + ": " + state);
  c.dataset.sink = sink;
  return c;
}

// eventRow builds a table row for a journal event, with textContent only.
function eventRow(ev) {
  const tr = el("tr", "link fresh");
  tr.dataset.href = "/events/" + encodeURIComponent(ev.id);
  tr.dataset.id = ev.id;
  const t = el("time", "", localTime(ev.received_at));
  t.setAttribute("datetime", ev.received_at);
  t.dataset.local = "1";
  const td0 = el("td"); td0.append(t); tr.append(td0);
  const a = el("a", "mono", ev.id.length > 12 ? "…" + ev.id.slice(-12) : ev.id);
  a.href = tr.dataset.href; a.title = ev.id;
  const td1 = el("td"); td1.append(a); tr.append(td1);
  tr.append(el("td", "", ev.source), el("td", "", ev.event));
  const td4 = el("td"); td4.append(el("span", "badge " + (verdictClass[ev.verdict] || "bad"), ev.verdict));
  if (ev.reason) { const r = el("small", "muted reason", ev.reason); r.title = ev.reason; td4.append(" ", r); }
  tr.append(td4);
  const td5 = el("td", "chips");
  const sinks = ev.sinks || [];
  if (sinks.length === 0) td5.append(el("span", "muted", "unrouted"));
  for (const s of sinks) {
    const d = (ev.deliveries || []).find((x) => x.sink === s);
    td5.append(chip(s, d ? d.state : "queued"), " ");
  }
  tr.append(td5);
  const td6 = el("td", "key"); td6.append(el("code", "", ev.dedup_key || "")); tr.append(td6);
  return tr;
}

// live follows /-/events/stream with the page's filters: new events are
// added on top, delivery steps update their row's chips.
function live() {
  const btn = document.getElementById("live");
  if (!btn) return;
  let src = null;
  const tbody = document.querySelector("#events tbody");
  const toggle = () => {
    if (src) {
      src.close(); src = null; btn.dataset.open = "0";
      btn.setAttribute("aria-pressed", "false"); btn.classList.remove("live-on");
      return;
    }
    src = new EventSource("/-/events/stream?" + btn.dataset.live);
    src.onopen = () => { btn.dataset.open = "1"; };
    src.onerror = () => { btn.dataset.open = "0"; };
    btn.setAttribute("aria-pressed", "true"); btn.classList.add("live-on");
    const onRecord = (m) => {
      let rec;
      try { rec = JSON.parse(m.data); } catch (e) { return; }
      if (rec.kind === "event" && rec.event) {
        if (tbody.querySelector(`tr[data-id="${CSS.escape(rec.event.id)}"]`)) return;
        const empty = tbody.querySelector("tr.empty");
        if (empty) empty.remove();
        tbody.prepend(eventRow(rec.event));
        while (tbody.rows.length > 500) tbody.deleteRow(-1);
      } else if (rec.kind === "step" && rec.step) {
        const tr = tbody.querySelector(`tr[data-id="${CSS.escape(rec.step.event_id)}"]`);
        if (!tr) return;
        const cell = tr.querySelector("td.chips");
        const old = cell.querySelector(`[data-sink="${CSS.escape(rec.step.sink)}"]`);
        const c = chip(rec.step.sink, rec.step.state);
        if (old) old.replaceWith(c); else cell.append(c, " ");
      }
    };
    src.onmessage = onRecord;
    src.addEventListener("event", onRecord);
    src.addEventListener("step", onRecord);
  };
  btn.addEventListener("click", toggle);
  document.addEventListener("keydown", (e) => {
    const t = document.activeElement;
    if (e.key === "l" && !e.ctrlKey && !e.metaKey && !e.altKey && !(t && /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) toggle();
  });
  if (new URLSearchParams(location.search).get("live") === "1") toggle();
}

document.addEventListener("DOMContentLoaded", () => {
  rowLinks();
  shortFilters();
  pickAll();
  live();
  localTimes(document);
  keys();
  const r = Number(document.body.dataset.refresh);
  if (r > 0) refresh(r);
});
