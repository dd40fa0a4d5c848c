"""The hardware catalogue a plan chooses from: node types, their prices and how they behave.

A YAML file the user edits (framefleet ships an example, never prices as facts):

    currency: USD
    nodes:
      - name: laptop
        this_machine: true          # run here with the local engine (its profile is measured here)
      - name: c16
        cpus: 16
        price_per_hour: 0.68        # on demand
        spot_price_per_hour: 0.21   # omit when the type has no spot offer
        preemptions_per_hour: 0.05  # spot: expected preemptions per node-hour
        preemption_notice: 30       # spot: seconds of warning before a preemption (segments fit in it)
        startup_seconds: 150        # from request to a worker taking tasks
        max_nodes: 40
      - name: g4
        cpus: 8
        gpus: 1
        price_per_hour: 0.53
        profile: gpu-box            # the machine name of an imported profile (`framefleet profile --export`)

A node type without a `profile` is extrapolated from this machine's profile (per CPU core); plans mark it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from framefleet.errors import OptionError
from framefleet.processing.streaming import available_cores
from framefleet.util.yaml_files import read_yaml_mapping

THIS_MACHINE = "this-machine"


@dataclass(frozen=True)
class NodeType:
    """One kind of machine a job may run on."""

    name: str
    cpus: int = 0
    """CPU cores a node offers to workers (this machine: the cores available here)."""
    gpus: int = 0
    price_per_hour: float | None = None
    """On-demand price of one node-hour; None: no price (e.g. a machine already paid for)."""
    spot_price_per_hour: float | None = None
    """Spot / preemptible price; None: the type has no spot offer."""
    preemptions_per_hour: float = 0.0
    """Expected preemptions per spot node-hour."""
    preemption_notice: float | None = None
    """Seconds of warning a spot node gets before it is taken away (Azure and GCP about 30, AWS 120); a plan
    on spot nodes of this type sizes segments to it (`framefleet.plan.segmenting`). None: none given."""
    startup_seconds: float = 0.0
    """From asking for a node to its workers taking tasks (image pull, boot, Ray join)."""
    max_nodes: int = 1
    profile: str | None = None
    """Machine name of the profile to use; None: this machine's."""
    this_machine: bool = False
    """True: the machine running framefleet, with the local engine."""

    def __post_init__(self) -> None:
        where = f"node type {self.name!r}"
        if self.cpus < 1:
            raise OptionError(f"{where}: cpus must be at least 1")
        if self.gpus < 0 or self.max_nodes < 1:
            raise OptionError(f"{where}: gpus must be >= 0 and max_nodes >= 1")
        for name in ("price_per_hour", "spot_price_per_hour"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise OptionError(f"{where}: {name} must be a non-negative number")
        if not (math.isfinite(self.preemptions_per_hour) and self.preemptions_per_hour >= 0):
            raise OptionError(f"{where}: preemptions_per_hour must be a non-negative number")
        notice = self.preemption_notice
        if notice is not None and (isinstance(notice, bool) or not isinstance(notice, (int, float))
                                   or not (math.isfinite(notice) and notice > 0)):
            raise OptionError(f"{where}: preemption_notice must be a positive number of seconds")
        if not (math.isfinite(self.startup_seconds) and self.startup_seconds >= 0):
            raise OptionError(f"{where}: startup_seconds must be a non-negative number")
        if self.this_machine and self.max_nodes != 1:
            raise OptionError(f"{where}: this_machine is one node; drop max_nodes")

    def offers(self) -> list[bool]:
        """The pricing modes to consider: on demand (False) and, when offered, spot (True)."""
        return [False, True] if self.spot_price_per_hour is not None else [False]

    def price(self, spot: bool) -> float | None:
        return self.spot_price_per_hour if spot else self.price_per_hour


@dataclass(frozen=True)
class Catalogue:
    """The node types a plan may use, and the currency their prices are in."""

    nodes: tuple[NodeType, ...]
    currency: str = ""

    @property
    def priced(self) -> bool:
        return any(node.price_per_hour is not None for node in self.nodes)


def this_machine(name: str = THIS_MACHINE, **overrides: Any) -> NodeType:
    """The machine framefleet runs on, as a node type of the local engine."""
    return NodeType(**{"name": name, "cpus": available_cores(), "this_machine": True, **overrides})


def default_catalogue() -> Catalogue:
    """No catalogue given: this machine only, without a price."""
    return Catalogue(nodes=(this_machine(),))


def load_catalogue(path: str | Path) -> Catalogue:
    """Read a hardware catalogue file (see the module docstring); errors name the file and the entry."""
    where = f"--hardware {path}"
    data = read_yaml_mapping(path, "--hardware", "a mapping with a non-empty `nodes` list")
    unknown = set(data) - {"currency", "nodes"}
    if unknown:
        raise OptionError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: currency, nodes")
    if not isinstance(data.get("nodes"), list) or not data["nodes"]:
        raise OptionError(f"{where}: expected a mapping with a non-empty `nodes` list")
    known = {f.name for f in fields(NodeType)}
    nodes: list[NodeType] = []
    for number, entry in enumerate(data["nodes"], start=1):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise OptionError(f"{where}: node {number} needs a name")
        unknown = set(entry) - known
        if unknown:
            raise OptionError(f"{where}: node {entry['name']!r}: unknown key(s) {', '.join(sorted(unknown))}; "
                              f"known: {', '.join(sorted(known))}")
        try:
            if entry.get("this_machine"):
                nodes.append(this_machine(**{k: v for k, v in entry.items() if k != "this_machine"}))
            else:
                nodes.append(NodeType(**entry))
        except TypeError as exc:
            raise OptionError(f"{where}: node {entry['name']!r}: {exc}") from None
        except OptionError as exc:
            raise OptionError(f"{where}: {exc}") from None
    names = [node.name for node in nodes]
    if len(set(names)) != len(names):
        raise OptionError(f"{where}: node names must be unique")
    return Catalogue(nodes=tuple(nodes), currency=str(data.get("currency", "")))
