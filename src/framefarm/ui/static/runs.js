// The runs page: newest first, paged, filtered by status; refreshed every two seconds.
"use strict";
(() => {
  const LIMIT = 25, REFRESH_MS = 2000;
  const params = new URLSearchParams(location.search);
  let offset = parseInt(params.get("offset") || "0", 10) || 0;
  const filter = document.getElementById("status-filter");
  filter.value = (params.get("status") || "").toUpperCase();

  function row(r) {
    const done = r.frames_done || 0, total = r.total_frames || 0;
    return `<tr data-run="${FF.esc(r.run_id)}" data-status="${FF.esc(r.status)}">
      <td><a href="/runs/${encodeURIComponent(r.run_id)}">${FF.esc(r.run_id)}</a></td>
      <td class="status">${FF.pill(r.status)}</td>
      <td>${FF.esc(r.runner)}</td>
      <td title="${FF.esc(r.sketch)}">${FF.esc(r.sketch_name || "–")}</td>
      <td>${FF.bar(done, total)}<span class="muted frames">${done} / ${total || "?"}</span></td>
      <td>${FF.stack(r.chunk_states || {}, r.chunks || 0)}<span class="muted counts">${r.chunks == null ? "no plan" : FF.countsText(r.chunk_states || {})}</span></td>
      <td>${FF.when(r.started_at || r.created_at)}</td>
      <td>${FF.seconds(r.wall_seconds)}</td>
      <td>${r.output_bytes != null ? FF.bytes(r.output_bytes) : "–"}</td></tr>`;
  }

  async function load() {
    const q = new URLSearchParams({offset: String(offset), limit: String(LIMIT)});
    if (filter.value) q.set("status", filter.value);
    try {
      const page = await FF.get(`/api/runs?${q}`);
      document.querySelector("#runs tbody").innerHTML = page.runs.map(row).join("");
      document.getElementById("empty").hidden = page.total > 0;
      document.getElementById("total").textContent = `${page.total}`;
      document.getElementById("page").textContent = page.total ? `${offset + 1}–${Math.min(offset + LIMIT, page.total)} of ${page.total}` : "";
      document.getElementById("prev").disabled = offset <= 0;
      document.getElementById("next").disabled = offset + LIMIT >= page.total;
      document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
      FF.banner("");
    } catch (e) {
      FF.banner(`Cannot read the runs: ${e.message}`);
    }
  }
  function go() {
    const q = new URLSearchParams();
    if (offset) q.set("offset", String(offset));
    if (filter.value) q.set("status", filter.value);
    history.replaceState(null, "", q.toString() ? `?${q}` : location.pathname);
    load();
  }
  filter.addEventListener("change", () => { offset = 0; go(); });
  document.getElementById("prev").addEventListener("click", () => { offset = Math.max(0, offset - LIMIT); go(); });
  document.getElementById("next").addEventListener("click", () => { offset += LIMIT; go(); });
  load();
  setInterval(() => { if (!document.hidden) load(); }, REFRESH_MS);
})();
