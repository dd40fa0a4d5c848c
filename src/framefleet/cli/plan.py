"""Commands for planning: `plan` (predict time and cost, choose the knobs) and `profile` (measure, export)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from framefleet.cli import options
from framefleet.cli.app import app, err, guarded, out
from framefleet.errors import OptionError, OutputError
from framefleet.files import storage
from framefleet.plan.hardware import default_catalogue, load_catalogue
from framefleet.plan.planner import Plan, format_seconds, make_plan, parse_duration
from framefleet.plan.profile import DEFAULT_FRAMES, MachineInfo, ProfileStore, profile_pipeline
from framefleet.plan.workload import DEFAULT_SAMPLE, measure_workload

Inputs = Annotated[list[str], typer.Argument(help="Files, folders, globs or @list.txt: the job's videos.",
                                             show_default=False)]
PipelineFile = Annotated[Optional[Path], typer.Option("--pipeline", help="YAML pipeline; flags override it.")]
SegmentSeconds = Annotated[Optional[float], typer.Option(help="Split videos longer than this (default 20 s).")]
Sample = Annotated[int, typer.Option(help="Probe at most this many videos (chosen at random) to size the job.")]
SampleFrames = Annotated[int, typer.Option(help="Frames per profiling run.")]
Refresh = Annotated[bool, typer.Option("--refresh", help="Measure again even where the profile cache has it.")]
ProfileDir = Annotated[Optional[Path], typer.Option(help="Where profiles are cached (default ~/.cache/framefleet/profiles).")]


PROFILED_FLAGS = ("op", "param", "model", "style", "style_image", "strength", "device", "runtime",
                  "precision", "batch_size", "crf", "preset")
"""The pipeline flags of `plan` and `profile` (their own `--max-size`, `--threads` fix a knob instead)."""


@app.command()
@options.with_pipeline_flags(*PROFILED_FLAGS)
def plan(
    inputs: Inputs,
    deadline: Annotated[Optional[str], typer.Option(help="Finish within this long: 2h, 90m, 1h30m or seconds.")] = None,
    budget: Annotated[Optional[float], typer.Option(help="Spend at most this much (the catalogue's currency).")] = None,
    hardware: Annotated[Optional[Path], typer.Option(help="Hardware catalogue YAML (default: this machine only).")] = None,
    profiles: Annotated[Optional[list[Path]], typer.Option(
        "--profiles", help="Profiles made on other machines (framefleet profile --export); repeatable.")] = None,
    objective: Annotated[str, typer.Option(help="quality (full-resolution inference first) or cost (cheapest first).")] = "quality",
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the plan.")] = Path("plan.json"),
    pipeline_file: PipelineFile = None,
    pipeline_flags: options.PipelineFlags = {},
    max_size: Annotated[Optional[int], typer.Option(help="Fix the inference size instead of letting the plan choose.")] = None,
    threads: Annotated[Optional[int], typer.Option(help="Fix the op threads per worker instead of letting the plan choose.")] = None,
    segment_seconds: SegmentSeconds = None,
    preemption_notice: options.PreemptionNotice = None,
    sample: Sample = DEFAULT_SAMPLE,
    sample_frames: SampleFrames = DEFAULT_FRAMES,
    refresh: Refresh = False,
    profile_dir: ProfileDir = None,
    storage_options: options.StorageOptions = None,
    as_json: options.Json = False,
    overwrite: options.Overwrite = False,
) -> None:
    """Predict how long the job takes and what it costs on each node type, and choose the knobs.

    Probes the inputs, profiles the pipeline on their real frames (cached per machine), and writes
    plan.json for `framefleet run --plan`."""
    def work() -> Plan:
        if objective not in ("quality", "cost"):
            raise OptionError(f"--objective must be quality or cost, got {objective!r}")
        if not output.parent.is_dir():
            raise OutputError(f"--output {output}: its folder does not exist")
        options.check_new_file(output, overwrite)
        storage.configure(storage.load_options(storage_options))
        flags = options.pipeline_options(pipeline_flags, max_size=max_size, segment_seconds=segment_seconds)
        pipeline = options.build_pipeline(pipeline_file, flags)
        catalogue = load_catalogue(hardware) if hardware is not None else default_catalogue()
        store = ProfileStore(profile_dir)
        for path in profiles or ():
            store.import_file(path)
        result = make_plan(inputs, pipeline, catalogue, store,
                           deadline_seconds=parse_duration(deadline) if deadline is not None else None,
                           budget=budget, objective=objective, sample=sample, sample_frames=sample_frames,
                           refresh=refresh, say=_say(as_json), preemption_notice=preemption_notice,
                           fixed={k: v for k, v in {"max_size": max_size, "threads": threads,
                                                    "batch_size": pipeline_flags["batch_size"]}.items() if v is not None})
        result.write(output)
        return result

    result = guarded(work)
    if as_json:
        out.print_json(json.dumps(result.to_dict()))
        return
    out.print(_plan_table(result))
    for note in result.notes:
        err.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    err.print(f"[green]wrote[/] {output}; run it with: framefleet run INPUT... -o OUTPUT --plan {output}",
              highlight=False, soft_wrap=True)


@app.command()
@options.with_pipeline_flags(*PROFILED_FLAGS)
def profile(
    inputs: Inputs,
    export: Annotated[Optional[Path], typer.Option(help="Also write this machine's profile here, for --profiles elsewhere.")] = None,
    machine: Annotated[Optional[str], typer.Option(help="Name this machine's profile (default: the host name).")] = None,
    pipeline_file: PipelineFile = None,
    pipeline_flags: options.PipelineFlags = {},
    segment_seconds: SegmentSeconds = None,
    sample: Sample = DEFAULT_SAMPLE,
    sample_frames: SampleFrames = DEFAULT_FRAMES,
    refresh: Refresh = False,
    profile_dir: ProfileDir = None,
    storage_options: options.StorageOptions = None,
    as_json: options.Json = False,
) -> None:
    """Measure the pipeline on this machine (every knob setting, at the inputs' resolutions) and cache it.

    Run it on hardware you plan for (e.g. a GPU box) with --export, and give the file to plan --profiles."""

    def work() -> ProfileStore:
        storage.configure(storage.load_options(storage_options))
        flags = options.pipeline_options(pipeline_flags, segment_seconds=segment_seconds)
        pipeline = options.build_pipeline(pipeline_file, flags)
        store = ProfileStore(profile_dir, MachineInfo.here(machine))
        workload = measure_workload(inputs, segment_seconds=pipeline.segment_seconds, sample=sample)
        profile_pipeline(workload, pipeline, store, frames=sample_frames, refresh=refresh, say=_say(as_json))
        if export is not None:
            store.export(export)
        return store

    store = guarded(work)
    entries = store.entries(store.machine.name)
    if as_json:
        out.print_json(json.dumps({"machine": vars(store.machine) | {"gpus": list(store.machine.gpus)},
                                   "entries": entries}))
        return
    out.print(_profile_table(store.machine.name, entries))
    if export is not None:
        err.print(f"[green]wrote[/] {escape(str(export))}", highlight=False)


def _say(quiet: bool):
    return (lambda _: None) if quiet else (lambda text: err.print(f"[dim]{escape(text)}[/]", highlight=False))


def _plan_table(result: Plan) -> Table:
    workload = result.workload
    title = (f"{workload['videos']} videos, {workload['frames']:,} frames ({workload['hours']:.2f} h of video)"
             + (f"; deadline {format_seconds(result.deadline_seconds)}" if result.deadline_seconds else "")
             + (f"; budget {result.budget:g} {result.currency}".rstrip() if result.budget is not None else ""))
    table = Table("", "node type", "nodes", "spot", "workers", "knobs", "predicted time", "fps",
                  f"cost {result.currency}".strip(), "quality", "basis", "deadline", title=title)
    for index, option in enumerate(result.options):
        knobs = option["knobs"]
        quality = "full" if option["quality_psnr"] is None else f"{option['quality_psnr']:.1f} dB"
        deadline = {None: "", True: "meets", False: "misses"}[option["meets_deadline"]]
        table.add_row(
            "[bold green]*[/]" if index == result.chosen else "",
            option["node"], str(option["nodes"]), "yes" if option["spot"] else "no", str(option["workers"]),
            f"max_size={knobs['max_size'] or 'full'} batch={knobs['batch_size']} threads={knobs['threads']}",
            format_seconds(option["wall_seconds"]), f"{option['fps']:.1f}",
            "-" if option["cost"] is None else f"{option['cost']:.2f}", quality, option["basis"], deadline,
        )
    return table


def _profile_table(machine: str, entries: dict[str, Any]) -> Table:
    table = Table("codec, size", "device", "setting", "s/frame (one worker)", "decode", "ops", "encode",
                  "all cores fps", "temporal s/frame", "quality", title=f"profile of {machine}")
    for key, entry in entries.items():
        if not key.startswith("run|"):
            continue
        _, _, _, codec, size, device = key.split("|")
        for setting, cost in entry["settings"].items():
            psnr = entry["quality_psnr"].get(setting)
            table.add_row(f"{codec} {size}", device, setting.replace("None", "full"), f"{cost['wall']:.4f}",
                          f"{cost['decode']:.4f}", f"{cost['ops']:.4f}", f"{cost['encode']:.4f}",
                          f"{entry['node_fps']:.1f}" if setting == "max_size=None" else "",
                          ", ".join(f"{mode} {step['wall']:.4f}" for mode, step in entry["temporal"].items())
                          if setting == "max_size=None" else "",
                          "full" if psnr is None else f"{psnr:.1f} dB")
    return table
