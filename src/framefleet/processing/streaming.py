"""Process one video in one process: decode, ops and encode overlapped, memory bounded.

    decode thread ──(bounded queue of futures, in order)──> main thread: encode + carry streams
          └── submits each batch to a pool of op instances (one per inference session) ──┘

Each op instance is set up once (its own model session); instances run batches concurrently (onnxruntime
releases the GIL), and the encoder takes results in decode order. The decode thread only decodes: a
batch's frames become RGB in the op thread that reads them, and the same thread converts the op's output
for the encoder, so colour conversion runs on every session's core rather than on the encoder's. At most
`in_flight` batches exist at any time, whatever the video's length.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np

from framefleet.errors import CorruptVideoError, OptionError, OutputError
from framefleet.jobs.records import RecordsWriter
from framefleet.ops.base import Device, Op
from framefleet.ops.chain import chain_output_size, run_chain, step_names
from framefleet.pipeline import Pipeline
from framefleet.processing.batch import FrameBatch
from framefleet.processing.temporal import (
    BlendStep,
    TemporalBlend,
    flow_size,
    preroll_frames,
    temporal_filter,
)
from framefleet.video import EncodeOptions, VideoFormat, VideoInfo, VideoReader, VideoWriter, probe
from framefleet.video.colour import ColourPlan, check_tags, expects_sdr, plan_colour
from framefleet.video.container import RemoteVideo, VideoSource
from framefleet.video.frames import effective_colorspace
from framefleet.video.remux import CarriedStream

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int], None]


class CutSignal(Protocol):
    """Set from outside while a segment runs, to stop it early (a `threading.Event`, or a
    `multiprocessing.Event` set by the process that started the worker)."""

    def is_set(self) -> bool: ...


INDEX_SLACK = 1
"""Frames an index may list beyond those that decode before the input counts as damaged (an entry without
a picture at the end is common: FFmpeg's AVI muxer, phones' MP4s)."""


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@cache
def gpu_names() -> tuple[str, ...]:
    """The NVIDIA GPUs of this machine, by name (empty without a driver)."""
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], check=False,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(line.strip() for line in result.stdout.splitlines() if line.strip()) if result.returncode == 0 else ()


@dataclass(frozen=True)
class Parallelism:
    """How many op instances run side by side, and the threads each may use."""

    sessions: int
    threads_per_session: int
    device: Device

    @classmethod
    def choose(cls, ops: Sequence[Op], sessions: int | None = None, threads: int | None = None) -> Parallelism:
        """CPU: one single-threaded session per core (measured faster than one session with all
        cores); CUDA: one session. `sessions` overrides the count; threads split the cores unless given."""
        kinds = {op.resolve_device() for op in ops}
        kind = "cuda" if "cuda" in kinds else "cpu"
        cores = available_cores()
        count = sessions if sessions is not None else (cores if kind == "cpu" else 1)
        if count < 1:
            raise OptionError(f"--sessions must be at least 1, got {count}")
        threads = threads or max(1, cores // count)
        return cls(sessions=count, threads_per_session=threads, device=Device(kind=kind, threads=threads))


@dataclass
class StageTimes:
    """Seconds spent so far in each stage of one `process_video` call (summed over threads)."""

    decode: float = 0.0
    ops: float = 0.0
    encode: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)
    """`ops` by step of the op chain."""


@dataclass
class StreamResult:
    """What one `process_video` call did, with where the time went."""

    input: str
    output: str
    frames: int
    width: int
    height: int
    seconds: float
    decode_seconds: float
    """Time spent decoding, and converting frames to what the first op reads (summed over threads)."""
    ops_seconds: float
    """Time summed over op instances while they ran (they run in parallel; waits for one not counted)."""
    encode_seconds: float
    """Time spent converting frames for the encoder, encoding and muxing, including carried streams."""
    sessions: int
    device: str
    carried: list[CarriedStream] = field(default_factory=list)
    records: int = 0
    """Records the ops wrote (0 when no records file was asked for)."""
    decoder: str = "cpu"
    """Where the video was decoded: cpu, or cuda (NVDEC)."""
    encoder: str = ""
    """The video encoder used (libx264, h264_nvenc, ...; empty when no video was written)."""
    temporal: str = "none"
    """How frames were made steady: none, bands or blend (`framefleet.processing.temporal`)."""
    frames_claimed: int | None = None
    """Frames the container's index lists for the video stream (MP4, MOV, AVI; None where it lists none, and
    for a segment)."""
    decode_errors: int = 0
    """Packets the decoder rejected and skipped."""
    cut_short: str | None = None
    """Why the container broke off before its end (None: it did not)."""
    step_seconds: dict[str, float] = field(default_factory=dict)
    """`ops_seconds` by step of the op chain (`step_names`: the op's name, numbered when it comes twice)."""
    frames_dropped: int = 0
    """Decoded frames dropped because their timestamp went back before an earlier frame's."""
    colour: str = ""
    """The input's picture and the output's (`ColourPlan.describe`), e.g. "HDR PQ 10-bit -> SDR 8-bit (tone-mapped)"."""
    runtime: str = ""
    """What ran the ops' models, by step ("style: openvino bf16"; empty when no op runs a model)."""
    cut_at: int | None = None
    """Where a cut stopped the segment (`FrameProcessor.run`'s `cut`): the first timestamp not written."""

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def damaged(self) -> bool:
        """Whether the input was partly damaged: frames missing from its index, rejected packets, a cut."""
        return bool(self.damage())

    def damage(self) -> str:
        """One line on what was damaged ("" when nothing was). One frame fewer than the index lists is not
        damage: FFmpeg's own AVI files and many phones' MP4s index a last entry that holds no picture."""
        parts = []
        if self.frames_claimed is not None and self.frames < self.frames_claimed - INDEX_SLACK:
            parts.append(f"{self.frames} of the {self.frames_claimed} frames its index lists decoded")
        if self.decode_errors:
            parts.append(f"{self.decode_errors} packet{'s' * (self.decode_errors != 1)} rejected by the decoder")
        if self.frames_dropped:
            parts.append(f"{self.frames_dropped} frame{'s' * (self.frames_dropped != 1)} dropped, "
                         "timed before an earlier one")
        if self.cut_short is not None:
            parts.append(f"the container breaks off ({self.cut_short})")
        return "; ".join(parts)


def check_output_path(source: VideoSource, output: Path) -> None:
    """Refuse an output that is the input or that cannot be created, before any work starts."""
    if not isinstance(source, RemoteVideo):
        source = Path(source)
        if output.resolve() == source.resolve() or (output.exists() and output.samefile(source)):
            raise OutputError(f"{output}: the output is the input; choose another output path")
    if output.is_dir():
        name = str(source).rsplit("/", 1)[-1]
        raise OutputError(f"{output}: is a directory; give a file name such as {output / name}")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{output}: cannot create its folder ({exc.strerror or exc})") from None
    if not os.access(output.parent, os.W_OK):
        raise OutputError(f"{output}: its folder is not writable")


def process_video(
    source: VideoSource,
    output: str | os.PathLike[str] | None,
    pipeline: Pipeline | Sequence[Op],
    *,
    sessions: int | None = None,
    video_stream: int | None = None,
    progress: ProgressCallback | None = None,
    records: str | os.PathLike[str] | None = None,
    hw_decode: bool = False,
) -> StreamResult:
    """Run `pipeline` (or just these ops, as `Pipeline.of` makes them one) over every frame of `source` and
    write `output` (atomically), carrying its audio, subtitles and data streams, and the ops' records to the
    Parquet file `records`; either may be None. The pipeline says how to encode, how to remove flicker
    (`framefleet.processing.temporal`), whether to refuse partly damaged inputs (`strict`; else every frame
    that decodes is kept and the result counts the damage) and what an input may claim or cost (`limits`).
    With `hw_decode`, a video whose ops run on CUDA is decoded there too (NVDEC; measured slower than the
    CPU's threaded decoder on a 16-core GPU machine, hence off by default).
    Raises framefleet errors for bad input and output."""
    if not isinstance(pipeline, Pipeline):
        pipeline = Pipeline.of(pipeline)
    info = probe(source, keyframes=False, video_stream=video_stream, limits=pipeline.limits)
    for target in (output, records):
        if target is not None:
            check_output_path(source, Path(target))
    with FrameProcessor(pipeline, sessions=sessions, hw_decode=hw_decode) as processor:
        return processor.run(source, output, encode=pipeline.encode, info=info, progress=progress, records=records)


class FrameProcessor:
    """A chain of ops set up once (one copy per session), that processes videos or segments in turn.

    Workers keep one for their lifetime, so models load once per worker, not once per video.
    """

    def __init__(self, pipeline: Pipeline, *, sessions: int | None = None, threads: int | None = None,
                 hw_decode: bool = False) -> None:
        self.ops = list(pipeline.ops)
        self.temporal = pipeline.temporal
        """none, bands or blend: outputs made steady along the input's motion, in order (a segment pre-rolls
        into it)."""
        self.temporal_strength = pipeline.temporal_strength
        """How steady (0 to 1; None: the mode's default)."""
        self.strict = pipeline.strict
        """Refuse partly damaged inputs (rejected packets, a container that breaks off, frames missing from
        the index) instead of processing what decodes."""
        self.limits = pipeline.limits
        """What an input may claim or cost, checked as it is probed and decoded."""
        self.plan = Parallelism.choose(self.ops, sessions, threads)
        self.hwaccel = "cuda" if hw_decode and self.plan.device.kind == "cuda" else None
        """Where videos are decoded: NVDEC when asked and the ops run on CUDA (else, or where it cannot, the CPU)."""
        self._instances: queue.Queue[list[Op]] = queue.Queue()
        try:
            for _ in range(self.plan.sessions):
                chain = [copy.deepcopy(op) for op in self.ops]
                for op in chain:
                    op.setup(self.plan.device)
                self._instances.put(chain)
            self.runtime = "; ".join(f"{name}: {op.runtime_used()}" for name, op in zip(step_names(chain), chain)
                                     if op.runtime_used())
            """What runs the ops' models, by step ("style: openvino bf16"; "" when none runs one)."""
        except BaseException:
            self.close()
            raise
        # On CUDA, more threads than sessions: the others convert frames while the GPU runs a batch.
        self._threads = (self.plan.sessions if self.plan.device.kind == "cpu"
                         else max(self.plan.sessions, min(available_cores(), 8)))
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="op")
        self._lock = threading.Lock()

    def close(self) -> None:
        """Tear the op instances down."""
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True)
        _tear_down(self._instances)

    def __enter__(self) -> FrameProcessor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(
        self,
        source: VideoSource,
        output: str | os.PathLike[str] | None,
        *,
        encode: EncodeOptions = EncodeOptions(),
        info: VideoInfo | None = None,
        start_pts: int | None = None,
        end_pts: int | None = None,
        carry: bool = True,
        progress: ProgressCallback | None = None,
        records: str | os.PathLike[str] | None = None,
        input_uri: str | None = None,
        cut: CutSignal | None = None,
    ) -> StreamResult:
        """Process frames start_pts <= pts < end_pts (all by default) of `source` into `output` (None: no
        video), and the ops' records into the Parquet file `records` (None: none), naming the input
        `input_uri` (default: `source`) in them.

        `carry` copies the source's other streams (for a whole video); a segment is written without
        them, to be joined later. Timestamps are shifted by the source's start time either way, so
        segments of one video line up. With a temporal mode, a segment that starts inside the video first
        runs the `preroll_frames` frames before its start through the ops and the blend without writing
        them, so it continues the blend of the segment before it instead of starting afresh (pipelines
        that write records start afresh, so their records stay the segment's own).

        `cut`, once set, stops before the next batch to write (once a frame is written): the result's
        `cut_at` is that batch's first timestamp, and what was written is flushed and renamed into place as
        for a whole run (a segment cut on a preemption notice, docs/reliability.md).
        """
        started = time.perf_counter()
        info = info or probe(source, keyframes=False, limits=self.limits)
        timers = StageTimes()
        width, height = chain_output_size(self.ops, info.width, info.height)
        recorder = None if records is None else RecordsWriter(
            Path(records), input_uri=input_uri or str(source), time_base=info.time_base)
        check_tags(color_trc=info.color_trc, color_primaries=info.color_primaries, metadata=info.hdr_metadata,
                   strict=self.strict, name=str(input_uri or source))
        colour = plan_colour(color_trc=info.color_trc, pix_fmt=info.pix_fmt, metadata=info.hdr_metadata,
                             expects_sdr=expects_sdr(self.ops), hdr=encode.hdr)
        with VideoReader(source, video_stream=info.video_index, hwaccel=self.hwaccel, strict=self.strict,
                         limits=self.limits, to_sdr=colour.to_sdr,
                         deep=self._reads_deep(colour, info, str(input_uri or source))) as reader, _video_writer(
                source, output, info, (width, height), encode, carry, colour) as writer:
            blend = (temporal_filter(self.temporal, self.temporal_strength) if writer is not None
                     and any(op.writes_frames for op in self.ops) else None)
            frames, cut_at = self._write_batches(reader, writer, recorder, blend, (width, height), timers,
                                                 start_pts, end_pts, progress, cut)
            claimed = info.video.frames_header if start_pts is None and end_pts is None else None
            if self.strict and claimed and frames < claimed - INDEX_SLACK:
                raise CorruptVideoError(f"{source}: corrupt video, truncated: its index lists {claimed} frames "
                                        f"but only {frames} decode")
            if recorder is not None:
                recorder.close(frames)
            t0 = time.perf_counter()
        timers.encode += time.perf_counter() - t0  # flush, carried streams and rename happen on exit
        result = StreamResult(
            input=str(source), output=str(output) if output is not None else "", frames=frames, width=width,
            height=height, seconds=time.perf_counter() - started, decode_seconds=timers.decode,
            ops_seconds=timers.ops, encode_seconds=timers.encode, step_seconds=dict(timers.steps),
            sessions=self.plan.sessions, device=self.plan.device.kind, runtime=self.runtime,
            carried=writer.carried if writer is not None else [], records=recorder.rows if recorder is not None else 0,
            decoder=reader.decoder, encoder=writer.codec if writer is not None else "",
            temporal=self.temporal if blend is not None else "none", frames_claimed=claimed,
            decode_errors=reader.decode_errors, cut_short=reader.cut_short, frames_dropped=reader.frames_dropped,
            colour=colour.describe(), cut_at=cut_at,
        )
        if result.damaged:
            log.warning("%s: partly damaged input: %s; kept every frame that decodes", source, result.damage())
        return result

    def _write_batches(self, reader: VideoReader, writer: VideoWriter | None, recorder: RecordsWriter | None,
                       blend: TemporalBlend | None, size: tuple[int, int], timers: StageTimes,
                       start_pts: int | None, end_pts: int | None, progress: ProgressCallback | None,
                       cut: CutSignal | None) -> tuple[int, int | None]:
        """Decode the frames start_pts <= pts < end_pts, run the ops (and `blend`, pre-rolled from before
        `start_pts`) and write the outputs of `size` in order, until `cut` is set. Returns the frames written
        and, when cut, the first timestamp not written."""
        frames = 0
        preroll_until = (start_pts if blend is not None and not any(op.writes_records for op in self.ops)
                         else None)
        read_from = (start_pts if preroll_until is None
                     else preroll_until - preroll_frames(blend.strength) * reader.frame_ticks)
        batches = reader.batches(max(op.batch_size for op in self.ops), read_from, end_pts)
        prepare = writer.prepare if writer is not None and blend is None else None
        for batch, prepared, steps in self._overlapped(batches, timers, prepare, blend, size):
            if cut is not None and frames and cut.is_set():
                return frames, int(batch.pts[0])  # leaving the loop stops the decode and the ops behind it
            t0 = time.perf_counter()
            if blend is not None and writer is not None:  # in decode order, before the encoder's conversion
                batch = batch.with_frames(blend(steps, batch.frames))
                if preroll_until is not None and batch.pts[0] < preroll_until:
                    kept = batch.pts >= preroll_until  # pre-roll frames only set the blend up
                    if not kept.any():
                        continue
                    batch = batch.subset(kept)
                prepared = writer.prepare(batch)
            if writer is not None:
                writer.write_prepared(prepared)
            if recorder is not None:
                recorder.write(batch.records)
            timers.encode += time.perf_counter() - t0
            frames += len(batch)
            if progress:
                progress(len(batch))
        return frames, None

    def _reads_deep(self, colour: ColourPlan, info: VideoInfo, name: str) -> bool:
        """Whether the ops get 16-bit RGB: the output keeps more than 8 bits and every op reading pixels takes
        them (`Op.high_bit_depth`); otherwise they get 8 bits, which is logged."""
        if colour.bits <= 8 or colour.to_sdr is not None or self.temporal != "none":
            return False
        shallow = [op.name for op in self.ops if op.input_size(info.width, info.height) is not None
                   and not op.high_bit_depth]
        if shallow:
            log.info("%s: %s work%s on 8-bit pixels, so the %d-bit output holds 8 bits of precision", name,
                     ", ".join(shallow), "s" * (len(shallow) == 1), colour.bits)
        return not shallow

    def _overlapped(self, batches: Iterator[FrameBatch], timers: StageTimes,
                    prepare: Callable[[FrameBatch], list] | None, blend: TemporalBlend | None,
                    size: tuple[int, int]) -> Iterator[tuple[FrameBatch, list, list[BlendStep | None]]]:
        """Yield processed batches in order, with their frames made ready for the encoder by `prepare` and,
        with `blend`, their blend steps for outputs of `size` (planned from the input's motion), while a
        thread decodes ahead and sessions run in parallel."""
        in_flight: queue.Queue[Future | BaseException | None] = queue.Queue(maxsize=2 * self._threads + 1)
        stop = threading.Event()
        feeder = threading.Thread(target=self._feed, args=(batches, in_flight, stop, timers, prepare, blend, size),
                                  daemon=True)
        feeder.start()
        try:
            while (item := in_flight.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item.result()
        finally:
            stop.set()
            _drain(in_flight)
            feeder.join()

    def _run_ops(self, batch: FrameBatch, before: FrameBatch | None, timers: StageTimes,
                 prepare: Callable[[FrameBatch], list] | None, blend: TemporalBlend | None,
                 size: tuple[int, int]) -> tuple[FrameBatch, list, list[BlendStep | None]]:
        """Run the ops on `batch` (`before`: the frame decoded before it, for the blend's motion)."""
        t0 = time.perf_counter()
        first = self.ops[0]
        input_size = first.input_size(*batch.size) if first.when is None else None
        if input_size is not None:  # convert before taking a session, so conversions overlap the model's runs
            batch.frames_at(*input_size)
        steps: list[BlendStep | None] = []
        if blend is not None:  # the input's motion, here rather than in the ordered blend that follows
            small = flow_size(*batch.size)
            steps = blend.plan(None if before is None else before.frames_at(*small, analysis=True)[0],
                               batch.frames_at(*small, analysis=True), *size)
        t1 = time.perf_counter()
        step_times: dict[str, float] = {}
        chain = self._instances.get()
        t2 = time.perf_counter()
        try:
            batch = run_chain(chain, batch, step_times)
        finally:
            t3 = time.perf_counter()
            self._instances.put(chain)
        prepared = prepare(batch) if prepare is not None else []
        with self._lock:
            timers.decode += t1 - t0
            timers.ops += t3 - t2
            for step, seconds in step_times.items():
                timers.steps[step] = timers.steps.get(step, 0.0) + seconds
            timers.encode += time.perf_counter() - t3
        return batch, prepared, steps

    def _feed(self, batches: Iterator[FrameBatch], in_flight: queue.Queue, stop: threading.Event,
              timers: StageTimes, prepare: Callable[[FrameBatch], list] | None, blend: TemporalBlend | None,
              size: tuple[int, int]) -> None:
        """Decode thread: submit batches in order; end with None, or with the exception that stopped it."""
        before = None
        try:
            while not stop.is_set():
                t0 = time.perf_counter()
                batch = next(batches, None)
                with self._lock:  # op threads add their conversions to the same timer
                    timers.decode += time.perf_counter() - t0
                if batch is None:
                    break
                # its last frame (nothing converted yet): where the next batch's motion starts
                last = batch.subset(np.arange(len(batch)) == len(batch) - 1) if blend is not None else None
                future = self._pool.submit(self._run_ops, batch, before, timers, prepare, blend, size)
                before = last
                while not stop.is_set():
                    try:
                        in_flight.put(future, timeout=0.1)
                        break
                    except queue.Full:
                        continue
            in_flight.put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            in_flight.put(exc)


def _video_writer(source: VideoSource, output: str | os.PathLike[str] | None, info: VideoInfo,
                  size: tuple[int, int], encode: EncodeOptions, carry: bool,
                  colour: ColourPlan) -> contextlib.AbstractContextManager[VideoWriter | None]:
    """The video writer of `output` at `size`, the ops' output size, in `colour` (a null context for no
    output)."""
    if output is None:
        return contextlib.nullcontext()
    width, height = size
    video_format = VideoFormat(
        time_base=info.time_base,
        average_rate=info.average_rate,
        colorspace=colour.colorspace or effective_colorspace(info.colorspace, height),
        color_primaries=colour.color_primaries or info.color_primaries,
        color_trc=colour.color_trc or info.color_trc,
        colour=colour,
    )
    return VideoWriter(
        Path(output),
        width=width,
        height=height,
        video_format=video_format,
        options=encode,
        carry_from=source if carry else None,
        carry_skip_index=info.video_index,
        offset=Fraction(info.start_time or 0).limit_denominator(1_000_000),
    )


def _tear_down(instances: queue.Queue[list[Op]]) -> None:
    while not instances.empty():
        for op in instances.get_nowait():
            op.teardown()


def _drain(in_flight: queue.Queue) -> None:
    """Empty the queue so a blocked feeder can finish; cancel work not started."""
    while True:
        try:
            item = in_flight.get_nowait()
        except queue.Empty:
            return
        if isinstance(item, Future):
            item.cancel()
