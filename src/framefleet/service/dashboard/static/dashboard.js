// The framefleet dashboard: polls the service's read-only JSON API (same origin; the session cookie set
// by /login goes along) and updates the page in place. GET requests only. Every value from the API (URIs,
// names, errors) is untrusted and is written with textContent, never parsed as HTML.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const STAGES = ["decode", "ops", "encode", "upload"];
  const ITEM_STATES = ["pending", "running", "done", "failed"];
  const SIZE_UNITS = ["B", "kB", "MB", "GB", "TB"];  // decimal SI, as framefleet.sizes.format_bytes
  // What the tests read: when the page was loaded, how many refreshes have been drawn, and the size format.
  const state = (window.framefleet = { loadedAt: Date.now(), updates: 0, lastError: null, bytes });

  // -- helpers ---------------------------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  function el(tag, props, text) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function setText(id, value) {
    const node = $(id);
    if (node) node.textContent = value === null || value === undefined ? "—" : String(value);
  }

  class HttpError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function getJSON(url) {
    const response = await fetch(url, { method: "GET", credentials: "same-origin",
                                        headers: { Accept: "application/json" }, cache: "no-store" });
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
      throw new HttpError(response.status, `${response.status}: ${detail}`);
    }
    return response.json();
  }

  const num = (n, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : "—");
  const int = (n) => (Number.isFinite(n) ? Math.round(n).toLocaleString("en") : "—");
  const when = (epoch) => (epoch ? new Date(epoch * 1000).toLocaleString() : "—");

  function duration(seconds) {
    if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
    return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
  }

  // Sizes as the report writes them (framefleet.sizes.format_bytes, the same arithmetic): "512 B", "12.0 kB".
  function bytes(n) {
    if (!Number.isFinite(n)) return "—";
    if (n < 1000) return `${n} B`;
    const tenths = (v) => Math.floor(v * 10 + 0.5) / 10;
    let value = n / 1000, unit = 1;
    while (tenths(value) >= 1000 && unit < SIZE_UNITS.length - 1) { value /= 1000; unit += 1; }
    return `${tenths(value).toFixed(1)} ${SIZE_UNITS[unit]}`;
  }

  // "op: style, crf: 20"; steps read "faces (anonymize: none) → blur (when: faces)".
  function pipelineText(pipeline) {
    const options = (mapping) => Object.entries(mapping || {}).map(([k, v]) => `${k}: ${v}`).join(", ");
    const steps = Array.isArray((pipeline || {}).steps) ? pipeline.steps : null;
    const rest = options(Object.fromEntries(Object.entries(pipeline || {}).filter(([k]) => k !== "steps")));
    if (!steps) return rest || "(default)";
    const chain = steps.map((step) => {
      const { op = "style", ...params } = step || {};
      const text = options(params);
      return text ? `${op} (${text})` : `${op}`;
    }).join(" → ");
    return rest ? `${chain}; ${rest}` : chain;
  }

  function stateBadge(node, value) {
    node.textContent = value;
    node.className = `badge state-${String(value).replace(/[^a-z]/g, "")}`;
  }

  // Calls `refresh` now and again `every` ms after each call settles (never two at once).
  function poll(refresh, every) {
    const tick = async () => {
      try {
        await refresh();
        state.updates += 1;
        state.lastError = null;
        setText("conn-error", "");
        $("conn-error").hidden = true;
      } catch (error) {
        if (error.status === 401) {  // the session is gone: sign in again, then come back here
          window.location.assign(`/login?next=${encodeURIComponent(window.location.pathname)}`);
          return;
        }
        state.lastError = String(error.message || error);
        setText("conn-error", `Could not refresh: ${state.lastError}`);
        $("conn-error").hidden = false;
        if (error.status === 404) return;  // the job is gone: stop polling
      }
      setText("updated", new Date().toLocaleTimeString());
      window.setTimeout(tick, every);
    };
    tick();
  }

  // -- the jobs page ---------------------------------------------------------------------------------

  async function refreshJobs() {
    const list = await getJSON("/api/jobs?limit=200");
    const rows = list.jobs.map((job) => {
      const row = el("tr", { "data-test": "job-row", "data-job-id": job.id });
      const link = el("a", { href: `/jobs/${encodeURIComponent(job.id)}` }, job.id);
      const idCell = el("td", { class: "nowrap" });
      idCell.append(link);
      const stateCell = el("td");
      stateCell.append(el("span"));
      stateBadge(stateCell.firstChild, job.state);
      const items = job.items || {};
      row.append(idCell, el("td", {}, job.name), el("td", {}, job.kind), stateCell,
                 el("td", { class: "n", "data-test": "job-done" }, int(items.done || 0)),
                 el("td", { class: "n", "data-test": "job-failed" }, int(items.failed || 0)),
                 el("td", { class: "uri" }, job.inputs.join("\n")), el("td", { class: "uri" }, job.output),
                 el("td", { class: "time" }, when(job.created)));
      return row;
    });
    $("jobs-body").replaceChildren(...rows);
    $("jobs-empty").hidden = rows.length > 0;
    setText("jobs-total", list.total);
  }

  // -- the job page ----------------------------------------------------------------------------------

  function jobIdFromPath() {
    return decodeURIComponent(window.location.pathname.replace(/^\/jobs\//, "").replace(/\/$/, ""));
  }

  function drawJob(job) {
    document.title = `framefleet: ${job.name}`;
    setText("job-name", job.name);
    setText("job-id", job.id);
    setText("job-kind", job.kind);
    stateBadge($("job-state"), job.state);
    setText("job-pipeline", pipelineText(job.pipeline));
    setText("job-inputs", job.inputs.join(", "));
    setText("job-output", job.output);
    setText("job-created", when(job.created));
    $("job-error").hidden = !job.error;
    setText("job-error", job.error || "");

    for (const s of ITEM_STATES) setText(`items-${s}`, int((job.items || {})[s] || 0));
    const done = job.frames_done, expected = job.frames_expected;
    const fraction = expected > 0 ? Math.min(1, done / expected) : 0;
    setText("frames-done", int(done));
    setText("frames-expected", int(expected));
    setText("progress-percent", `${(fraction * 100).toFixed(1)} %`);
    const bar = $("progress");
    bar.setAttribute("aria-valuemax", String(Math.max(expected, 0)));
    bar.setAttribute("aria-valuenow", String(Math.min(done, Math.max(expected, 0))));
    bar.setAttribute("aria-valuetext", `${int(done)} of ${int(expected)} frames`);
    $("progress-fill").style.width = `${(fraction * 100).toFixed(2)}%`;
    setText("fps", num(job.fps));
    setText("eta", duration(job.eta_seconds));
    setText("workers-busy", int(job.busy_workers));
    setText("workers-total", int(job.workers));
    setText("input-failures", int(job.input_failures));
    setText("crashes", int(job.crashes));
    setText("infra-losses", int(job.infra_losses));
    $("watch-info").hidden = !job.watch;
    if (job.watch) {
      setText("watch-polls", int(job.watch.polls));
      setText("watch-error", job.watch.last_error || "none");
    }
    drawStages(job.stages || {});
  }

  function drawStages(stages) {
    const total = STAGES.reduce((sum, s) => sum + (stages[s] || 0), 0);
    for (const s of STAGES) {
      const seconds = stages[s] || 0;
      const share = total > 0 ? (seconds / total) * 100 : 0;
      setText(`stage-${s}`, num(seconds, 2));
      setText(`stage-${s}-share`, `${share.toFixed(0)} %`);
      const part = $(`stage-bar-${s}`);
      part.style.width = `${share}%`;
      part.title = `${s}: ${num(seconds, 2)} s (${share.toFixed(0)} %)`;
    }
    setText("stage-total", num(total, 2));
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function drawChart(throughput) {
    const chart = $("throughput-chart");
    const points = throughput.points || [];
    $("chart-empty").hidden = points.length > 0;
    if (!points.length) { chart.replaceChildren(); return; }
    const W = 640, H = 180, left = 44, right = 10, top = 10, bottom = 24;
    const bucket = throughput.bucket_seconds || 1;
    const t0 = points[0].t, t1 = points[points.length - 1].t + bucket;
    const peak = Math.max(...points.map((p) => p.fps), 1);
    const x = (t) => left + ((t - t0) / Math.max(t1 - t0, 1e-9)) * (W - left - right);
    const y = (fps) => H - bottom - (fps / (peak * 1.1)) * (H - top - bottom);
    const coords = points.map((p) => [x(p.t + bucket / 2), y(p.fps)]);
    const line = coords.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(" ");
    const base = y(0).toFixed(1);
    const nodes = [
      svg("line", { class: "axis", x1: left, y1: y(0), x2: W - right, y2: y(0) }),
      svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: y(0) }),
      svg("text", { class: "label", x: left - 6, y: y(peak) + 4, "text-anchor": "end" }, num(peak, 0)),
      svg("text", { class: "label", x: left - 6, y: y(0) + 4, "text-anchor": "end" }, "0"),
      svg("text", { class: "label", x: left, y: H - 6 }, new Date(t0 * 1000).toLocaleTimeString()),
      svg("text", { class: "label", x: W - right, y: H - 6, "text-anchor": "end" },
          `${duration(t1 - t0)} · ${duration(bucket)} buckets`),
      svg("polygon", { class: "area", points: `${coords[0][0].toFixed(1)},${base} ${line} ` +
                                               `${coords[coords.length - 1][0].toFixed(1)},${base}` }),
      svg("polyline", { class: "line", points: line }),
    ];
    coords.forEach(([a, b], i) => {
      const dot = svg("circle", { class: "point", "data-test": "chart-point", cx: a.toFixed(1),
                                  cy: b.toFixed(1), r: 3 });
      dot.append(svg("title", {}, `${new Date(points[i].t * 1000).toLocaleTimeString()}: ` +
                                  `${num(points[i].fps)} fps`));
      nodes.push(dot);
    });
    chart.replaceChildren(...nodes);
    chart.setAttribute("aria-label", `Frames per second over ${duration(t1 - t0)}, peak ${num(peak)} fps`);
  }

  function drawFailures(list) {
    const items = list.items.map((item) => {
      const li = el("li", { "data-test": "failure", "data-item-id": item.id });
      li.append(el("code", { class: "uri" }, item.uri), el("span", { class: "error" }, item.error || "(no error)"));
      return li;
    });
    $("failures").replaceChildren(...items);
    $("failures-empty").hidden = items.length > 0;
    setText("failures-total", int(list.total));
  }

  function drawItems(list) {
    const rows = list.items.map((item) => {
      const row = el("tr", { "data-test": "item-row", "data-item-id": item.id, "data-state": item.state,
                             "data-damaged": item.damage ? "yes" : "no" });
      const stateCell = el("td");
      stateCell.append(el("span"));
      stateBadge(stateCell.firstChild, item.state);
      if (item.damage) {  // done from a partly damaged input: what was lost, on hover
        stateCell.append(" ", el("span", { class: "badge damaged", "data-test": "damaged", title: item.damage },
                                 "damaged"));
      }
      row.append(el("td", { class: "uri" }, item.uri), stateCell, el("td", { class: "n" }, int(item.frames)),
                 el("td", { class: "n" }, num(item.fps)), el("td", { class: "n" }, num(item.seconds, 2)),
                 el("td", { class: "n" }, bytes(item.bytes_in)), el("td", { class: "n" }, bytes(item.bytes_out)));
      return row;
    });
    $("items-body").replaceChildren(...rows);
    $("items-empty").hidden = rows.length > 0;
    setText("items-shown", rows.length < list.total ? `first ${rows.length} of ${list.total}` : int(list.total));
  }

  async function refreshJob(id) {
    const base = `/api/jobs/${encodeURIComponent(id)}`;
    const [job, chart, failed, items] = await Promise.all([
      getJSON(base), getJSON(`${base}/throughput`), getJSON(`${base}/items?state=failed&limit=100`),
      getJSON(`${base}/items?limit=200`)]);
    drawJob(job);
    drawChart(chart);
    drawFailures(failed);
    drawItems(items);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const page = document.body.dataset.page;
    if (page === "jobs") poll(refreshJobs, 2000);
    if (page === "job") {
      const id = jobIdFromPath();
      setText("job-id", id);
      poll(() => refreshJob(id), 1000);
    }
  });
})();
