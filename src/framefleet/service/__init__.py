"""`framefleet serve`: watch folders and prefixes for new videos, serve an HTTP API and a dashboard."""
