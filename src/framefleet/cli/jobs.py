"""Commands for batch jobs: run, status, failures, retry, report.

Each command imports the job machinery it needs when it runs: `framefleet run` starts its worker processes
first (`engines.local_processes`), so that their imports overlap its own.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from framefleet.cli import options
from framefleet.cli.app import app, err, guarded, out, stdout_only_for_the_result
from framefleet.cli.progress import Ticker, progress_mode
from framefleet.engines import local_processes
from framefleet.engines.events import EngineProgress
from framefleet.errors import OptionError, OutputError
from framefleet.files.temporary import write_text_atomically
from framefleet.settings import RunSettings

if TYPE_CHECKING:
    from framefleet.jobs.reads import Failure
    from framefleet.jobs.run import JobResult
    from framefleet.jobs.view import JobStatus

JobDir = Annotated[str, typer.Argument(help="The job directory (the run's --job-dir, or OUTPUT/.framefleet-job), "
                                            "or the output URI of a job writing to an object store.")]


@app.command()
@options.with_pipeline_flags("op", "param", "model", "style", "style_image", "strength", "max_size", "device",
                             "runtime", "precision", "batch_size", "crf", "preset", "codec", "hdr", "temporal",
                             "temporal_strength", "strict", "limit")
@options.with_run_flags("engine", "workers", "threads_per_worker", "max_attempts", "hang_timeout", "task_timeout",
                        "worker_network", "ray_address", "cpus_per_worker", "gpus_per_worker", "remote_read",
                        "parts_dir", "preemption_notice")
def run(
    inputs: Annotated[list[str], typer.Argument(help="Files, folders, globs, @list.txt, or - for a list on stdin.",
                                                show_default=False)],
    output: Annotated[str, typer.Option("--output", "-o", help="Output root; outputs mirror the inputs' paths.",
                                        show_default=False)],
    pipeline_file: Annotated[Optional[Path], typer.Option("--pipeline", help="YAML pipeline; flags override it.")] = None,
    plan_file: Annotated[Optional[Path], typer.Option(
        "--plan", help="A plan.json from framefleet plan: its pipeline, knobs and worker counts (flags override).")] = None,
    pipeline_flags: options.PipelineFlags = {},
    segment_seconds: Annotated[Optional[float], typer.Option(help="Split videos longer than this (default 20 s).")] = None,
    job_dir: Annotated[Optional[Path], typer.Option(help="Where the job's ledger lives (default OUTPUT/.framefleet-job, "
                                                          "or ~/.cache/framefleet/jobs/... for a store output).")] = None,
    run_flags: options.RunFlags = {},
    storage_options: options.StorageOptions = None,
    as_json: options.Json = False,
    quiet: options.Quiet = False,
    progress: options.ProgressMode = "auto",
) -> None:
    """Process many videos in parallel; re-run the same command to resume.

    Inputs and the output root may be object-store URIs (az://, s3://, gs://; inputs also https://)."""
    if (run_flags["engine"] or "local") == "local" and plan_file is None:
        # The process the first task needs starts before the imports below, and imports its own meanwhile;
        # the job starts the others (`framefleet.run`), which would only slow these two on a few cores.
        local_processes.start_early(1)
    from framefleet.files import storage
    from framefleet.jobs.run import run as run_job
    from framefleet.jobs.spec import JobSpec

    def start() -> JobResult:
        storage.configure(storage.load_options(storage_options))
        flags = options.pipeline_options(pipeline_flags, segment_seconds=segment_seconds)
        prediction = None
        if plan_file is None:
            pipeline = options.build_pipeline(pipeline_file, flags)
            settings = RunSettings().given(**run_flags)
        elif pipeline_file is not None:
            raise OptionError("--plan and --pipeline: give one of them (a plan holds its pipeline)")
        else:
            from framefleet.plan.apply import apply_plan
            from framefleet.plan.planner import read_plan

            pipeline, settings, prediction = apply_plan(read_plan(plan_file), flags, run_flags)
        return _with_display(
            lambda on_progress: run_job(JobSpec(inputs, output, pipeline, settings), job_dir=job_dir,
                                        on_progress=on_progress, stdin=sys.stdin, handle_signals=True,
                                        prediction=prediction),
            mode=progress_mode(progress, quiet=quiet, as_json=as_json),
        )

    with stdout_only_for_the_result(as_json):
        _finish(guarded(start), as_json)


@app.command()
@options.with_run_flags("engine", "workers", "threads_per_worker", "max_attempts", "hang_timeout", "task_timeout",
                        "worker_network", "ray_address", "cpus_per_worker", "gpus_per_worker", "remote_read")
def retry(
    job_dir: JobDir,
    run_flags: options.RunFlags = {},
    storage_options: options.StorageOptions = None,
    as_json: options.Json = False,
    quiet: options.Quiet = False,
    progress: options.ProgressMode = "auto",
) -> None:
    """Put a job's failed items back to pending and run the job again, with the engine and settings it
    was run with; a flag given here overrides the stored one."""
    from framefleet.files import storage
    from framefleet.jobs.run import job_settings
    from framefleet.jobs.run import retry as retry_job

    def start() -> JobResult:
        storage.configure(storage.load_options(storage_options))
        stored = job_settings(job_dir)
        settings = stored.given(**run_flags)
        return _with_display(
            lambda on_progress: retry_job(job_dir, settings, on_progress=on_progress, handle_signals=True),
            mode=progress_mode(progress, quiet=quiet, as_json=as_json),
        )

    with stdout_only_for_the_result(as_json):
        _finish(guarded(start), as_json)


@app.command()
def status(job_dir: JobDir, as_json: options.Json = False) -> None:
    """Items per state, throughput, ETA and workers of a job (running or not)."""
    from framefleet.jobs.view import job_status

    state = guarded(lambda: job_status(job_dir))
    if as_json:
        out.print_json(json.dumps(state.to_dict()))
        return
    out.print(_status_table(state))


@app.command()
def failures(job_dir: JobDir, as_json: options.Json = False) -> None:
    """The failed items of a job with their errors."""
    from framefleet.jobs.view import JobView

    def read() -> list[Failure]:
        with JobView.open(job_dir) as view:
            return view.failures()

    rows = guarded(read)
    if as_json:
        out.print_json(json.dumps([asdict(row) for row in rows]))
        return
    if not rows:
        err.print("no failed items")
        return
    table = Table("input", "attempts", "error")
    for row in rows:
        table.add_row(row.uri, str(row.attempts), row.reason)
    out.print(table)


@app.command()
def records(
    job_dir: JobDir,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write every record as one Parquet file.")] = None,
    overwrite: options.Overwrite = False,
    as_json: options.Json = False,
) -> None:
    """The records a job's ops wrote: rows per op and the columns, or all of them as one Parquet file."""
    from framefleet.jobs.records import load_records, summarize, write_table_atomically

    if output is not None:
        guarded(lambda: options.check_new_file(output, overwrite))
    table = guarded(lambda: load_records(job_dir))
    if output is not None:
        guarded(lambda: write_table_atomically(table, output))
        err.print(f"[green]wrote[/] {escape(str(output))} ({table.num_rows} records)", highlight=False)
    summary = summarize(table)
    if as_json:
        out.print_json(json.dumps(summary))
        return
    view = Table("op", "records", title=f"{summary['rows']} records from {summary['videos']} videos")
    for op, count in summary["ops"].items():
        view.add_row(op, str(count))
    out.print(view)
    out.print("columns: " + ", ".join(f"{name} ({kind})" for name, kind in summary["columns"].items()),
              highlight=False, soft_wrap=True)


@app.command()
def report(
    job_dir: JobDir,
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")] = Path("report.html"),
    overwrite: options.Overwrite = False,
) -> None:
    """Write a self-contained HTML report: totals, per-video metrics, time per stage, failures."""
    from framefleet.jobs.report import render_report
    from framefleet.jobs.view import JobView

    def write() -> None:
        options.check_new_file(output, overwrite)
        with JobView.open(job_dir) as view:
            page = render_report(view)
        try:
            write_text_atomically(output, page)
        except OSError as exc:
            raise OutputError(f"{output}: cannot write the report ({exc.strerror or exc})") from None

    guarded(write)
    err.print(f"[green]wrote[/] {escape(str(output))}", highlight=False)


def _with_display(start, *, mode: str) -> JobResult:
    """Run a job showing its state (items, frames, fps, ETA, workers) as `mode` says: a live line (bar), a line
    every few seconds (lines), JSON objects (json) or nothing (none)."""
    if mode == "none":
        return start(None)
    began = time.monotonic()

    def state(progress: EngineProgress) -> tuple[dict, str]:
        elapsed = time.monotonic() - began
        fps = progress.frames / elapsed if elapsed > 0 else 0.0  # this run's rate
        done = progress.frames_before + progress.frames
        about = "~" if progress.unprobed else ""  # some items are not probed yet: their frames are estimated
        counts = progress.counts
        eta = (progress.frames_expected - done) / fps if fps > 0 and progress.frames_expected > done else None
        line = (f"items {counts.get('done', 0)}/{sum(counts.values())} done, {counts.get('failed', 0)} failed  "
                f"frames {done}/{about}{progress.frames_expected or '?'}  {fps:.1f} fps  "
                f"workers {progress.busy}/{progress.workers}")
        if eta is not None:
            line += f"  ETA {about}{eta:.0f} s"
        if progress.stopping:
            line += "  stopping"
        fields = {"items": counts, "frames": done, "frames_expected": progress.frames_expected,
                  "estimated": bool(progress.unprobed), "fps": round(fps, 2),
                  "eta_seconds": None if eta is None else round(eta, 1), "workers_busy": progress.busy,
                  "workers": progress.workers, "stopping": progress.stopping}
        return fields, line

    if mode != "bar":
        ticker, last = Ticker(mode), []

        def on_progress(progress: EngineProgress) -> None:
            last[:] = [progress]
            ticker.emit(*state(progress))

        result = start(on_progress)
        if last:  # the job's own last word on its items (the engine's last report may come before it)
            ticker.emit(*state(replace(last[0], counts=result.counts)), final=True)
        return result
    with Live(console=err, refresh_per_second=4, transient=True) as live:

        def on_live(progress: EngineProgress) -> None:
            live.update(state(progress)[1])

        return start(on_live)


def _finish(result: JobResult, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps({"job_dir": str(result.job_dir), "counts": result.counts, "frames": result.frames,
                                   "seconds": round(result.seconds, 3), "interrupted": result.interrupted,
                                   "failures": [asdict(f) for f in result.failures], "skipped": result.skipped,
                                   "refused": result.refused, "damaged": [asdict(d) for d in result.damaged],
                                   "runtimes": result.runtimes, "preempted": result.preempted,
                                   "cut_short": result.cut_short,
                                   "adopted": result.adopted, "segmenting": result.segmenting}))
    else:
        counts = result.counts
        adopted = f" ({result.adopted} adopted)" if result.adopted else ""
        err.print(f"{counts['done']} done{adopted}, {counts['failed']} failed, {counts['pending'] + counts['running']} left; "
                  f"{result.frames} frames in {result.seconds:.1f} s (job: {result.job_dir})", highlight=False,
                  soft_wrap=True)
        for failure in result.failures:
            err.print(f"[red]failed[/] {escape(failure.uri)}: {escape(failure.reason)}", highlight=False, soft_wrap=True)
        for uri, reason in result.refused.items():
            err.print(f"[red]refused[/] {escape(repr(uri)[1:-1])}: {escape(reason)}", highlight=False, soft_wrap=True)
        for item in result.damaged:
            err.print(f"[yellow]damaged[/] {escape(item.uri)}: {escape(item.summary)}; kept every frame "
                      "that decodes (--strict refuses such inputs)", highlight=False, soft_wrap=True)
        if result.preempted is not None:
            cut = f", {result.cut_short} segments cut short" if result.cut_short else ""
            err.print(f"[yellow]preempted[/]: {result.preempted} tasks given back{cut}; run the same command again "
                      "to resume", highlight=False)
        elif result.interrupted:
            err.print("[yellow]stopped[/]: run the same command again to resume", highlight=False)
    raise typer.Exit(result.exit_code)


def _status_table(state: JobStatus) -> Table:
    table = Table(show_header=False, box=None)
    for key, value in state.rows():
        table.add_row(f"[bold]{key}", value)
    return table
