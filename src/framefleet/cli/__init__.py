"""The `framefleet` command: see `framefleet --help` and docs/cli.md."""

import sys

from framefleet.util.processes import start_worker_server

start_worker_server(sys.argv)  # `framefleet run`: its workers' server imports while the command's modules do

from framefleet.cli import doctor, ingest, jobs, plan, serve, video  # noqa: F401 - importing registers the commands
from framefleet.cli.app import app, main

__all__ = ["app", "main"]
