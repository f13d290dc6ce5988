// A chunk's page: its frames, every attempt (host, times, status, error), its segment and the
// slowest of its frames.
"use strict";
(async () => {
  const RUN = FF.meta("framefarm-run"), INDEX = FF.meta("framefarm-chunk");
  const $ = (id) => document.getElementById(id);
  let c;
  try { c = await FF.get(`/api/runs/${encodeURIComponent(RUN)}/chunks/${INDEX}`); }
  catch (e) { FF.banner(e.status === 404 ? `Run ${RUN} has no chunk ${INDEX}.` : `Cannot read chunk ${INDEX}: ${e.message}`); return; }
  FF.banner("");
  $("frames").textContent = `frames ${c.frame_start}–${c.frame_stop - 1} (${c.frames})`;
  const s = c.segment;
  $("segment").innerHTML = [
    ["key", `<span class="mono">${FF.esc(s.key)}</span>`], ["stored", s.stored ? "yes" : "no"],
    ["size", FF.bytes(s.bytes)], ["recorded sha256", `<span class="mono">${FF.esc(s.recorded_sha256 || "–")}</span>`],
    ["stored sha256", `<span class="mono">${FF.esc(s.stored_sha256 || "–")}</span>`],
    ["check", s.matches === true ? "matches its record" : s.matches === false ? "<b>differs from its record</b>" : "–"],
  ].map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("");
  if (s.stored) $("picture").innerHTML = `<img class="preview" alt="first frame" src="${FF.esc(c.preview_url)}">`;
  $("attempts").innerHTML = c.attempts.length ? c.attempts.map((a) => `<div class="failure">
      <b>attempt ${a.attempt}</b> ${FF.pill(a.status)} <span class="muted">${FF.esc(a.host || "?")} · ${FF.esc(a.runner_id)}</span>
      <dl class="kv" style="margin-top:6px"><dt>frames done</dt><dd>${a.frames} of ${c.frames}</dd>
      <dt>submitted</dt><dd>${FF.when(a.submitted_at)}</dd><dt>started</dt><dd>${FF.when(a.started_at)}</dd>
      <dt>stopped</dt><dd>${FF.when(a.stopped_at)}</dd>${a.heartbeat_at ? `<dt>heartbeat</dt><dd>${FF.when(a.heartbeat_at)}</dd>` : ""}
      ${a.exit_code ? `<dt>exit code</dt><dd>${a.exit_code}</dd>` : ""}<dt>segment</dt><dd class="mono">${FF.esc(a.sha256 || "–")} ${a.bytes ? "(" + FF.bytes(a.bytes) + ")" : ""}</dd></dl>
      ${a.error ? `<pre>${FF.esc(a.error)}</pre>` : ""}</div>`).join("") : `<p class="muted">No attempt yet.</p>`;
  const slowest = c.slowest_frames || [];
  $("no-spans").hidden = slowest.length > 0;
  const top = slowest.length ? slowest[0].seconds : 1;
  document.querySelector("#slowest tbody").innerHTML = slowest.map((f) => `<tr><td>${f.frame}</td><td>${f.attempt}</td>
    <td>${FF.seconds(f.seconds)}</td><td>${FF.seconds(f.render_seconds)}</td><td>${FF.seconds(f.encode_seconds)}</td>
    <td style="width:40%"><div class="bar"><span class="r" style="width:${(100 * f.seconds / top).toFixed(1)}%;background:var(--run)"></span></div></td></tr>`).join("");
})();
