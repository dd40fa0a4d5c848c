#!/usr/bin/env python3
"""Benchmark `framefleet ingest`: parallel uploads to Azure Blob (Azurite) against a plain sequential loop
and against the same ingest on local disk.

Contenders, on N files made here (default 300, sizes log-uniform between 64 KiB and 4 MiB, about 300 MB;
random bytes, so nothing compresses), in nested folders:

  sequential   a plain loop of adlfs `put_file`, one file at a time (no checksums, no listing): what a
               script without framefleet does.
  ingest       `framefleet.files.ingest.ingest(folder, "az://<container>/data", threads=32)`: the default
               mode (the empty destination is listed, every file hashed and uploaded with its Content-MD5).
  local        the same ingest into a local folder (copy to a temporary, rename): the ceiling the disk and
               the hashing set, with no store in the way.

Azurite (tools/azurite, started here through tests/azurite.py) keeps blobs on local disk and runs as one
Node.js process: it is a stand-in for Azure, not a model of its throughput. Every run gets a fresh
container (or folder); each repeat runs the contenders in an order rotated from repeat to repeat. The table
shows medians of files/s and MB/s and the ratios ingest / sequential and ingest / local.

    .venv/bin/python benchmarks/ingest.py                 # 300 files, ~300 MB, 3 repeats
    .venv/bin/python benchmarks/ingest.py --quick         # smoke test: 40 small files, 1 repeat
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from common import DEFAULT_RESULTS, ROOT, load_average, log, machine_info, print_table, write_results

sys.path.insert(0, str(ROOT / "tests"))  # tests/azurite.py: the Azurite harness of the storage tests

CONTENDERS = ("sequential", "ingest", "local")


def make_files(folder: Path, count: int, min_size: int, max_size: int, seed: int) -> int:
    """`count` files of random bytes, sizes log-uniform in [min_size, max_size], in nested folders; the
    total size."""
    rng = random.Random(seed)
    total = 0
    for i in range(count):
        size = int(math.exp(rng.uniform(math.log(min_size), math.log(max_size))))
        path = folder / f"batch-{i % 6}" / f"part-{i % 4}" / f"file-{i:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
        total += size
    return total


def run_sequential(fs: Any, folder: Path, container: str) -> dict[str, Any]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    t0 = time.perf_counter()
    for path in files:
        fs.put_file(str(path), f"{container}/data/{path.relative_to(folder).as_posix()}")
    return {"seconds": time.perf_counter() - t0, "files": len(files), "bytes": sum(p.stat().st_size for p in files)}


def run_ingest(folder: Path, dest: str, threads: int) -> dict[str, Any]:
    from framefleet.files.ingest import ingest

    t0 = time.perf_counter()
    result = ingest(str(folder), dest, threads=threads)
    seconds = time.perf_counter() - t0
    if result.failures or result.copied != result.files:
        first = result.failures[0] if result.failures else {}
        raise RuntimeError(f"ingest did not copy every file: {result.to_dict() | {'failures': [first]}}")
    return {"seconds": seconds, "files": result.copied, "bytes": result.bytes, "seconds_inside": result.seconds}


def summarise(raw: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians of files/s and MB/s per contender; ingest's MB/s over sequential's and over local's."""
    medians = {name: {"files_per_s": statistics.median(r["files"] / r["seconds"] for r in runs),
                      "mb_per_s": statistics.median(r["bytes"] / 1e6 / r["seconds"] for r in runs),
                      "seconds": statistics.median(r["seconds"] for r in runs), "runs": len(runs)}
               for name, runs in raw.items()}
    ingest_mb_s = medians["ingest"]["mb_per_s"]
    return {"medians": medians,
            "ingest_over_sequential": ingest_mb_s / medians["sequential"]["mb_per_s"],
            "ingest_over_local": ingest_mb_s / medians["local"]["mb_per_s"]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark framefleet ingest: parallel uploads to Azurite "
                                                 "against a sequential put_file loop and a local copy.")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 40 files of 16-256 KiB, 1 repeat (figures not valid as results)")
    parser.add_argument("--files", type=int, default=None, help="number of files (default 300; --quick: 40)")
    parser.add_argument("--min-kib", type=int, default=None, help="smallest file in KiB (default 64; --quick: 16)")
    parser.add_argument("--max-kib", type=int, default=None, help="largest file in KiB (default 4096; --quick: 256)")
    parser.add_argument("--threads", type=int, default=32, help="ingest's parallel transfers (default 32)")
    parser.add_argument("--repeats", type=int, default=None, help="runs of each contender (default 3; --quick: 1)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the file sizes and contents (default 1)")
    parser.add_argument("--output", type=Path, default=None,
                        help="results JSON (default benchmarks/results/ingest-<UTC time>.json)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the files, the local copies and Azurite's data go "
                             "(default a temporary folder, removed at the end)")
    args = parser.parse_args(argv)
    q = args.quick
    args.files = args.files if args.files is not None else (40 if q else 300)
    args.min_kib = args.min_kib if args.min_kib is not None else (16 if q else 64)
    args.max_kib = args.max_kib if args.max_kib is not None else (256 if q else 4096)
    args.repeats = args.repeats if args.repeats is not None else (1 if q else 3)
    if min(args.files, args.repeats, args.threads, args.min_kib) < 1 or args.max_kib < args.min_kib:
        parser.error("--files, --repeats, --threads and --min-kib must be at least 1, --max-kib >= --min-kib")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from azurite import Azurite, find_azurite_blob

    from framefleet.files import storage
    if find_azurite_blob() is None:
        print("Azurite is not installed: run `npm ci --prefix tools/azurite` (or make test-storage)", file=sys.stderr)
        return 2
    started_at = dt.datetime.now(dt.timezone.utc)
    output = args.output or DEFAULT_RESULTS / f"ingest-{started_at:%Y%m%dT%H%M%SZ}{'-quick' if args.quick else ''}.json"
    info = machine_info()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="framefleet-bench-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    folder = work / "files"
    shutil.rmtree(folder, ignore_errors=True)
    log(f"writing {args.files} files of {args.min_kib}-{args.max_kib} KiB under {folder}")
    total = make_files(folder, args.files, args.min_kib << 10, args.max_kib << 10, args.seed)
    log(f"{total / 1e6:.1f} MB in all; {info['cores_available']} cores ({info['cpu_model']}); "
        f"{args.repeats} repeat(s), ingest with {args.threads} threads")

    raw: dict[str, list[dict[str, Any]]] = {name: [] for name in CONTENDERS}
    order_log: list[list[str]] = []
    load_before = load_average()
    t_all = time.perf_counter()
    (work / "azurite").mkdir(exist_ok=True)
    with Azurite(location=work / "azurite") as server:
        storage.configure(server.storage_options())
        fs, _ = storage.filesystem("az://bench")
        for rep in range(args.repeats):
            order = list(CONTENDERS[rep % 3:] + CONTENDERS[:rep % 3])
            order_log.append(order)
            for name in order:
                if name == "local":
                    dest = work / "local" / f"r{rep + 1}"
                    result = run_ingest(folder, str(dest), args.threads)
                    shutil.rmtree(dest)
                else:
                    container = server.create_container(f"{name}-r{rep + 1}-{time.time_ns()}")
                    result = (run_sequential(fs, folder, container) if name == "sequential"
                              else run_ingest(folder, f"az://{container}/data", args.threads))
                    server.service_client().delete_container(container)
                result["repeat"] = rep
                raw[name].append(result)
                log(f"repeat {rep + 1}/{args.repeats} {name}: {result['files']} files, {result['bytes'] / 1e6:.1f} MB "
                    f"in {result['seconds']:.2f} s = {result['files'] / result['seconds']:.1f} files/s, "
                    f"{result['bytes'] / 1e6 / result['seconds']:.1f} MB/s")
    total_seconds = time.perf_counter() - t_all
    load_after = load_average()
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)

    summary = summarise(raw)
    medians = summary["medians"]
    ratios = {"sequential": f"ingest / sequential = {summary['ingest_over_sequential']:.2f}",
              "local": f"ingest / local = {summary['ingest_over_local']:.2f}"}
    header = (f"framefleet ingest benchmark - {info['cores_available']} cores, {info['cpu_model']}; "
              f"{args.files} files, {total / 1e6:.1f} MB; median of {args.repeats} run(s)"
              + ("; QUICK RUN: smoke test, not results" if args.quick else ""))
    print()
    print_table(header, ("contender", "files/s", "MB/s", "s", "ratio (MB/s)"),
                [(name, f"{medians[name]['files_per_s']:.1f}", f"{medians[name]['mb_per_s']:.1f}",
                  f"{medians[name]['seconds']:.2f}", ratios.get(name, "-")) for name in CONTENDERS],
                right={1, 2, 3})
    print(f"  sequential: adlfs put_file per file, one at a time; ingest: framefleet.files.ingest, {args.threads} "
          "threads, default mode (listing, MD5 per file, Content-MD5 on each blob); local: the same ingest into "
          "a local folder. Azurite (one Node.js process, blobs on local disk) stands in for Azure.")
    print(f"  load average before/after: {load_before} / {load_after}")

    versions = {dist: version(dist) for dist in ("adlfs", "azure-storage-blob", "fsspec", "aiohttp")}
    azurite_pin = json.loads((ROOT / "tools" / "azurite" / "package.json").read_text())["dependencies"]["azurite"]
    payload = {
        "benchmark": "ingest",
        "started_utc": started_at.isoformat(timespec="seconds"),
        "total_seconds": round(total_seconds, 1),
        "quick": args.quick,
        "args": {"files": args.files, "min_kib": args.min_kib, "max_kib": args.max_kib, "threads": args.threads,
                 "repeats": args.repeats, "seed": args.seed, "total_bytes": total},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": info,
        "versions": {**versions, "azurite": azurite_pin},
        "load_average": {"before": load_before, "after": load_after},
        "order_per_repeat": order_log,
        "summary": summary,
        "raw": raw,
    }
    write_results(output, payload, total_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
