"""Options of the Ray engine (importable without Ray installed)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RayOptions:
    """Where the Ray cluster is and what each worker asks of it."""

    address: str | None = None
    """The cluster: "auto" (a running cluster this machine belongs to), "ray://HOST:10001" (Ray Client), or
    None to start a private local cluster for this job."""
    cpus_per_worker: float | None = None
    """CPUs each worker (actor) reserves; default: what the op declares."""
    gpus_per_worker: float | None = None
    """GPUs each worker reserves (fractions share a GPU, e.g. 0.25); default: what the op declares."""
    object_store_memory: int | None = None
    """Bytes of object store for a private local cluster (only small results travel through it)."""
