"""`framefleet ingest`: upload, download or copy a tree of files with many parallel transfers."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from framefleet.cli import options
from framefleet.cli.app import app, err, guarded, out
from framefleet.cli.progress import Ticker, progress_mode
from framefleet.errors import OptionError

if TYPE_CHECKING:
    from framefleet.files.ingest import Existing, IngestProgress, IngestResult


@app.command()
def ingest(
    src: Annotated[str, typer.Argument(help="A file or folder: a path or a store URI (az://, s3://, gs://).",
                                       show_default=False)],
    dest: Annotated[str, typer.Argument(help="The folder or prefix the files go under, keeping their paths.",
                                        show_default=False)],
    threads: Annotated[int, typer.Option(min=1, help="Files transferred in parallel.")] = 32,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Transfer every file, even complete ones.")] = False,
    skip_existing: Annotated[bool, typer.Option(
        "--skip-existing", help="Skip every file the destination has, whatever its content.")] = False,
    verify: Annotated[bool, typer.Option(
        "--verify", help="Check each transferred file's size and MD5 at the destination.")] = False,
    storage_options: options.StorageOptions = None,
    as_json: options.Json = False,
    quiet: options.Quiet = False,
    progress: options.ProgressMode = "auto",
) -> None:
    """Upload, download or copy a tree of files in parallel; re-run the same command to resume.

    Files already complete at the destination (same size, same MD5 where known) are skipped."""
    from framefleet.files import storage
    from framefleet.files.ingest import ingest as run_ingest

    def start() -> IngestResult:
        if overwrite and skip_existing:
            raise OptionError("--overwrite and --skip-existing contradict each other; pass one of them")
        storage.configure(storage.load_options(storage_options))
        existing: Existing = "overwrite" if overwrite else "skip" if skip_existing else "check"
        stop = threading.Event()
        with _stop_on_signals(stop), _display(progress_mode(progress, quiet=quiet, as_json=as_json)) as on_progress:
            return run_ingest(src, dest, threads=threads, existing=existing, verify=verify,
                              on_progress=on_progress, stop=stop)

    result = guarded(start)
    if as_json:
        out.print_json(json.dumps(result.to_dict()))
    else:
        err.print(f"{result.files} files: {result.copied} copied, {result.skipped} skipped, {result.failed} failed; "
                  f"{result.bytes / 1e6:.1f} MB in {result.seconds:.1f} s ({result.mb_per_s:.1f} MB/s)",
                  highlight=False)
        for failure in result.failures:
            path = failure["path"] if failure["path"].isprintable() else repr(failure["path"])  # one line each
            err.print(f"[red]failed[/] {escape(path)}: {escape(failure['error'])}", highlight=False, soft_wrap=True)
        if result.interrupted:
            err.print("[yellow]stopped[/]: run the same command again to resume", highlight=False)
    raise typer.Exit(result.exit_code)


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set `stop` (no new transfers; those in flight finish); a second SIGINT aborts."""

    def handle(signum: int, _frame: object) -> None:
        if signum == signal.SIGINT and stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def _display(mode: str) -> Iterator[Callable[[IngestProgress], None] | None]:
    """Progress on stderr as `mode` says (files, MB, MB/s: a bar, lines or JSON objects) and the callback that
    moves it; None for none."""
    if mode == "none":
        yield None
        return
    if mode != "bar":
        ticker, last = Ticker(mode), []

        def on_state(state: IngestProgress) -> None:
            last[:] = [state]
            ticker.emit(*_state(state))

        yield on_state
        if last:
            ticker.emit(*_state(last[0]), final=True)
        return
    progress = Progress(
        TextColumn("[bold]ingest"), BarColumn(), MofNCompleteColumn(), TextColumn("files"),
        TextColumn("{task.fields[mb]}"), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
        console=err, transient=True,
    )
    task = progress.add_task("ingest", total=None, mb="", rate="")

    def on_progress(state: IngestProgress) -> None:
        rate = state.bytes_copied / 1e6 / state.seconds if state.seconds > 0 else 0.0
        progress.update(task, total=state.files_total, completed=state.files_done,
                        mb=f"{state.bytes_done / 1e6:.1f}/{state.bytes_total / 1e6:.1f} MB", rate=f"{rate:.1f} MB/s")

    with progress:
        yield on_progress


def _state(state: IngestProgress) -> tuple[dict, str]:
    """An ingest's progress as JSON fields and as a line."""
    rate = state.bytes_copied / 1e6 / state.seconds if state.seconds > 0 else 0.0
    fields = {"files_done": state.files_done, "files_total": state.files_total, "bytes_done": state.bytes_done,
              "bytes_total": state.bytes_total, "mb_per_s": round(rate, 2)}
    return fields, (f"ingest: files {state.files_done}/{state.files_total}  {state.bytes_done / 1e6:.1f}/"
                    f"{state.bytes_total / 1e6:.1f} MB  {rate:.1f} MB/s")
