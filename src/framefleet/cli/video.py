"""Commands on one video: stylize, probe, styles (a contact sheet) and example (a synthetic clip)."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from framefleet.cli import options
from framefleet.cli.app import app, err, guarded, out
from framefleet.cli.progress import frame_progress, progress_mode
from framefleet.errors import FramefleetError, OutputError, StorageError
from framefleet.settings import DEFAULT_SIDE, InputAccess

if TYPE_CHECKING:
    from framefleet.processing.flicker import FlickerReport
    from framefleet.processing.streaming import StreamResult
    from framefleet.video import VideoInfo


@app.command()
@options.with_pipeline_flags("style", "style_image", "strength", "max_size", "device", "runtime", "precision",
                             "batch_size", "crf", "preset", "codec", "hdr", "temporal", "temporal_strength", "strict",
                             "limit")
def stylize(
    input: Annotated[str, typer.Argument(help="Video to stylize: a path or a store URI (az://, s3://, gs://, https://).",
                                         show_default=False)],
    output: Annotated[str, typer.Option("--output", "-o", help="Output video: a path or a store URI; its extension picks the container (.mp4, .mkv, .mov, .webm, .ts, .avi, ...).",
                                        show_default=False)],
    pipeline_flags: options.PipelineFlags = {},
    sessions: Annotated[Optional[int], typer.Option(help="Model sessions run in parallel (default: one per core on CPU, 1 on GPU).")] = None,
    video_stream: Annotated[Optional[int], typer.Option(help="Index of the video stream to process (default: the one FFmpeg ranks best).")] = None,
    overwrite: options.Overwrite = False,
    storage_options: options.StorageOptions = None,
    remote_read: options.RemoteRead = None,
    as_json: options.Json = False,
    quiet: options.Quiet = False,
    progress: options.ProgressMode = "auto",
) -> None:
    """Restyle every frame of a video; keep its timing, audio and subtitles."""
    from framefleet.files import storage
    from framefleet.files.remote_inputs import InputOpener
    from framefleet.pipeline import Pipeline
    from framefleet.processing.memory_budget import fit_stylize
    from framefleet.processing.streaming import check_output_path, process_video
    from framefleet.video import probe

    def run() -> StreamResult:
        if output.endswith("/"):
            raise OutputError(f"{output}: is a folder; give a file name such as {output}{input.rsplit('/', 1)[-1]}")
        storage.configure(storage.load_options(storage_options))
        source = InputOpener(InputAccess(mode=remote_read or "auto")).open(input)
        if storage.is_local(output):
            if Path(output).is_file() and not overwrite and not _same_file(Path(input), Path(output)):
                raise OutputError(f"{output}: already exists; pass --overwrite to replace it")
        else:
            storage.check_writable(output)
            if not overwrite and _exists_remotely(output):
                raise OutputError(f"{output}: already exists; pass --overwrite to replace it")
        pipeline = Pipeline.from_options(options.pipeline_options(pipeline_flags), source="options")
        info = probe(source, keyframes=False, video_stream=video_stream, limits=pipeline.limits)
        fit = fit_stylize(pipeline, info.width, info.height, sessions,
                          size_fixed=pipeline_flags["max_size"] is not None)
        staging = Path(tempfile.gettempdir()) / "framefleet-staging"
        shown = progress_mode(progress, quiet=quiet, as_json=as_json)
        with storage.staged_output(output, staging) as target, frame_progress(shown) as start_count:
            check_output_path(source, target)  # before the progress display, so an error is a clean line
            advance = start_count(input.rsplit("/", 1)[-1], info.frame_count_header)
            result = process_video(source, target, fit.pipeline,
                                   sessions=fit.sessions, video_stream=info.video_index, progress=advance)
        return dataclasses.replace(result, input=input, output=output)

    result = guarded(run)
    if as_json:
        out.print_json(json.dumps(_result_dict(result)))
        return
    carried = ", ".join(f"{c.kind} {c.codec} {c.action}" for c in result.carried) or "no other streams"
    err.print(
        f"[green]wrote[/] {result.output}: {result.frames} frames {result.width}x{result.height} "
        f"in {result.seconds:.1f} s ({result.fps:.2f} fps, {result.sessions} x {result.device}); {carried}",
        highlight=False, soft_wrap=True,
    )
    if result.damaged:
        err.print(f"[yellow]damaged input[/]: {escape(result.damage())}; kept every frame that decodes "
                  "(--strict refuses such inputs)", highlight=False, soft_wrap=True)


@app.command()
def flicker(
    input: Annotated[str, typer.Argument(help="The original video.", show_default=False)],
    processed: Annotated[str, typer.Argument(help="The same video after processing (e.g. stylized).",
                                             show_default=False)],
    side: Annotated[int, typer.Option(help="Compare frames scaled so their longest side is at most this.")] = DEFAULT_SIDE,
    reference: Annotated[Optional[str], typer.Option(
        help="The same video processed frame by frame (--temporal none): also report the detail PROCESSED "
             "keeps against it (full size), SSIM, and both videos' flicker and its bands side by side.",
        show_default=False)] = None,
    as_json: options.Json = False,
    quiet: options.Quiet = False,
    progress: options.ProgressMode = "auto",
) -> None:
    """Measure flicker: the temporal warping error of PROCESSED along INPUT's motion (lower is steadier)."""
    from framefleet.processing.flicker import measure_flicker
    from framefleet.video import probe

    def measure() -> FlickerReport:
        info = probe(input, keyframes=False)
        for other in (processed, reference):  # a wrong path is one line, before the progress display
            if other is not None:
                probe(other, keyframes=False)
        with frame_progress(progress_mode(progress, quiet=quiet, as_json=as_json)) as start_count:
            advance = start_count(input.rsplit("/", 1)[-1], info.frame_count_header)
            return measure_flicker(input, processed, side=side, reference=reference, progress=advance)

    report = guarded(measure)
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
        return
    out.print(f"{escape(processed)}: warping error mean {report.mean:.5f}, p95 {report.p95:.5f} over "
              f"{len(report.pairs)} frame pairs (frames compared at {report.side} px; lower is steadier)",
              highlight=False, soft_wrap=True)
    if report.reference is None:
        return
    ratios, detail = report.ratios(), report.details_summary()
    out.print(f"against {escape(report.reference)}: flicker {ratios['flicker']:.2f}x (low band {ratios['low']:.2f}x, "
              f"high band {ratios['high']:.2f}x); detail kept {detail['median']:.2f} median, {detail['worst']:.2f} "
              f"worst frame; SSIM {detail['ssim_mean']:.3f} mean", highlight=False, soft_wrap=True)


@app.command("probe")
def probe_command(
    input: Annotated[str, typer.Argument(help="Video to describe: a path or a store URI.", show_default=False)],
    exact: Annotated[bool, typer.Option("--exact", help="Decode every frame to count them exactly.")] = False,
    storage_options: options.StorageOptions = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Show a video's container, streams, rotation, frame rate, frame count and keyframes."""
    from framefleet.files import storage
    from framefleet.files.remote_inputs import InputOpener
    from framefleet.video import probe

    def describe() -> VideoInfo:
        storage.configure(storage.load_options(storage_options))
        return probe(InputOpener(InputAccess(mode="range")).open(input), exact=exact)

    info = guarded(describe)
    if as_json:
        out.print_json(json.dumps(info.to_dict()))
        return
    _print_info(info)


@app.command()
def styles(
    input: Annotated[Path, typer.Argument(help="Video to take a frame from.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Contact sheet image (.png or .jpg).")] = Path("styles.png"),
    at: Annotated[float, typer.Option(help="Take the frame at this many seconds.")] = 0.0,
    tile: Annotated[int, typer.Option(help="Longest side of each tile in pixels.", min=32, max=1024)] = 256,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    overwrite: options.Overwrite = False,
) -> None:
    """Render all 26 built-in styles on a frame of your video, to pick one."""
    from framefleet.processing.contact_sheet import contact_sheet
    from framefleet.video import VideoReader

    def run() -> None:
        options.check_new_file(output, overwrite)
        with VideoReader(input) as reader:
            frame = reader.frame_at(at)
        sheet = contact_sheet(frame, tile=tile, device=device)
        try:
            sheet.save(output)
        except (OSError, ValueError) as exc:
            raise OutputError(f"{output}: cannot write the contact sheet ({exc})") from None

    guarded(run)
    err.print(f"[green]wrote[/] {escape(str(output))}: 26 styles on the frame at {at:g} s; pick one with --style N", highlight=False)


@app.command()
def example(
    output: Annotated[Path, typer.Argument(help="Where to write the example clip.")] = Path("example.mp4"),
    seconds: Annotated[float, typer.Option(help="Length in seconds.")] = 5.0,
    size: Annotated[str, typer.Option(help="WIDTHxHEIGHT.")] = "640x360",
    overwrite: options.Overwrite = False,
) -> None:
    """Write a synthetic example clip (moving shapes and a stereo tone) to try framefleet on."""
    from framefleet.video.synth import ClipSpec, write_clip

    def run() -> None:
        try:
            width, height = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise FramefleetError(f"--size {size!r}: use WIDTHxHEIGHT, e.g. 640x360") from None
        options.check_new_file(output, overwrite)
        rate = Fraction(25)
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            write_clip(output, ClipSpec(width=width, height=height, frames=max(1, round(seconds * rate)), rate=rate,
                                        audio=("aac",)))
        except (OSError, ValueError) as exc:
            output.unlink(missing_ok=True)
            raise OutputError(f"{output}: cannot write an H.264 clip with AAC audio there ({exc}); "
                              "name it .mp4, .mkv or .mov") from None

    guarded(run)
    err.print(f"[green]wrote[/] {escape(str(output))}", highlight=False)


def _exists_remotely(uri: str) -> bool:
    """Whether an object exists; unknown (False) when the credentials may write but not read."""
    from framefleet.files import storage

    try:
        return storage.kind(uri) == "file"
    except StorageError:
        return False


def _same_file(a: Path, b: Path) -> bool:
    return a.exists() and b.exists() and a.samefile(b)


def _result_dict(result: StreamResult) -> dict[str, Any]:
    return {
        "input": result.input,
        "output": result.output,
        "frames": result.frames,
        "width": result.width,
        "height": result.height,
        "seconds": round(result.seconds, 3),
        "fps": round(result.fps, 3),
        "decode_seconds": round(result.decode_seconds, 3),
        "ops_seconds": round(result.ops_seconds, 3),
        "encode_seconds": round(result.encode_seconds, 3),
        "sessions": result.sessions,
        "device": result.device,
        "runtime": result.runtime,
        "decoder": result.decoder,
        "encoder": result.encoder,
        "temporal": result.temporal,
        "frames_claimed": result.frames_claimed,
        "decode_errors": result.decode_errors,
        "cut_short": result.cut_short,
        "frames_dropped": result.frames_dropped,
        "damaged": result.damaged,
        "colour": result.colour,
        "streams": [vars(c) for c in result.carried],
    }


def _print_info(info: VideoInfo) -> None:
    summary = Table(show_header=False, box=None)
    rows = [
        ("file", info.path),
        ("format", info.format_name),
        ("size", f"{info.size_bytes:,} bytes"),
        ("duration", f"{info.duration:.3f} s" if info.duration else "unknown"),
        ("start", f"{info.start_time:.3f} s" if info.start_time is not None else "unknown"),
        ("video stream", str(info.video_index)),
        ("coded size", f"{info.coded_width}x{info.coded_height} {info.pix_fmt}"),
        ("displayed size", f"{info.width}x{info.height} (rotation {info.rotation}, "
                           f"{'mirrored' if info.mirrored else 'not mirrored'})"),
        ("frame rate", f"avg {_rate(info.average_rate)}, real {_rate(info.real_rate)}"),
        ("frames", f"{info.frame_count_header} (header)"
                   + (f", {info.frame_count} (decoded)" if info.frame_count is not None else "")),
    ]
    rows += _colour_rows(info)
    if info.keyframe_times is not None:
        shown = ", ".join(f"{t:.3f}" for t in info.keyframe_times[:12])
        more = f" ... ({len(info.keyframe_times)} in all)" if len(info.keyframe_times) > 12 else ""
        rows.append(("keyframes", f"{shown}{more}"))
    for key, value in rows:
        summary.add_row(f"[bold]{key}", value)
    out.print(summary)
    streams = Table("#", "type", "codec", "details", "start s", "duration s", "language")
    for s in info.streams:
        if s.kind == "video":
            details = f"{s.width}x{s.height} {s.pix_fmt} {_rate(s.average_rate)} fps"
        elif s.kind == "audio":
            details = f"{s.sample_rate} Hz {s.channel_layout or s.channels}"
        else:
            details = ""
        streams.add_row(str(s.index), s.kind, s.codec or "?", details,
                        f"{s.start_time:.3f}" if s.start_time is not None else "",
                        f"{s.duration:.3f}" if s.duration else "", s.language or "")
    out.print(streams)


def _colour_rows(info: VideoInfo) -> list[tuple[str, str]]:
    """What the pixels mean, and what they become through models (style) and through other ops."""
    hdr = info.hdr_metadata
    picture = f"{info.transfer.upper() if info.transfer != 'sdr' else 'SDR'}, {info.bit_depth}-bit"
    if hdr.max_luminance:
        picture += f", mastered to {hdr.max_luminance:g} cd/m2"
    if hdr.max_cll:
        picture += f", MaxCLL {hdr.max_cll} cd/m2"
    if hdr.dolby_vision:
        picture += ", Dolby Vision"
    outputs = info.output_colours()
    rows = [("colour", f"{'HDR ' if info.transfer != 'sdr' else ''}{picture}")]
    if info.transfer != "sdr" or info.bit_depth > 8:
        rows += [("style output", f"{outputs['sdr_ops']}; with --hdr keep: {outputs['sdr_ops_hdr_keep']}"),
                 ("identity output", outputs["other_ops"])]
    return rows


def _rate(rate: Fraction | None) -> str:
    return f"{float(rate):.3f}" if rate else "unknown"

