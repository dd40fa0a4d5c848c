"""Option types the commands share, so they spell and document them alike; the pipeline flags declared once
for `run`, `plan`, `profile` and `stylize` (`with_pipeline_flags`)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, TypeVar

import typer
import yaml

from framefleet.errors import OptionError, OutputError
from framefleet.settings import PRESETS

if TYPE_CHECKING:
    from framefleet.pipeline import Pipeline

Op = Annotated[Optional[str], typer.Option(
    help="The op: style (default), identity, faces, onnx, sample, resize, blur, or your own as module:Class.")]
Param = Annotated[Optional[list[str]], typer.Option(
    "--param", "-p", help="An op parameter as KEY=VALUE (YAML value: 0.5, true, [1, 2]); repeatable.")]
Limit = Annotated[Optional[list[str]], typer.Option(
    "--limit", help="What an input may claim or cost, as KEY=VALUE: max_pixels, max_side, max_frames, max_seconds, "
                    "max_streams, max_decode_errors, memory_mb (a worker's memory cap); repeatable.")]
Model = Annotated[Optional[str], typer.Option(
    help="An ONNX model file to run (the onnx op; declare its inputs with -p, see docs/ops.md).")]
Style = Annotated[Optional[str], typer.Option(help="Built-in style 0-25, or a blend such as 3:0.5,12:0.5 (default 7).")]
StyleImage = Annotated[Optional[Path], typer.Option(help="Any picture to use as the style (overrides --style).")]
Strength = Annotated[Optional[float], typer.Option(help="0 keeps the original, 1 is the full style (default 1).")]
MaxSize = Annotated[Optional[int], typer.Option(help="Longest side the model sees; output keeps the input size.")]
Device = Annotated[Optional[str], typer.Option(help="auto, cpu or cuda (default auto).")]
Runtime = Annotated[Optional[str], typer.Option(
    help="What runs the model: auto (the fastest on this machine that passes the quality gate; default), onnxruntime "
         "or openvino (CPU).")]
Precision = Annotated[Optional[str], typer.Option(
    help="The model's arithmetic: auto (default, with --runtime auto), fp32, bf16 (OpenVINO, on CPUs with "
         "AVX-512 BF16 or AMX) or int8 (OpenVINO, built-in styles).")]
BatchSize = Annotated[Optional[int], typer.Option(help="Frames per model call (default 4).")]
Crf = Annotated[Optional[int], typer.Option(help="H.264 quality: 0-51, lower is better (default 20).")]
Codec = Annotated[Optional[str], typer.Option(
    help="Video encoder: libx264, libx265, libvpx-vp9, libsvtav1, h264_nvenc, hevc_nvenc, or auto (h264_nvenc where "
         "it opens; the default with --device cuda). Default: H.264 (libx264), or VP9 where the output's container "
         "cannot hold H.264 (.webm).")]
Strict = Annotated[bool, typer.Option(
    "--strict", help="Refuse partly damaged inputs (frames missing from the index, packets the decoder rejects, a "
                     "container that breaks off) instead of processing every frame that decodes.")]
Temporal = Annotated[Optional[str], typer.Option(
    help="Flicker removal: bands (colour and brush strokes steadied along the motion, the finest detail kept from "
         "each frame; the default for style transfer), blend (whole frames averaged along the motion: steadier, "
         "softer) or none (every frame on its own; the default for other ops).")]
TemporalStrength = Annotated[Optional[float], typer.Option(
    help="How steady the flicker removal makes the video, 0 (off) to 1 (most); default 0.9 for bands, 0.8 for "
         "blend. Higher is steadier; with blend also softer.")]
Hdr = Annotated[Optional[str], typer.Option(
    help="What HDR video (PQ or HLG) becomes when a model expects SDR pictures, as style transfer does: sdr (rendered "
         "as an SDR screen shows it; SDR BT.709 output, the default) or keep (the styled picture placed back in the "
         "source's HDR, 10-bit). Ops that keep pixels (identity, blur) always keep HDR, in 10 bits.")]
Preset = Annotated[Optional[str], typer.Option(help=f"x264 preset (default veryfast): {', '.join(PRESETS)}.")]
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", "-y", help="Replace the output if it exists.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display (--progress none).")]
ProgressMode = Annotated[str, typer.Option(
    "--progress", help="auto (a bar on a terminal, a line every 5 s elsewhere, none with --json), bar, lines, json "
                       "(one object per line, every second) or none; all on stderr.")]
StorageOptions = Annotated[Optional[str], typer.Option(
    envvar="FRAMEFLEET_STORAGE_OPTIONS", show_envvar=False,
    help="Object-store credentials and settings: inline JSON or a JSON/YAML file; per-store when keyed by "
         "URL prefix (az://in: {...}). Default: the stores' own environment variables.")]


def check_new_file(path: Path, overwrite: bool) -> None:
    """Refuse a file output that names a folder, or that exists unless `overwrite` (as `stylize` does)."""
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name inside it")
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: already exists; pass --overwrite to replace it")


def limits_of(items: list[str] | None) -> dict[str, Any] | None:
    """`--limit KEY=VALUE` flags as the pipeline's `limits` mapping (None: none given)."""
    return key_values(items, "--limit", "max_pixels=8294400") if items else None


def key_values(items: list[str] | None, flag: str, example: str) -> dict[str, Any]:
    """`KEY=VALUE` flags as a mapping, each value read as YAML (0.5, true, [1, 2])."""
    values: dict[str, Any] = {}
    for item in items or []:
        key, equals, text = item.partition("=")
        if not equals or not key.strip():
            raise OptionError(f"{flag} {item!r}: write it as KEY=VALUE, e.g. {flag} {example}")
        try:
            values[key.strip().replace("-", "_")] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            raise OptionError(f"{flag} {item!r}: the value is not valid YAML; quote it") from None
    return values


PIPELINE_FLAGS: dict[str, tuple[Any, Any]] = {
    "op": (Op, None), "param": (Param, None), "model": (Model, None), "style": (Style, None),
    "style_image": (StyleImage, None), "strength": (Strength, None), "max_size": (MaxSize, None),
    "device": (Device, None), "runtime": (Runtime, None), "precision": (Precision, None),
    "batch_size": (BatchSize, None), "crf": (Crf, None), "preset": (Preset, None),
    "codec": (Codec, None), "hdr": (Hdr, None), "temporal": (Temporal, None),
    "temporal_strength": (TemporalStrength, None), "strict": (Strict, False), "limit": (Limit, None),
}
"""The pipeline flags commands share: name -> (its option type, its default)."""

PipelineFlags = Mapping[str, Any]
"""What a command decorated with `with_pipeline_flags` receives: the shared flags given, by name."""

Command = TypeVar("Command", bound=Callable[..., Any])

Engine = Annotated[Optional[str], typer.Option(
    help="local (worker processes here), ray (a Ray cluster) or inline (threads in this process, for debugging an "
         "op); default local, the plan's, or the job's.")]
Workers = Annotated[Optional[int], typer.Option(
    help="Workers (default: one per core, or per worker slot of a Ray cluster).")]
ThreadsPerWorker = Annotated[Optional[int], typer.Option(
    help="Op threads in each worker (default: the cores divided among the workers).")]
MaxAttempts = Annotated[Optional[int], typer.Option(help="Input failures before an item fails (default 3).")]
HangTimeout = Annotated[Optional[float], typer.Option(
    help="Seconds without progress before a worker counts as hung (default 300).")]
TaskTimeout = Annotated[Optional[float], typer.Option(help="Seconds a single task may take (default: no limit).")]
WorkerNetwork = Annotated[Optional[str], typer.Option(
    help="Network for local workers: off (a network namespace of their own, where the platform allows), on, or "
         "auto (off unless a user op or a store needs it; the default).")]
RayAddress = Annotated[Optional[str], typer.Option(
    help="Ray cluster: auto, ray://HOST:10001, or none to start a private one.")]
CpusPerWorker = Annotated[Optional[float], typer.Option(help="Ray: CPUs each worker reserves.")]
GpusPerWorker = Annotated[Optional[float], typer.Option(help="Ray: GPUs each worker reserves (e.g. 0.25).")]
RemoteRead = Annotated[Optional[str], typer.Option(
    help="How workers read object-store videos: auto (the default), range (seek over range requests) or spool "
         "(download to a bounded local cache first).")]
PartsDir = Annotated[Optional[str], typer.Option(
    help="Where segments wait for their join (default: the job directory); a store URI such as az://scratch/job1 "
         "when Ray workers on several machines share no disk.")]

PreemptionNotice = Annotated[Optional[float], typer.Option(
    help="Seconds of warning a spot machine gets before it is taken away: videos are cut into segments whose p90 "
         "time fits in the notice / 1.5 (default: segment_seconds as given).")]

RUN_FLAGS: dict[str, tuple[Any, Any]] = {
    "engine": (Engine, None), "workers": (Workers, None), "threads_per_worker": (ThreadsPerWorker, None),
    "max_attempts": (MaxAttempts, None), "hang_timeout": (HangTimeout, None), "task_timeout": (TaskTimeout, None),
    "worker_network": (WorkerNetwork, None), "ray_address": (RayAddress, None),
    "cpus_per_worker": (CpusPerWorker, None), "gpus_per_worker": (GpusPerWorker, None),
    "remote_read": (RemoteRead, None), "parts_dir": (PartsDir, None),
    "preemption_notice": (PreemptionNotice, None),
}
"""The run-settings flags commands share (`RunSettings.given`'s names): name -> (its option type, its default).
None means "not given": the job's stored settings, a plan or `RunSettings`' defaults hold then."""

RunFlags = Mapping[str, Any]
"""What a command decorated with `with_run_flags` receives: the run-settings flags, by name (None: not given)."""


def with_pipeline_flags(*names: str) -> Callable[[Command], Command]:
    """Declare the shared pipeline flags `names` (of `PIPELINE_FLAGS`) once for a command: they take the
    place of its `pipeline_flags` parameter, and the command receives them there as one mapping."""
    return _with_flags(PIPELINE_FLAGS, "pipeline_flags", names)


def with_run_flags(*names: str) -> Callable[[Command], Command]:
    """Declare the run-settings flags `names` (of `RUN_FLAGS`) once for a command, in place of its
    `run_flags` parameter; apply what it receives with `RunSettings.given(**run_flags)`."""
    return _with_flags(RUN_FLAGS, "run_flags", names)


def _with_flags(table: dict[str, tuple[Any, Any]], parameter_name: str,
                names: tuple[str, ...]) -> Callable[[Command], Command]:
    def decorate(command: Command) -> Command:
        signature = inspect.signature(command, eval_str=True)
        parameters = []
        for parameter in signature.parameters.values():
            if parameter.name != parameter_name:
                parameters.append(parameter)
                continue
            parameters += [inspect.Parameter(name, parameter.kind, annotation=table[name][0],
                                             default=table[name][1]) for name in names]

        def with_flags(**values: Any) -> Any:
            flags = {name: values.pop(name) for name in names}
            return command(**values, **{parameter_name: flags})

        with_flags.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        with_flags.__name__, with_flags.__doc__ = command.__name__, command.__doc__
        return with_flags  # type: ignore[return-value]

    return decorate


def pipeline_options(flags: PipelineFlags, **more: Any) -> dict[str, Any]:
    """The pipeline options of a command's shared flags (None: not given) and `more` (`segment_seconds`,
    ...). `--model` means the onnx op; `-p KEY=VALUE` sets any op parameter, `--limit KEY=VALUE` an input
    limit."""
    given = dict(flags)
    model, params, limits = given.pop("model", None), given.pop("param", None), given.pop("limit", None)
    options = {**given, **more, "limits": limits_of(limits)}
    if options.get("style_image") is not None:
        options["style_image"] = str(options["style_image"])
    options["strict"] = options.get("strict") or None
    if model is not None:
        if options.get("op") not in (None, "onnx"):
            raise OptionError(f"--model runs the onnx op; drop --op {options['op']} or --model")
        options.update(op="onnx", model=model)
    options.update(key_values(params, "--param", "threshold=0.4"))
    return options


def build_pipeline(pipeline_file: Path | None, flags: dict[str, Any]) -> Pipeline:
    """The pipeline of a command: its --pipeline file with the flags given over it, or the flags alone."""
    from framefleet.pipeline import Pipeline

    if pipeline_file is not None:
        return Pipeline.from_yaml(pipeline_file, {k: v for k, v in flags.items() if v is not None})
    return Pipeline.from_options(flags)
