"""`render_report`: one self-contained HTML page about a job, read from its ledger.

Inline CSS and inline SVG charts drawn here; no scripts, no external requests. Every string that comes
from the ledger (file names, errors, log tails) is redacted (`framefleet.util.redact`; the ledger stores redacted
errors already, this is defence in depth) and escaped.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from html import escape

from framefleet.jobs.reads import Activity, Failure, ItemMetrics
from framefleet.jobs.store import JobRecord
from framefleet.jobs.view import FrameSeries, JobView
from framefleet.util.redact import redact
from framefleet.util.sizes import format_bytes

_STAGE_COLOURS = {"decode": "#4e79a7", "ops": "#f28e2b", "encode": "#59a14f", "upload": "#b07aa1"}
_CHART_BUCKETS = 40
_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid #eee; vertical-align: top; }
th { background: #f6f6f6; } td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
td.path { word-break: break-all; } table.summary th { width: 14em; background: none; }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; white-space: pre-wrap; margin: .3em 0; }
.done { color: #2e7d32; } .failed { color: #c62828; } .running { color: #1565c0; } .pending { color: #777; }
.damaged { color: #b26a00; font-weight: 600; }
svg text { font: 12px system-ui, sans-serif; fill: #333; } .muted { color: #777; }
"""


def render_report(view: JobView) -> str:
    """The whole report as one HTML page, dated `view.now`."""
    job = view.job()
    items = view.items()
    activity = view.activity()
    failures = view.failures()
    stages = view.stages()
    title = _title(job, items)
    body = "\n".join([
        f"<h1>{_text(title)}</h1>",
        f'<p class="muted">report written {_when(view.now)}</p>',
        _section("Summary", _summary(view, job, items, activity, stages)),
        _section("Time per stage", _stage_chart(stages)),
        _section("Throughput over time", _throughput_chart(view.frame_series(_CHART_BUCKETS))),
        _section(f"Videos ({len(items)})", _item_table(items)),
        _section(f"Failures ({len(failures)})", _failure_table(failures)),
    ])
    head = f'<meta charset="utf-8">\n<title>{_text(title)}</title>\n<style>{_CSS}</style>'
    return f'<!DOCTYPE html>\n<html lang="en">\n<head>\n{head}\n</head>\n<body>\n{body}\n</body>\n</html>\n'


def _summary(view: JobView, job: JobRecord | None, items: list[ItemMetrics], activity: Activity,
             stages: dict[str, float]) -> str:
    counts = view.counts()
    done, expected = view.frames()
    wall = activity.elapsed(view.now)
    seconds = sum(item.seconds for item in items)
    fingerprint = job.fingerprint if job else ""
    states = ", ".join(f'<span class="{state}">{n} {state}</span>' for state, n in counts.items())
    stage_text = ", ".join(f"{stage} {value:.1f} s" for stage, value in stages.items())
    fps = f", {done / wall:.1f} fps" if wall > 0 else ""
    bytes_in, bytes_out = sum(i.bytes_in for i in items), sum(i.bytes_out for i in items)
    damaged = sum(1 for item in items if item.damage)
    rows = [
        ("fingerprint", f'<span title="{escape(fingerprint)}">{escape(fingerprint[:12])}</span>'),
        ("created", _when(job.created) if job else ""),
        ("framefleet version", escape(job.framefleet_version if job else "")),
        ("output root", _text(job.output_root if job else "")),
        ("items", f"{states} ({sum(counts.values())} in all)"),
        ("adopted", f"{view.adopted()} done by adopting outputs already committed (their manifests match)"),
        ("damaged inputs", f'<span class="damaged">{damaged} done with losses</span>' if damaged else "none"),
        ("frames", f"{done} done of {expected} expected"),
        ("work", f"{seconds:.1f} s in tasks: {stage_text}"),
        ("ops by step", ", ".join(f"{escape(step)} {value:.1f} s" for step, value in view.step_seconds().items())
         or "none recorded"),
        ("wall time", f"{wall:.1f} s from the first claim to the last attempt{fps}"),
        ("bytes", f"{format_bytes(bytes_in)} in (inputs), {format_bytes(bytes_out)} out (outputs)"),
        ("attempts", f"{activity.attempts}: {view.losses()}"),
    ]
    table = "".join(f"<tr><th>{key}</th><td>{value}</td></tr>" for key, value in rows)
    spec = json.dumps(job.spec if job else {}, indent=2, sort_keys=True)
    return (f'<table class="summary"><tbody>{table}</tbody></table>\n'
            f"<details><summary>pipeline</summary><pre>{_text(spec)}</pre></details>")


def _stage_chart(totals: dict[str, float]) -> str:
    """A horizontal stacked bar of the seconds per stage, with a legend giving seconds and percentages."""
    width, bar = 800, 36
    total = sum(totals.values())
    parts = [f'<rect x="0" y="0" width="{width}" height="{bar}" fill="#eee"/>']
    x = 0.0
    for index, (name, seconds) in enumerate(totals.items()):
        colour = _STAGE_COLOURS[name]
        share = seconds / total if total > 0 else 0.0
        label = f"{name} {seconds:.1f} s ({share * 100:.1f}%)"
        if share > 0:
            rect = f'x="{x:.2f}" y="0" width="{share * width:.2f}" height="{bar}" fill="{colour}"'
            parts.append(f"<rect {rect}><title>{label}</title></rect>")
        x += share * width
        lx = index * width / len(totals)
        parts.append(f'<rect x="{lx:.0f}" y="{bar + 12}" width="12" height="12" fill="{colour}"/>'
                     f'<text x="{lx + 18:.0f}" y="{bar + 23}">{label}</text>')
    if total <= 0:
        parts.append(f'<text x="8" y="{bar / 2 + 4:.0f}">no stage timings yet</text>')
    return _svg(width, bar + 32, "time per stage", "".join(parts))


def _throughput_chart(series: FrameSeries | None) -> str:
    """Frames processed per time bucket, as bars over wall time since the first claim."""
    if series is None:
        return _svg(400, 30, "throughput over time", '<text x="0" y="20">no finished tasks yet</text>')
    width, height, left, top, bottom = 800, 220, 60, 10, 30
    frames, bucket = series.frames, series.bucket_seconds
    peak = max(max(frames), 1.0)
    plot_w, plot_h, base, mid = width - left - 10, height - bottom - top, height - bottom, width / 2 + 25
    bar_w = plot_w / len(frames)
    parts = [
        f'<line x1="{left}" y1="{base}" x2="{width - 10}" y2="{base}" stroke="#999"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" stroke="#999"/>',
        f'<text x="{left - 6}" y="{top + 6}" text-anchor="end">{peak:.0f}</text>',
        f'<text x="{left - 6}" y="{base}" text-anchor="end">0</text>',
        f'<text x="{left}" y="{height - 8}">0 s</text>',
        f'<text x="{width - 10}" y="{height - 8}" text-anchor="end">{len(frames) * bucket:g} s</text>',
        f'<text x="{mid:.0f}" y="{height - 8}" text-anchor="middle">frames per {bucket:g} s</text>',
    ]
    for index, count in enumerate(frames):
        h = plot_h * count / peak
        tip = f"{index * bucket:g}-{(index + 1) * bucket:g} s: {count:.0f} frames ({count / bucket:.1f} fps)"
        x = left + index * bar_w + 1
        rect = f'x="{x:.2f}" y="{base - h:.2f}" width="{max(bar_w - 2, 1):.2f}" height="{h:.2f}"'
        parts.append(f'<rect {rect} fill="#4e79a7"><title>{tip}</title></rect>')
    return _svg(width, height, "throughput over time", "".join(parts))


def _item_table(items: list[ItemMetrics]) -> str:
    columns = ["input", "state", "frames", "seconds", "fps", "decode s", "ops s", "encode s", "bytes out",
               "output"]
    rows = []
    for item in items:
        fps = f"{item.fps:.1f}" if item.seconds > 0 else ""
        state = escape(item.state)
        damage = (f' <span class="damaged" title="{_text(item.damage)}">damaged</span>' if item.damage else "")
        rows.append([_text(item.uri), f'<span class="{state}">{state}</span>{damage}', str(item.frames),
                     f"{item.seconds:.2f}", fps, f"{item.decode_s:.2f}", f"{item.ops_s:.2f}",
                     f"{item.encode_s:.2f}", format_bytes(item.bytes_out), _text(item.output_uri or "")])
    return _table(columns, rows, "path,,n,n,n,n,n,n,n,path")


def _failure_table(failures: list[Failure]) -> str:
    if not failures:
        return '<p class="muted">no failed items</p>'
    rows = []
    for failure in failures:
        tail = failure.log_tail
        details = f"<details><summary>log tail</summary><pre>{_text(tail)}</pre></details>" if tail else ""
        rows.append([_text(failure.uri), str(failure.attempts), _text(failure.error_type or ""),
                     _text(failure.error or "") + details])
    return _table(["input", "attempts", "error type", "error"], rows, "path,n,,")


def _table(columns: list[str], rows: list[list[str]], classes: str) -> str:
    """An HTML table of already escaped cells; `classes` gives each column's CSS class, comma-separated."""
    attrs = [f' class="{c}"' if c else "" for c in classes.split(",")]
    head = "".join(f"<th{attr}>{escape(name)}</th>" for name, attr in zip(columns, attrs))
    body = "".join("<tr>" + "".join(f"<td{attr}>{cell}</td>" for cell, attr in zip(row, attrs)) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _text(value: object) -> str:
    """A free-text value from the ledger, redacted and escaped for HTML."""
    return escape(redact(str(value)))


def _svg(width: int, height: int, label: str, content: str) -> str:
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{label}">{content}</svg>')


def _section(title: str, content: str) -> str:
    return f"<section>\n<h2>{escape(title)}</h2>\n{content}\n</section>"


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _title(job: JobRecord | None, items: list[ItemMetrics]) -> str:
    """The job named by what it read and where it wrote."""
    if job is None:
        return "framefleet job"
    source = _inputs(items)
    return f"framefleet job: {source} → {job.output_root}" if source else f"framefleet job → {job.output_root}"


def _inputs(items: list[ItemMetrics]) -> str:
    """Its one input, the folder (or prefix) its inputs share, or how many there are ("" for none)."""
    if len(items) <= 1:
        return items[0].uri if items else ""
    shared = []
    for names in zip(*(item.uri.split("/")[:-1] for item in items)):
        if len(set(names)) > 1:
            break
        shared.append(names[0])
    return "/".join(shared) + "/" if shared else f"{len(items)} inputs"
