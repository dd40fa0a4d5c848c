"""The `framefleet` command: see `framefleet --help` and docs/cli.md."""

from framefleet.cli import doctor, ingest, jobs, plan, serve, video  # noqa: F401 - importing registers the commands
from framefleet.cli.app import app, main

__all__ = ["app", "main"]
