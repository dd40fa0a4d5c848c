"""Targets for processes the tests spawn: importable by name in the child, unlike a test module's own."""

from __future__ import annotations

from multiprocessing.connection import Connection


def report_type_name(conn: Connection, received: object) -> None:
    """Send back the type name of what the process received."""
    conn.send(type(received).__name__)
    conn.close()
