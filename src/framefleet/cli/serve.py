"""`framefleet serve`: the service (watch rules, HTTP API, dashboard) in one process."""

from __future__ import annotations

import dataclasses
import errno
import socket
from pathlib import Path
from typing import Annotated, Optional

import typer

from framefleet.cli import options
from framefleet.cli.app import app, err, guarded
from framefleet.errors import OptionError
from framefleet.util.redact import redact


@app.command()
@options.with_run_flags("engine", "workers", "threads_per_worker", "max_attempts", "hang_timeout", "task_timeout",
                        "worker_network", "ray_address", "cpus_per_worker", "gpus_per_worker", "remote_read")
def serve(
    watch: Annotated[Optional[str], typer.Option(help="A folder or store prefix to watch for new videos.")] = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Where --watch writes its outputs.")] = None,
    pipeline_file: Annotated[Optional[Path], typer.Option("--pipeline", help="YAML pipeline of the --watch rule.")] = None,
    interval: Annotated[float, typer.Option(help="Seconds between two listings of --watch.")] = 10.0,
    config: Annotated[Optional[Path], typer.Option(help="YAML service file: watch rules, allowed prefixes, "
                                                        "engine (see docs/service.md).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on; beyond loopback a token is required.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the API and dashboard (0: any free one).", min=0, max=65535)] = 8000,
    token_file: Annotated[Optional[Path], typer.Option(help="File holding the bearer token (default: "
                                                            "$FRAMEFLEET_TOKEN).")] = None,
    state_dir: Annotated[Optional[Path], typer.Option(help="Registry and job ledgers (default "
                                                           "~/.local/state/framefleet).")] = None,
    allow: Annotated[Optional[list[str]], typer.Option(help="A prefix HTTP submissions may read and write "
                                                            "(repeat for several).")] = None,
    allow_op: Annotated[Optional[list[str]], typer.Option(help="A user op (module:Class) HTTP submissions may "
                                                               "name (repeat for several).")] = None,
    run_flags: options.RunFlags = {},
    max_jobs: Annotated[Optional[int], typer.Option(help="Submitted jobs that run at once (default 2).")] = None,
    storage_options: options.StorageOptions = None,
) -> None:
    """Watch folders or prefixes and process new videos as they arrive; serve the HTTP API and dashboard."""

    def start() -> None:
        from framefleet.files import storage
        from framefleet.pipeline import read_pipeline_file
        from framefleet.service.auth import check_listen, load_token
        from framefleet.service.config import ServiceConfig, watch_rule

        storage.configure(storage.load_options(storage_options))
        token = load_token(token_file)
        check_listen(host, token)
        base = ServiceConfig.from_yaml(config) if config is not None else ServiceConfig()
        rules = base.watch
        if watch is not None:
            if output is None:
                raise OptionError("--watch needs --output: where the processed videos go")
            pipeline = read_pipeline_file(pipeline_file) if pipeline_file is not None else {}
            rules = (*rules, watch_rule({"name": "watch", "source": watch, "output": output, "interval": interval,
                                         "pipeline": pipeline}, source="--watch"))
        elif output is not None or pipeline_file is not None:
            raise OptionError("--output and --pipeline belong to --watch; give --watch SRC too")
        overrides = {"state_dir": state_dir, "max_jobs": max_jobs, "allow": tuple(allow) if allow else None,
                     "ops": tuple(allow_op) if allow_op else None, "run": base.run.given(**run_flags)}
        settings = dataclasses.replace(base, watch=rules, **{k: v for k, v in overrides.items() if v is not None})
        _serve(settings, host, port, token)

    guarded(start)


def _serve(config, host: str, port: int, token: str | None) -> None:
    """Listen, hold the state folder, start the service, and only then say it serves; until stopped."""
    try:
        import uvicorn

        from framefleet.service.api import create_app
        from framefleet.service.runtime import Service, lock_state_dir
    except ImportError as exc:
        raise OptionError(f'framefleet serve needs the service extra ({exc.name} is missing): '
                          'pip install "framefleet[service]"') from None
    with _listen(host, port) as sock, lock_state_dir(config.state_dir):
        service = Service(config, say=_say)
        service.start()  # registers the watch rules: only once the port and the state folder are this one's
        # Idle keep-alive connections stay open longer than clients and proxies keep theirs (httpx 5 s, load
        # balancers 60 s), so the client side closes first: a server closing one just as a client reuses it
        # drops that request ("server disconnected without sending a response").
        server = uvicorn.Server(uvicorn.Config(create_app(service, token), log_level="warning", access_log=False,
                                               timeout_keep_alive=75))
        rules = ", ".join(f"{rule.name}: {rule.source} -> {rule.output}" for rule in config.watch) or "none"
        bound = sock.getsockname()[1]
        _say(f"framefleet serving http://{host}:{bound}/ (state in {config.state_dir}; watch rules: {rules})")
        server.run(sockets=[sock])  # its lifespan stops the service, on SIGINT or SIGTERM


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port and listening (connections wait in its backlog until the server runs)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # not a port another socket listens on
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise OptionError(f"cannot listen on {host}:{port}: {_listen_problem(exc)}") from None
    return sock


def _listen_problem(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "address already in use (another framefleet serve? choose --port)"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges; choose --port 1024 or above)"
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return "no such address on this machine (choose --host, e.g. 127.0.0.1 or 0.0.0.0)"
    return f"{exc.strerror or exc} (check --host and --port)"


def _say(line: str) -> None:
    """One line on the serve console, redacted like every line framefleet prints."""
    err.print(redact(line), markup=False, highlight=False, soft_wrap=True)
