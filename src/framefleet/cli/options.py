"""Option types shared by `stylize` and `run`, so both commands spell and document them alike."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml

from framefleet.errors import OptionError
from framefleet.pipeline import Pipeline
from framefleet.video.encode import PRESETS

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
    help="Flicker removal: blend (each frame blended with the previous one moved along the motion; the default "
         "for style transfer) or none (every frame on its own; the default for other ops).")]
Preset = Annotated[Optional[str], typer.Option(help=f"x264 preset (default veryfast): {', '.join(PRESETS)}.")]
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")]
StorageOptions = Annotated[Optional[str], typer.Option(
    envvar="FRAMEFLEET_STORAGE_OPTIONS", show_envvar=False,
    help="Object-store credentials and settings: inline JSON or a JSON/YAML file; per-store when keyed by "
         "URL prefix (az://in: {...}). Default: the stores' own environment variables.")]
RemoteRead = Annotated[str, typer.Option(
    help="How workers read object-store videos: auto, range (seek over range requests) or spool (download "
         "to a bounded local cache first).")]


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


def pipeline_flags(op, style, style_image, strength, max_size, device, batch_size, crf, preset,
                   segment_seconds, *, model: str | None = None, params: list[str] | None = None,
                   codec: str | None = None, temporal: str | None = None,
                   strict: bool | None = None, limits: list[str] | None = None) -> dict[str, Any]:
    """The pipeline options of the flags `run`, `plan` and `profile` share (None: not given). `--model`
    means the onnx op; `-p KEY=VALUE` sets any op parameter, `--limit KEY=VALUE` an input limit."""
    flags = {"op": op, "style": style, "style_image": str(style_image) if style_image else None,
             "strength": strength, "max_size": max_size, "device": device, "batch_size": batch_size, "crf": crf,
             "preset": preset, "codec": codec, "temporal": temporal, "segment_seconds": segment_seconds,
             "strict": strict, "limits": limits_of(limits)}
    if model is not None:
        if op not in (None, "onnx"):
            raise OptionError(f"--model runs the onnx op; drop --op {op} or --model")
        flags.update(op="onnx", model=model)
    flags.update(key_values(params, "--param", "threshold=0.4"))
    return flags


def build_pipeline(pipeline_file: Path | None, flags: dict[str, Any]) -> Pipeline:
    """The pipeline of a command: its --pipeline file with the flags given over it, or the flags alone."""
    if pipeline_file is not None:
        return Pipeline.from_yaml(pipeline_file, {k: v for k, v in flags.items() if v is not None})
    return Pipeline.from_options(flags)
