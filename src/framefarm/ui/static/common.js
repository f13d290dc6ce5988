// framefarm ui: helpers every page shares. No framework, no build step, nothing from the network.
"use strict";
const FF = (() => {
  const meta = (name) => (document.querySelector(`meta[name="${name}"]`) || {}).content || "";
  const token = meta("framefarm-token");
  const esc = (v) => String(v == null ? "" : v).replace(/[&<>"']/g, (c) =>
    ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
  const banner = (text) => { const b = document.getElementById("banner"); if (b) b.textContent = text || ""; };
  async function get(url) {
    const response = await fetch(url, {headers: {"Accept": "application/json"}});
    let body = null;
    try { body = await response.json(); } catch (e) { body = {error: `HTTP ${response.status}`}; }
    if (!response.ok) { const err = new Error(body.error || `HTTP ${response.status}`); err.status = response.status; throw err; }
    return body;
  }
  async function post(url) {
    // State changes: POST only, with the token the server printed (embedded in this page).
    const response = await fetch(url, {method: "POST", headers: {"X-Framefarm-Token": token}});
    let body = {};
    try { body = await response.json(); } catch (e) { body = {}; }
    return {ok: response.ok, status: response.status, message: body.message || body.error || `HTTP ${response.status}`, body};
  }
  const seconds = (s) => {
    if (s == null || isNaN(s)) return "–";
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    if (s < 60) return `${s.toFixed(1)} s`;
    const m = Math.floor(s / 60), r = Math.round(s % 60);
    if (m < 60) return `${m}m ${String(r).padStart(2, "0")}s`;
    return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
  };
  const bytes = (n) => {
    if (n == null) return "–";
    const units = ["B", "KB", "MB", "GB", "TB"]; let v = n, u = 0;
    while (v >= 1000 && u < units.length - 1) { v /= 1000; u++; }
    return u ? `${v.toFixed(1)} ${units[u]}` : `${v} B`;
  };
  const when = (iso) => {
    if (!iso) return "–";
    const d = new Date(iso); if (isNaN(d)) return esc(iso);
    return d.toLocaleString([], {year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit"});
  };
  const pill = (status) => `<span class="pill ${esc(status)}">${esc(status)}</span>`;
  const STATES = [["SUCCEEDED", "s"], ["RUNNING", "r"], ["QUEUED", "q"], ["FAILED", "f"], ["CANCELLED", "c"], ["WAITING", "w"]];
  const stack = (counts, total) => {
    if (!total) return `<div class="stack"></div>`;
    return `<div class="stack" title="${esc(STATES.map(([n]) => `${n.toLowerCase()} ${counts[n] || 0}`).join(", "))}">` +
      STATES.map(([n, k]) => counts[n] ? `<span class="${k}" style="width:${(100 * counts[n] / total).toFixed(3)}%"></span>` : "").join("") + `</div>`;
  };
  const countsText = (counts) => STATES.filter(([n]) => counts[n]).map(([n, k]) =>
    `<span><i class="${k}"></i>${counts[n]} ${n.toLowerCase()}</span>`).join("");
  const bar = (done, total, big) => {
    const pct = total ? Math.min(100, 100 * done / total) : 0;
    return `<div class="bar${big ? " big" : ""}" title="${done} of ${total || "?"} frames"><span style="width:${pct.toFixed(2)}%"></span></div>`;
  };
  return {token, esc, banner, get, post, seconds, bytes, when, pill, stack, countsText, bar, meta};
})();
