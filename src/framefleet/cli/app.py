"""The `framefleet` Typer app, its global options and the one-line error handling every command uses.

Exit codes: 0 success; 1 internal error (a bug: rerun with --debug for the traceback); 2 a problem with
the input, an option or the output, reported on one line; 3 a job finished with failed items;
130 interrupted.
"""

from __future__ import annotations

import atexit
import faulthandler
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from typer.core import TyperGroup

from framefleet._version import __version__
from framefleet.errors import FramefleetError
from framefleet.util.redact import install_log_redaction, redact


def _without_flag_types(params: list[Any]) -> list[Any]:
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class _Commands(TyperGroup):
    """Typer's rich help shows a flag with a type (`--debug <bool>`) as if it took a value: flags show none."""

    def get_params(self, ctx: typer.Context) -> list[Any]:
        return _without_flag_types(super().get_params(ctx))

    def get_command(self, ctx: typer.Context, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _without_flag_types(command.get_params(ctx))
        return command


app = typer.Typer(
    cls=_Commands,
    help="Run deep-learning models over videos: frame-exact, streaming, with their audio.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console()
_state = {"debug": False}
T = TypeVar("T")


def _version(value: bool) -> None:
    if value:
        out.print(f"framefleet {__version__}")
        raise typer.Exit()


@app.callback()
def global_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens to each stream.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    """framefleet: style transfer (and other models) over whole videos."""
    _state["debug"] = debug
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(console=err, show_path=False)])
    install_log_redaction()  # after the handlers exist: the filter goes on each handler (RichHandler included)
    if hasattr(signal, "SIGUSR1") and sys.__stderr__ is not None:
        # `kill -USR1 PID`: a run that seems stuck prints where each thread is (on the process's own stderr)
        faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)


def _print_traceback() -> None:
    """The current exception's traceback (--debug), redacted like every other line framefleet prints."""
    err.print(redact(traceback.format_exc()), markup=False, highlight=False, soft_wrap=True)


def guarded(action: Callable[[], T]) -> T:
    """Run a command body; print framefleet errors as one line and exit with their code."""
    try:
        return action()
    except FramefleetError as exc:
        if _state["debug"]:
            _print_traceback()
        err.print(f"[bold red]error:[/] {escape(redact(str(exc)))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("[bold red]interrupted[/]")
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, exit 1
        if _state["debug"]:
            _print_traceback()
            raise typer.Exit(1) from None
        err.print(f"[bold red]internal error:[/] {type(exc).__name__}: {escape(redact(str(exc)))} "
                  "(rerun with --debug for the traceback)",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


@contextmanager
def stdout_only_for_the_result(enabled: bool) -> Iterator[None]:
    """For --json: stdout carries the command's result and nothing else. Whatever else reaches file
    descriptor 1 from here on (Ray's raylet messages, a library's prints) goes to stderr; `out` keeps the
    real stdout. Nothing changes where stdout is not the process's own (in tests)."""
    try:
        real = enabled and sys.stdout.fileno() == 1
    except (AttributeError, OSError, ValueError):  # a captured stream has no file descriptor
        real = False
    if not real:
        yield
        return
    sys.stdout.flush()
    kept = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # for the rest of the process: a library's thread may still print after the result
    out.file = kept
    try:
        yield
    finally:
        kept.flush()


def _hung_inline_workers() -> int:
    """`engines.inline.hung_workers`, without importing that engine (and PyAV) where no command ran it."""
    inline = sys.modules.get("framefleet.engines.inline")
    return inline.hung_workers() if inline is not None else 0


def main() -> None:
    """Console-script entry point: like `app()`, but a bad flag or value is one `error:` line too."""
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        err.print("[bold red]interrupted[/]")
        code = 130
    except Exception as exc:
        # Typer's usage errors (bad flag, bad value) carry exit code 2 and a one-line message.
        if getattr(exc, "exit_code", None) != 2 or not hasattr(exc, "format_message"):
            raise
        err.print(f"[bold red]error:[/] {escape(redact(exc.format_message()))} (see --help)", highlight=False, soft_wrap=True)
        code = 2
    code = code if isinstance(code, int) else 0
    hung = _hung_inline_workers()
    if hung:
        # The threads of a hung --engine inline worker cannot be stopped, and the interpreter would wait
        # for them at exit forever: the job is over, so leave without them.
        err.print(f"[yellow]warning:[/] leaving {hung} hung inline worker(s) behind", highlight=False)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _leave(code)


def _leave(code: int) -> NoReturn:
    """End the process with `code`, without the interpreter's teardown the user would wait for (unloading PyAV,
    NumPy, OpenCV and the model runtimes module by module took 0.15-0.4 s after a job, on 2 busy cores). The
    exit handlers still run (logging's flush, multiprocessing's, Ray's shutdown) and the streams are flushed;
    while a thread the interpreter would wait for is alive, it is an ordinary exit."""
    main_thread = threading.main_thread()
    if any(thread is not main_thread and not thread.daemon and thread.is_alive() for thread in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
