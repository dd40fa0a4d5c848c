"""How commands show progress (`--progress`): a redrawn bar for a person at a terminal, a line every few
seconds for a log, one JSON object per line for a wrapper, or nothing. All of it goes to stderr, so stdout
keeps the command's result (`--json`)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from framefleet.cli.app import err
from framefleet.errors import OptionError

MODES = ("auto", "bar", "lines", "json", "none")
SECONDS_BETWEEN = {"lines": 5.0, "json": 1.0}
"""How often lines and JSON objects are printed; `FRAMEFLEET_PROGRESS_SECONDS` overrides both. JSON starts at
once and ends with the last state; lines start after the first interval and end with the last state only
when they started, so a short run prints its result alone and an error stays one line."""


def progress_mode(mode: str, *, quiet: bool = False, as_json: bool = False) -> str:
    """bar, lines, json or none, from `--progress` (auto: a bar on a terminal, lines elsewhere, none with
    --json), `--quiet` (none) and `--json`."""
    if mode not in MODES:
        raise OptionError(f"--progress must be one of {', '.join(MODES)}; got {mode!r}")
    if quiet:
        return "none"
    if mode == "auto":
        return "none" if as_json else "bar" if err.is_terminal else "lines"
    return mode


class Ticker:
    """Prints progress as lines or JSON objects, at most once per `SECONDS_BETWEEN` of the mode."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._every = float(os.environ.get("FRAMEFLEET_PROGRESS_SECONDS") or SECONDS_BETWEEN.get(mode, 0.0))
        self._last = time.monotonic() if mode == "lines" else float("-inf")
        self._printed = False

    def emit(self, fields: dict[str, Any], line: str, *, final: bool = False) -> None:
        """Print `fields` (json) or `line` (lines) when due, and the last state (see `SECONDS_BETWEEN`)."""
        now = time.monotonic()
        if self.mode not in SECONDS_BETWEEN:
            return
        due = now - self._last >= self._every
        if not (due or (final and (self._printed or self.mode == "json"))):
            return
        self._last, self._printed = now, True
        text = json.dumps(fields) if self.mode == "json" else line
        err.print(text, markup=False, highlight=False, soft_wrap=True)


class FrameTicker:
    """A frame counter for `Ticker` modes: call it with frames processed; `finish` prints the last state."""

    def __init__(self, ticker: Ticker, name: str, total: int | None) -> None:
        self._ticker, self._name, self._total = ticker, name, total
        self._done = 0
        self._began = time.monotonic()

    def __call__(self, frames: int) -> None:
        self._done += frames
        self._emit(final=False)

    def finish(self) -> None:
        self._emit(final=True)

    def _emit(self, *, final: bool) -> None:
        elapsed = time.monotonic() - self._began
        fps = self._done / elapsed if elapsed > 0 else 0.0
        eta = (self._total - self._done) / fps if fps > 0 and self._total and self._total > self._done else None
        fields = {"input": self._name, "frames": self._done, "frames_total": self._total, "fps": round(fps, 2),
                  "eta_seconds": None if eta is None else round(eta, 1), "elapsed_seconds": round(elapsed, 1)}
        line = (f"{self._name}: frames {self._done}/{self._total or '?'}  {fps:.1f} fps"
                + (f"  ETA {eta:.0f} s" if eta is not None else ""))
        self._ticker.emit(fields, line, final=final)


FrameProgress = Callable[[str, int | None], Callable[[int], None] | None]
"""Starts counting one video's frames (its name, its frames if known), returning the counter to call."""


@contextmanager
def frame_progress(mode: str) -> Iterator[FrameProgress]:
    """Frame progress shown as `mode` says; nothing is shown until the yielded function starts a count, so an
    error before it is a clean line."""
    if mode == "bar":
        with progress_bar(disable=False) as bar:
            yield lambda name, total: frame_counter(bar, name, total)
        return
    tickers: list[FrameTicker] = []

    def start(name: str, total: int | None) -> Callable[[int], None] | None:
        if mode == "none":
            return None
        tickers.append(FrameTicker(Ticker(mode), name, total))
        return tickers[-1]

    yield start
    for ticker in tickers:
        ticker.finish()


def progress_bar(disable: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("frames"),
        TextColumn("{task.fields[fps]:>6.2f} fps"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err,
        disable=disable,
        transient=True,
    )


def frame_counter(bar: Progress, description: str, total: int | None) -> Callable[[int], None]:
    """A task on `bar` counting frames; the returned callable adds processed frames and updates the rate."""
    task = bar.add_task(description, total=total, fps=0.0)

    def advance(frames: int) -> None:
        bar.advance(task, frames)
        state = bar.tasks[task]
        elapsed = state.elapsed or 0.0
        bar.update(task, fps=state.completed / elapsed if elapsed else 0.0)

    return advance


@contextmanager
def step_progress(mode: str, command: str) -> Iterator[Callable[[str], None]]:
    """Progress of a command made of steps that take seconds each (`plan`, `profile`): yields the function
    that starts a step, given its text. `bar`: the current step on a redrawn status line; `lines`: a line per
    step; `json`: an object per step, `{"command", "step", "text", "elapsed_seconds"}`; `none`: nothing."""
    began = time.monotonic()
    steps = 0

    def fields(text: str) -> dict[str, Any]:
        return {"command": command, "step": steps, "text": text,
                "elapsed_seconds": round(time.monotonic() - began, 1)}

    if mode == "bar":
        heading = ""
        with err.status("", spinner="dots") as status:
            def show(text: str) -> None:
                nonlocal steps, heading
                steps += 1
                if not text.startswith(" "):  # an indented step belongs to the step above it
                    heading, text = text, ""
                shown = heading + (f": {text.strip()}" if text else "")
                status.update(f"[dim]{command}: {escape(shown)}[/] ({fields(shown)['elapsed_seconds']:.0f} s)")

            yield show
        return

    def emit(text: str) -> None:
        nonlocal steps
        steps += 1
        if mode == "json":
            err.print(json.dumps(fields(text)), markup=False, highlight=False, soft_wrap=True)
        elif mode == "lines":
            err.print(text, markup=False, highlight=False, soft_wrap=True)

    yield emit
