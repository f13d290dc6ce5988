// A run's page: its plan, progress, chunk grid, preview or video, failures, waterfall and jobs;
// kept up to date by the run's event stream (/api/runs/RUN/events).
"use strict";
(() => {
  const RUN = FF.meta("framefarm-run");
  const api = `/api/runs/${encodeURIComponent(RUN)}`;
  const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);
  const JOBS_LIMIT = 100;
  let current = null, cells = [], gridKey = "", videoShown = "", traceKey = "", jobsOffset = 0, jobsKey = "";

  const $ = (id) => document.getElementById(id);
  const note = (text) => { $("note").textContent = text || ""; };

  function kv(pairs) {
    return pairs.filter(([, v]) => v !== undefined).map(([k, v]) => `<dt>${FF.esc(k)}</dt><dd>${v}</dd>`).join("");
  }

  function renderPlan(r) {
    const p = r.plan || {};
    const links = (r.links || []).map((l) => l.url
      ? `<a href="${FF.esc(l.url)}" target="_blank" rel="noopener">${FF.esc(l.label)}</a> <span class="mono">${FF.esc(l.text)}</span>`
      : `${FF.esc(l.label)} <span class="mono">${FF.esc(l.text)}</span>`).join("<br>");
    if (!p.total_frames) {
      $("plan").innerHTML = kv([["plan", `<span class="muted">not planned (yet)</span>`], ["runner", FF.esc(r.runner)],
        ["links", links || undefined], ["output", FF.esc(r.output) || undefined]]);
      return;
    }
    $("plan").innerHTML = kv([
      ["frames", `${p.total_frames}`], ["chunk size", `${p.frames_per_job} frames`], ["chunks", `${p.chunks}`],
      ["fps", FF.esc(p.fps)], ["size", `${p.width}×${p.height}`], ["crf / preset", `${p.crf} / ${FF.esc(p.preset)}`],
      ["sketch", `${FF.esc(p.sketch_path || p.sketch_name)}${p.sketch_mode ? ` <span class="muted">(${FF.esc(p.sketch_mode)})</span>` : ""}`],
      ["sketch sha256", `<span class="mono" title="${FF.esc(p.sketch)}">${FF.esc(p.sketch_sha256 || "–")}</span>`],
      ["runner", FF.esc(r.runner) + (r.driver ? ` <span class="muted">driven by ${FF.esc(r.driver)}</span>` : "")],
      ["links", links || undefined],
      ["output", `<span class="mono">${FF.esc(r.output)}</span>${r.output_bytes != null ? ` (${FF.bytes(r.output_bytes)})` : ""}`],
    ]);
  }

  function renderGrid(r) {
    const g = r.grid || {cells: "", per_cell: 1, chunks: 0, retried: {}};
    const el = $("grid");
    const key = `${g.chunks}/${g.per_cell}`;
    if (key !== gridKey) {
      gridKey = key;
      el.innerHTML = Array.from(g.cells, (_, i) => `<i data-i="${i}"></i>`).join("");
      cells = Array.from(el.children);
    }
    for (let i = 0; i < g.cells.length; i++) {
      const letter = g.cells[i] === "." ? "dot" : g.cells[i];
      const retried = g.per_cell === 1 && g.retried[String(i)] ? " x" : "";
      const cls = letter + retried;
      if (cells[i].className !== cls) cells[i].className = cls;
    }
    $("grid-note").textContent = g.chunks ? (g.per_cell > 1
      ? `${g.chunks.toLocaleString()} chunks, ${g.per_cell} per cell (a cell shows the least done of its chunks)`
      : `${g.chunks.toLocaleString()} chunks`) : "no plan yet";
  }

  const STATE_NAMES = {s: "succeeded", r: "running", q: "queued", f: "failed", c: "cancelled", ".": "not started"};
  function cellRange(i) {
    const g = current.grid, first = i * g.per_cell, last = Math.min(g.chunks, first + g.per_cell) - 1;
    return [first, last];
  }
  $("grid").addEventListener("mouseover", (e) => {
    const i = e.target.dataset && e.target.dataset.i;
    if (i === undefined || !current) return;
    const g = current.grid, [first, last] = cellRange(+i);
    const attempts = g.per_cell === 1 ? (g.retried[String(i)] || (g.cells[i] === "." ? 0 : 1)) : null;
    e.target.title = (first === last ? `chunk ${first}` : `chunks ${first}–${last}`) + `: ${STATE_NAMES[g.cells[i]]}` +
      (attempts != null ? `, ${attempts} attempt${attempts === 1 ? "" : "s"}` : "") + " (click for its attempts)";
  });
  $("grid").addEventListener("click", (e) => {
    const i = e.target.dataset && e.target.dataset.i;
    if (i !== undefined && current) showChunk(cellRange(+i)[0]);
  });

  async function showChunk(index) {
    const panel = $("chunk-panel");
    try {
      const c = await FF.get(`${api}/chunks/${index}`);
      panel.innerHTML = `<h2>Chunk ${c.index}: frames ${c.frame_start}–${c.frame_stop - 1}
        <a href="/runs/${encodeURIComponent(RUN)}/chunks/${c.index}" style="font-weight:400;font-size:13px">open its page</a></h2>
        <table><thead><tr><th>Attempt</th><th>Status</th><th>Host</th><th>Frames</th><th>Started</th><th>Stopped</th><th>Error</th></tr></thead><tbody>` +
        c.attempts.map((a) => `<tr><td>${a.attempt}</td><td>${FF.pill(a.status)}</td><td>${FF.esc(a.host)}</td><td>${a.frames}</td>
          <td>${FF.when(a.started_at)}</td><td>${FF.when(a.stopped_at)}</td><td class="mono">${FF.esc((a.error || "").split("\n")[0])}</td></tr>`).join("") +
        `</tbody></table><p class="muted">segment ${FF.esc(c.segment.key)}: ${c.segment.stored ? FF.bytes(c.segment.bytes) : "not stored"}
        ${c.segment.matches === true ? "· checksum matches its record" : c.segment.matches === false ? "· <b>checksum differs from its record</b>" : ""}</p>`;
    } catch (e) {
      panel.innerHTML = `<p class="muted">Chunk ${index}: ${FF.esc(e.message)}</p>`;
    }
  }

  function renderMedia(r) {
    const media = $("media");
    if (r.video_url) {
      if (videoShown !== r.video_url + (r.output_bytes || "")) {
        videoShown = r.video_url + (r.output_bytes || "");
        $("media-title").textContent = "Video";
        media.innerHTML = `<video id="video" controls preload="metadata" src="${FF.esc(r.video_url)}?v=${encodeURIComponent(r.output_bytes || "")}"></video>
          <p class="muted"><a href="${FF.esc(r.video_url)}" download="${FF.esc(RUN)}.mp4">download</a>${r.output_bytes != null ? ` · ${FF.bytes(r.output_bytes)}` : ""}</p>`;
      }
      return;
    }
    videoShown = "";
    if (r.preview_url) {
      $("media-title").textContent = "Preview";
      const img = $("preview");
      const text = `first frame of chunk ${r.preview_chunk.index}, the latest finished`;
      if (!img) {
        media.innerHTML = `<img id="preview" class="preview" alt="preview" src="${FF.esc(r.preview_url)}"><p class="muted" id="preview-note"></p>`;
      } else if (img.getAttribute("src") !== r.preview_url) {
        img.setAttribute("src", r.preview_url);
      }
      $("preview-note").textContent = text;
    } else {
      media.innerHTML = `<p class="muted">No video yet${TERMINAL.has(r.status) ? "" : ": a preview shows once a chunk has finished"}.</p>`;
    }
  }

  function renderFailures(r) {
    $("failures-panel").hidden = !r.failed_total;
    $("failed-total").textContent = r.failed_total > r.failed.length ? `(last ${r.failed.length} of ${r.failed_total})` : `(${r.failed_total})`;
    $("failures").innerHTML = r.failed.map((f) => `<div class="failure"><b>${FF.esc(f.job)}</b> attempt ${f.attempt}
      <span class="muted">${FF.esc(f.host)} · ${FF.when(f.stopped_at)}${f.exit_code ? ` · exit ${f.exit_code}` : ""}</span>
      ${f.index != null ? ` · <a href="/runs/${encodeURIComponent(RUN)}/chunks/${f.index}">chunk ${f.index}</a>` : ""}
      <pre>${FF.esc(f.error || "(no error recorded)")}</pre></div>`).join("");
  }

  function render(r) {
    current = r;
    $("status").innerHTML = FF.pill(r.status);
    $("status").dataset.status = r.status;
    const total = r.total_frames || 0, done = r.frames_done || 0;
    $("progress").innerHTML = FF.bar(done, total, true);
    $("frames").textContent = `${done} / ${total || "?"}`;
    const p = r.progress || {};
    $("fps").textContent = p.fps ? p.fps.toFixed(1) : "–";
    $("eta").textContent = TERMINAL.has(r.status) ? "–" : FF.seconds(p.eta_seconds);
    $("wall").textContent = FF.seconds(r.wall_seconds);
    $("started").textContent = FF.when(r.started_at || r.created_at);
    $("chunk-counts").innerHTML = r.chunks == null ? "no plan" : FF.countsText(r.chunk_states || {});
    $("cancel").disabled = TERMINAL.has(r.status);
    $("resume").disabled = r.status === "SUCCEEDED" || !r.plan || !r.plan.total_frames || (!TERMINAL.has(r.status) && !!r.driver);
    $("delete").disabled = !TERMINAL.has(r.status) || !!r.driver;
    renderPlan(r);
    renderGrid(r);
    renderMedia(r);
    renderFailures(r);
    const tk = `${r.status}/${r.jobs_total}`;
    if (tk !== traceKey && (TERMINAL.has(r.status) || !traceKey || Date.now() - lastTrace > 10000)) { traceKey = tk; loadTrace(); }
    if (tk !== jobsKey) { jobsKey = tk; loadJobs(); }
  }

  let lastTrace = 0;
  async function loadTrace() {
    lastTrace = Date.now();
    try {
      const t = await FF.get(`${api}/trace`);
      const el = $("waterfall");
      if (!t.spans) { el.innerHTML = `<p class="muted">No stored spans yet.</p>`; $("trace-note").textContent = ""; return; }
      const wall = t.wall_seconds || 1;
      const rows = t.jobs.map((j) => `<div class="row" title="${FF.esc(j.job)}: ${FF.seconds(j.duration)} from ${FF.seconds(j.offset)}${j.host ? " on " + FF.esc(j.host) : ""}">
        <span class="mono">${FF.esc(j.job)}</span><div class="track"><span class="${FF.esc(j.kind)} ${FF.esc(j.status)}"
        style="left:${(100 * j.offset / wall).toFixed(3)}%;width:${Math.max(0.2, 100 * j.duration / wall).toFixed(3)}%"></span></div>
        <span class="muted">${FF.seconds(j.duration)}</span></div>`);
      if (t.folded) {
        const peak = Math.max(1, ...t.folded.bins);
        rows.push(`<div class="row" title="${t.folded.count} more render attempts: median ${FF.seconds(t.folded.median)}, ${FF.seconds(t.folded.min)} to ${FF.seconds(t.folded.max)}">
          <span class="mono">+${t.folded.count} renders</span><div class="track density">${t.folded.bins.map((b) => `<b style="opacity:${(b / peak).toFixed(3)}"></b>`).join("")}</div>
          <span class="muted">${FF.seconds(t.folded.median)} med.</span></div>`);
      }
      el.innerHTML = rows.join("");
      const cp = t.critical_path || {jobs: []};
      const slow = t.slowest_frame ? ` · slowest frame ${t.slowest_frame.frame} (${FF.seconds(t.slowest_frame.duration)})` : "";
      $("trace-note").textContent = `${FF.seconds(t.wall_seconds)} wall, ${t.render_attempts} render attempts, ${t.spans} spans · critical path ${cp.jobs.length} jobs${slow}`;
    } catch (e) {
      $("trace-note").textContent = `(${e.message})`;
    }
  }

  async function loadJobs() {
    try {
      const page = await FF.get(`${api}/jobs?offset=${jobsOffset}&limit=${JOBS_LIMIT}`);
      document.querySelector("#jobs tbody").innerHTML = page.jobs.map((j) => `<tr><td class="mono">${j.index != null
        ? `<a href="/runs/${encodeURIComponent(RUN)}/chunks/${j.index}">${FF.esc(j.job)}</a>` : FF.esc(j.job)}</td><td>${j.attempt}</td>
        <td>${FF.pill(j.status)}</td><td>${j.frames}</td><td>${FF.esc(j.host)}</td><td>${FF.when(j.started_at)}</td><td>${FF.when(j.stopped_at)}</td>
        <td class="mono">${FF.esc((j.error || "").split("\n")[0])}</td></tr>`).join("");
      $("jobs-total").textContent = `(${page.total})`;
      $("jobs-page").textContent = page.total ? `${jobsOffset + 1}–${Math.min(jobsOffset + JOBS_LIMIT, page.total)} of ${page.total}` : "";
      $("jobs-prev").disabled = jobsOffset <= 0;
      $("jobs-next").disabled = jobsOffset + JOBS_LIMIT >= page.total;
    } catch (e) { /* the banner says it when the run cannot be read */ }
  }
  $("jobs-prev").addEventListener("click", () => { jobsOffset = Math.max(0, jobsOffset - JOBS_LIMIT); loadJobs(); });
  $("jobs-next").addEventListener("click", () => { jobsOffset += JOBS_LIMIT; loadJobs(); });

  async function act(name, url, question) {
    if (question && !window.confirm(question)) return;
    const button = $(name);
    button.disabled = true;
    note(`${name}…`);
    const done = await FF.post(url);
    note(done.message);
    if (!done.ok) FF.banner(`${name} failed: ${done.message}`); else FF.banner("");
    refresh();
  }
  $("cancel").addEventListener("click", () => act("cancel", `${api}/cancel`, `Cancel run ${RUN}? Its finished chunks are kept; Resume finishes it.`));
  $("resume").addEventListener("click", () => act("resume", `${api}/resume`, null));
  $("delete").addEventListener("click", () => {
    const typed = window.prompt(`Delete run ${RUN}'s data (plan, segments, frames, trace, video) from storage? Its job-log records stay.\nType the run id to confirm:`);
    if (typed === null) return;
    if (typed.trim() !== RUN) { note("Not deleted: the run id typed does not match."); return; }
    act("delete", `${api}/delete?confirm=${encodeURIComponent(RUN)}`, null);
  });

  async function refresh() {
    try { render(await FF.get(`${api}?jobs=0`)); FF.banner(""); return true; }
    catch (e) {
      FF.banner(e.status === 404 ? `Run ${RUN} is not in this job log (yet): looking again every few seconds.` : `Cannot read run ${RUN}: ${e.message}`);
      return false;
    }
  }

  // Live: the run's event stream; until the run exists (or after the stream fails for good),
  // the page looks again every few seconds.
  function listen() {
    const events = new EventSource(`${api}/events`);
    events.addEventListener("run", (e) => { render(JSON.parse(e.data)); FF.banner(""); });
    events.addEventListener("failure", (e) => FF.banner(`Cannot read run ${RUN}: ${JSON.parse(e.data).error}`));
    events.onerror = () => { if (events.readyState === EventSource.CLOSED) setTimeout(start, 3000); };
  }
  async function start() {
    if (await refresh()) listen(); else setTimeout(start, 2000);
  }
  start();
})();
