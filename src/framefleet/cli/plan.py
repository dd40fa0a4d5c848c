"""Commands for planning: `plan` (predict time and cost, choose the knobs) and `profile` (measure, export)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from framefleet.cli import options
from framefleet.cli.app import app, err, guarded, out
from framefleet.cli.progress import progress_mode, step_progress
from framefleet.errors import OptionError, OutputError
from framefleet.settings import DEFAULT_FRAMES, DEFAULT_SAMPLE

if TYPE_CHECKING:
    from framefleet.plan.planner import Plan
    from framefleet.plan.profile import ProfileStore

Inputs = Annotated[list[str], typer.Argument(help="Files, folders, globs or @list.txt: the job's videos.",
                                             show_default=False)]
PipelineFile = Annotated[Optional[Path], typer.Option("--pipeline", help="YAML pipeline; flags override it.")]
SegmentSeconds = Annotated[Optional[float], typer.Option(help="Split videos longer than this (default 20 s).")]
Sample = Annotated[int, typer.Option(help="Probe at most this many videos (chosen at random) to size the job.")]
SampleFrames = Annotated[int, typer.Option(help="Frames per profiling run.")]
Refresh = Annotated[bool, typer.Option("--refresh", help="Measure again even where the profile cache has it.")]
StepProgressMode = Annotated[str, typer.Option(
    "--progress", help="auto (a status line on a terminal, a line per step elsewhere, none with --json), bar, "
                       "lines, json (an object per step) or none; all on stderr.")]
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
    progress: StepProgressMode = "auto",
    overwrite: options.Overwrite = False,
) -> None:
    """Predict how long the job takes and what it costs on each node type, and choose the knobs.

    Probes the inputs, profiles the pipeline on their real frames (cached per machine), and writes
    plan.json for `framefleet run --plan`."""
    from framefleet.files import storage
    from framefleet.plan.hardware import default_catalogue, load_catalogue
    from framefleet.plan.planner import make_plan, parse_duration
    from framefleet.plan.profile import ProfileStore

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
        deadline_seconds = parse_duration(deadline) if deadline is not None else None
        fixed = {k: v for k, v in {"max_size": max_size, "threads": threads,
                                   "batch_size": pipeline_flags["batch_size"]}.items() if v is not None}
        with step_progress(progress_mode(progress, as_json=as_json), "plan") as say:
            result = make_plan(inputs, pipeline, catalogue, store, deadline_seconds=deadline_seconds, budget=budget,
                               objective=objective, sample=sample, sample_frames=sample_frames, refresh=refresh,
                               say=say, fixed=fixed, preemption_notice=preemption_notice)
        result.write(output)
        return result

    result = guarded(work)
    if as_json:
        out.print_json(json.dumps(result.to_dict()))
        return
    out.print(_plan_table(result, out.width))
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
    progress: StepProgressMode = "auto",
) -> None:
    """Measure the pipeline on this machine (every knob setting, at the inputs' resolutions) and cache it.

    Run it on hardware you plan for (e.g. a GPU box) with --export, and give the file to plan --profiles."""

    from framefleet.files import storage
    from framefleet.plan.profile import MachineInfo, ProfileStore, profile_pipeline
    from framefleet.plan.workload import measure_workload

    def work() -> ProfileStore:
        storage.configure(storage.load_options(storage_options))
        flags = options.pipeline_options(pipeline_flags, segment_seconds=segment_seconds)
        pipeline = options.build_pipeline(pipeline_file, flags)
        store = ProfileStore(profile_dir, MachineInfo.here(machine))
        with step_progress(progress_mode(progress, as_json=as_json), "profile") as say:
            say("probing the inputs")
            workload = measure_workload(inputs, segment_seconds=pipeline.segment_seconds, sample=sample)
            profiled = profile_pipeline(workload, pipeline, store, frames=sample_frames, refresh=refresh, say=say)
        notes = [*(f"left out: {reason}" for reason in workload.left_out),
                 *(f"cannot sample {reason}" for reason in profiled.unsampled)]
        if not profiled.covered:
            raise OptionError("nothing could be profiled: " + "; ".join(notes or ["the inputs name no videos"]))
        for note in notes:
            err.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
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


WIDE_TABLE = 150
"""Consoles at least this wide get the plan table a column per field; narrower ones (80 columns, a pipe)
get a column per question (which option, how long, what cost, what quality), with lines within a cell."""


def _plan_table(result: Plan, width: int) -> Table:
    from framefleet.plan.planner import format_seconds

    workload = result.workload
    title = (f"{workload['videos']} videos, {workload['frames']:,} frames ({workload['hours']:.2f} h of video)"
             + (f"; deadline {format_seconds(result.deadline_seconds)}" if result.deadline_seconds else "")
             + (f"; budget {result.budget:g} {result.currency}".rstrip() if result.budget is not None else ""))
    cost_header = f"cost {result.currency}".strip()
    wide = width >= WIDE_TABLE
    headers = (("", "node type", "nodes", "spot", "workers", "knobs", "predicted time", "fps", cost_header,
                "quality", "basis", "deadline") if wide
               else ("", "option", "time", cost_header, "quality", "deadline"))
    table = Table(*headers, title=title, box=box.HEAVY_HEAD if wide else box.SIMPLE, show_lines=not wide)
    for column in table.columns:
        column.overflow = "fold"  # never cut to an ellipsis: a long word goes on in the next line
    for index, option in enumerate(result.options):
        knobs = option["knobs"]
        cells = {
            "mark": "[bold green]*[/]" if index == result.chosen else "",
            "knobs": f"max_size={knobs['max_size'] or 'full'} batch={knobs['batch_size']} threads={knobs['threads']}"
                     + (f"\n{escape(option['runtime'])}" if option.get("runtime") else ""),
            "time": format_seconds(option["wall_seconds"]), "fps": f"{option['fps']:.1f}",
            "cost": "-" if option["cost"] is None else f"{option['cost']:.2f}",
            "quality": "full" if option["quality_psnr"] is None else f"{option['quality_psnr']:.1f} dB",
            "deadline": {None: "", True: "meets", False: "misses"}[option["meets_deadline"]],
        }
        if wide:
            table.add_row(cells["mark"], escape(option["node"]), str(option["nodes"]), "yes" if option["spot"] else "no",
                          str(option["workers"]), cells["knobs"], cells["time"], cells["fps"], cells["cost"],
                          cells["quality"], option["basis"], cells["deadline"])
            continue
        nodes = f"{option['nodes']} node{'s' if option['nodes'] != 1 else ''}{', spot' if option['spot'] else ''}"
        workers = f"{option['workers']} worker{'s' if option['workers'] != 1 else ''}"
        table.add_row(cells["mark"], f"{escape(option['node'])}: {nodes}, {workers}\n{cells['knobs']}\n({option['basis']})",
                      f"{cells['time']}\n{cells['fps']} fps", cells["cost"], cells["quality"], cells["deadline"])
    return table


def _profile_table(machine: str, entries: dict[str, Any]) -> Table:
    from framefleet.plan.runtime_pins import entry_runtime

    table = Table("codec, size", "device", "setting", "s/frame (one worker)", "decode", "ops", "encode",
                  "all cores fps", "temporal s/frame", "quality", title=f"profile of {machine}")
    for key, entry in entries.items():
        if not key.startswith("run|"):
            continue
        _, _, _, codec, size, device = key.split("|")
        ran = entry_runtime(entry, entry["base_threads"])  # what ran the models, under the device
        device = f"{device}\n{escape(ran)}" if ran else device
        for setting, cost in entry["settings"].items():
            psnr = entry["quality_psnr"].get(setting)
            table.add_row(f"{codec} {size}", device, setting.replace("None", "full"), f"{cost['wall']:.4f}",
                          f"{cost['decode']:.4f}", f"{cost['ops']:.4f}", f"{cost['encode']:.4f}",
                          f"{entry['node_fps']:.1f}" if setting == "max_size=None" else "",
                          ", ".join(f"{mode} {step['wall']:.4f}" for mode, step in entry["temporal"].items())
                          if setting == "max_size=None" else "",
                          "full" if psnr is None else f"{psnr:.1f} dB")
    return table
