"""`framefleet doctor`: what this machine and install give framefleet, and what is broken."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from framefleet.cli import options
from framefleet.cli.app import app, err, out

if TYPE_CHECKING:
    from framefleet.util.doctor import Diagnosis


@app.command()
def doctor(as_json: options.Json = False) -> None:
    """Report versions, model runtimes, CPU features, GPUs, encoders, extras and the cache; exit 2 when
    something is broken (each problem with its fix)."""
    from framefleet.util.doctor import diagnose

    found = diagnose()
    if as_json:
        out.print_json(json.dumps(found.to_dict()))
    else:
        _print(found)
    for problem in found.problems:
        err.print(f"[bold red]error:[/] {escape(problem.what)}; fix: {escape(problem.fix)}", highlight=False,
                  soft_wrap=True)
    if found.problems:
        raise typer.Exit(2)


def _print(found: Diagnosis) -> None:
    table = Table(show_header=False, box=None)
    rows = [(name, version) for name, version in found.versions.items()]
    ort = found.runtimes.get("onnxruntime")
    if ort:
        rows.append(("onnxruntime", f"{ort['version']} ({ort['package']}): {', '.join(ort['providers'])}"))
    ov = found.runtimes.get("openvino")
    rows.append(("openvino", f"{ov['version']}: {', '.join(ov['devices'])}; CPU {', '.join(ov['cpu_capabilities'])}"
                 if ov else "not installed (pip install openvino)"))
    cpu = found.cpu
    rows += [("cpu", f"{cpu['model']}, {cpu['cores']} cores, {cpu['memory_gib']} GiB available"),
             ("cpu features", ", ".join(cpu["features"]) or "none of AVX2, AVX-512, VNNI, BF16, AMX")]
    gpus = found.gpus
    rows.append(("gpus", f"{', '.join(gpus['nvidia'])}; NVENC {'yes' if gpus['nvenc'] else 'no'}, "
                         f"NVDEC {'yes' if gpus['nvdec'] else 'no'}" if gpus["nvidia"] else "none"))
    rows.append(("encoders built in", ", ".join(f"{name} {'yes' if ok else 'no'}" for name, ok in found.encoders.items())))
    rows.append(("extras", ", ".join(f"{name} {'yes' if ok else 'no'}" for name, ok in found.extras.items())))
    rows.append(("cache", f"{found.cache['path']} ({'writable' if found.cache['writable'] else 'NOT writable'})"))
    for key, value in rows:
        table.add_row(f"[bold]{key}", value)
    out.print(table)
