"""The op interface: what a model (or any per-frame step) implements to run inside framefleet.

An op is a dataclass: its fields are its parameters (cheap to build and to pickle, validated in
`__post_init__`), `setup(device)` loads weights on the worker that will run it, `process(batch)` turns a
`FrameBatch` into a `FrameBatch`, `teardown()` frees what `setup` took. Ops declare the `resources` one
instance needs and the `knobs` a planner may turn.

An op returns frames (`writes_frames`: the video output shows them), records (`writes_records`: values
it files with `batch.add_record`, written to Parquet), or both. `when` makes it a conditional step: it
runs only on the frames an earlier op (by name) wrote records about.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from framefleet.ops.names import op_reference
from framefleet.processing.batch import FrameBatch

DeviceKind = Literal["cpu", "cuda"]


@dataclass(frozen=True)
class Resources:
    """What one running instance of an op needs."""

    cpus: float = 1.0
    gpus: float = 0.0
    """Fractions share a GPU between instances (e.g. 0.25)."""


@dataclass(frozen=True)
class Device:
    """Where one instance runs: the device kind, its index, and the CPU threads it may use."""

    kind: DeviceKind = "cpu"
    index: int = 0
    threads: int = 1


@dataclass(frozen=True)
class Knob:
    """A parameter that trades speed against quality, which planners and benchmarks may vary."""

    name: str
    description: str
    values: tuple[Any, ...]
    """Representative settings to try, fastest last where that makes sense."""
    affects_quality: bool


@dataclass(kw_only=True)
class Op:
    """Base class of every op. Subclasses are dataclasses with keyword-only, defaulted fields."""

    name: ClassVar[str] = "op"
    """The op's name in records and in other steps' `when` (a subclass's default: its class name)."""
    knobs: ClassVar[tuple[Knob, ...]] = ()
    writes_frames: ClassVar[bool] = True
    """Whether `process` changes pixels (a pipeline writes video only when one of its ops does)."""
    writes_records: ClassVar[bool] = False
    """Whether `process` files records (a pipeline writes a Parquet file per video when one does)."""
    picture: ClassVar[Literal["sdr", "any"]] = "any"
    """The picture the op expects: "sdr" (a model trained on SDR pictures: HDR input is rendered as an SDR
    screen shows it, `framefleet.video.colour`) or "any" (the op keeps what the pixels mean, HDR included)."""
    high_bit_depth: ClassVar[bool] = False
    """Whether `process` takes uint16 RGB frames (0-65535) as well as uint8, and returns the same type. A
    source of more than 8 bits (10-bit, HDR) reaches a chain whose pixel-reading ops all say so in 16 bits,
    so the output keeps its precision; otherwise in 8 bits."""
    flickers: ClassVar[bool] = False
    """Whether the op's frames flicker when it sees one frame at a time (a pipeline with such an op blends
    its outputs along the motion unless told `temporal: none`)."""

    batch_size: int = 1
    """Frames per `process` call (at most: a pipeline reads batches of its steps' largest batch size, and
    conditional or sampled steps get the selected frames of each)."""
    device: str = "auto"
    """auto, cpu or cuda."""
    when: str | None = None
    """Run only on frames that the earlier op of this name wrote records about (None: every frame)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__

    def __post_init__(self) -> None:
        from framefleet.errors import OptionError

        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise OptionError(f"batch size must be at least 1, got {self.batch_size!r}")
        if self.when is not None and (not isinstance(self.when, str) or not self.when):
            raise OptionError(f"when must name an earlier op, got {self.when!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise OptionError(f"--device must be auto, cpu or cuda; got {self.device!r}")
        if self.device == "cuda" and not self.uses_gpu():
            raise OptionError(f"op {self.name} runs on the CPU only; use --device cpu or auto")

    @classmethod
    def uses_gpu(cls) -> bool:
        """Whether the op can run on a GPU (it chooses its device in `resolve_device`)."""
        return cls.resolve_device is not Op.resolve_device

    @property
    def resources(self) -> Resources:
        """What one instance needs; GPU ops override this."""
        return Resources(cpus=1.0, gpus=0.0)

    def resolve_device(self) -> DeviceKind:
        """The device kind `device` means on this machine (raises when it is unavailable); GPU ops
        override it."""
        return "cpu"

    def setup(self, device: Device) -> None:
        """Load weights and open sessions; runs once per instance on the worker."""

    def process(self, batch: FrameBatch) -> FrameBatch:
        """Transform a batch; must keep the number of frames and their timestamps."""
        raise NotImplementedError

    def teardown(self) -> None:
        """Release what `setup` acquired."""

    def runtime_used(self) -> str | None:
        """After `setup`: the model runtime and precision it chose ("openvino bf16"); None: it runs no model."""
        return None

    def input_size(self, width: int, height: int) -> tuple[int, int] | None:
        """The size at which `process` reads the pixels of width x height frames (`batch.frames_at`), or None
        when it reads none (timestamps only). framefleet converts the decoded frames to that size ahead, in
        one pass, and never converts pixels no op reads: an op that says None and passes frames on lets the
        video go from decoder to encoder without ever becoming RGB."""
        return width, height

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """The size of the frames `process` returns for frames of width x height (ops that resize say so)."""
        return width, height

    def params(self) -> dict[str, Any]:
        """The op's parameters, for descriptions and fingerprints; `op` names it as a pipeline file would."""
        values = dataclasses.asdict(self)
        if values.get("when") is None:
            values.pop("when", None)  # so the fingerprints of pipelines without conditions stay as they were
        return {"op": op_reference(type(self)), **values}

    def model_files(self) -> list[Path]:
        """Files whose content shapes the output (weights, style images): hashed into a job's fingerprint."""
        return []
