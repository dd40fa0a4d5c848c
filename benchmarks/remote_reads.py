#!/usr/bin/env python3
"""Benchmark how fast framefleet jobs read videos from an object store: Azure Blob (Azurite) vs local disk.

Every job is `framefleet.run` with 2 workers and the identity op (decode + encode only, so that I/O is
what changes between contenders; `--op style --max-size 128` adds a small model), on synthetic clips
(testsrc2 + sine, H.264 crf 18 + AAC, made with the ffmpeg CLI and cached in benchmarks/results/clips)
uploaded to a local Azurite server (tests/azurite.py; `npm ci --prefix tools/azurite` installs it).
Remote inputs are read in one of the two ways of `framefleet.files.remote_inputs.InputAccess`: `range` (the
decoder reads a seekable file doing range reads of 4 MiB blocks) or `spool` (the whole video is
downloaded into a local cache first; a fresh cache folder for every run, else later runs would find the
copies of earlier ones).

  whole     N clips (default 4 x 10 s, 640x360, 25 fps), one segment each. Contenders:
              local        local inputs -> local output (the baseline)
              range        az:// inputs, range reads -> local output
              spool        az:// inputs, spooled -> local output
              range-az     az:// inputs, range reads -> az:// output (staged locally, then uploaded; the
                           table shows the sum of the tasks' `upload_s` from the ledger metrics)
  segments  one long clip (default 40 s, 640x360, a keyframe every second) with segment_seconds 5:
            local vs range vs spool. Each segment task opens the video itself (range: reads its part;
            spool: the first task of a worker to open it downloads it into the cache folder, which both
            workers share), and the join opens it again to copy the audio.

The store is reached through a small counting TCP relay in this process (unless --direct), which
counts the bytes each way and the HTTP requests by method, so the table shows how much each contender
read from the store (HTTP headers included; the listing of the inputs and the probes included) in MiB
and as a multiple of the input size.

Each repeat runs every contender of every case once, in an order rotated from repeat to repeat; the
table shows medians, ratios of medians, and the JSON keeps every raw run with its ledger metrics.

    .venv/bin/python benchmarks/remote_reads.py              # full run, 3 repeats (about 6-8 minutes on
                                                             # 2 cores)
    .venv/bin/python benchmarks/remote_reads.py --quick      # smoke test: tiny sizes, 1 repeat
    .venv/bin/python benchmarks/remote_reads.py --cases segments --op style --max-size 128
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import (  # benchmarks/common.py: helpers shared with stylize.py and jobs.py
    DEFAULT_RESULTS,
    RATE,
    ROOT,
    add_run_arguments,
    load_average,
    log,
    machine_info,
    make_clip,
    parse_choices,
    parse_size,
    print_table,
    write_results,
)

CASES = ("whole", "segments")
CONTENDERS = {"whole": ("local", "range", "spool", "range-az"), "segments": ("local", "range", "spool")}
WORKERS = 2
DEFAULT_CACHE = DEFAULT_RESULTS / "clips"
INPUT_CONTAINER = "inputs"
OUTPUT_CONTAINER = "outputs"
MIB = 1 << 20


# ------------------------------------------------------------------------------- the counting relay


class _RequestParser:
    """Follows the client -> store half of one HTTP/1.1 connection: counts requests by method and the
    bytes asked for by Range / x-ms-range headers. Gives up on a chunked body (never sent by adlfs)."""

    def __init__(self, relay: CountingRelay) -> None:
        self.relay = relay
        self.buffer = b""
        self.body_left = 0
        self.lost = False

    def feed(self, data: bytes) -> None:
        while data and not self.lost:
            if self.body_left:
                n = min(self.body_left, len(data))
                self.body_left -= n
                data = data[n:]
                continue
            self.buffer += data
            data = b""
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > 1 << 16:
                    self.lost = True
                return
            head, data, self.buffer = self.buffer[:end], self.buffer[end + 4:], b""
            lines = head.split(b"\r\n")
            method = lines[0].split(b" ", 1)[0].decode("ascii", "replace")
            headers = {}
            for line in lines[1:]:
                key, _, value = line.partition(b":")
                headers[key.strip().lower()] = value.strip()
            asked = None
            rng = headers.get(b"x-ms-range") or headers.get(b"range")
            if rng and rng.startswith(b"bytes="):
                first, _, last = rng[6:].partition(b"-")
                if first.isdigit() and last.isdigit():
                    asked = int(last) - int(first) + 1
            self.relay.record(method, asked)
            if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
                self.lost = True
                self.relay.record_lost()
                return
            try:
                self.body_left = int(headers.get(b"content-length", b"0"))
            except ValueError:
                self.lost = True
                self.relay.record_lost()


class CountingRelay:
    """A TCP relay on 127.0.0.1 in front of the store, run by an asyncio loop in a thread of this process:
    counts bytes each way, connections, and requests by method (see `_RequestParser`)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port: int | None = None
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task] = set()

    def start(self) -> CountingRelay:
        started = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", 0, limit=4 * MIB))
            self.port = self._server.sockets[0].getsockname()[1]
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="counting-relay", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the counting relay did not start")
        return self

    def close(self) -> None:
        if self._loop is None:
            return

        async def stop() -> None:
            self._server.close()
            for task in list(self._tasks):  # connections the clients left open (keep-alive)
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None

    def record(self, method: str, asked: int | None) -> None:
        with self._lock:
            self._counts[f"requests_{method}"] += 1
            if asked is not None:
                self._counts["ranged_requests"] += 1
                self._counts["bytes_asked_by_range"] += asked

    def record_lost(self) -> None:
        with self._lock:
            self._counts["connections_not_parsed"] += 1

    def _add(self, key: str, n: int) -> None:
        with self._lock:
            self._counts[key] += n

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self._counts)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            await self._relay(client_r, client_w)
        except asyncio.CancelledError:
            pass  # close(): the client left the connection open (keep-alive)
        finally:
            self._tasks.discard(task)

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            store_r, store_w = await asyncio.open_connection("127.0.0.1", self.target_port, limit=4 * MIB)
        except OSError:
            client_w.close()
            return
        self._add("connections", 1)
        parser = _RequestParser(self)

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str,
                       parse: bool) -> None:
            try:
                while data := await reader.read(MIB):
                    self._add(key, len(data))
                    if parse:
                        parser.feed(data)
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass  # one side hung up: close the other
            finally:
                writer.close()

        await asyncio.gather(pump(client_r, store_w, "bytes_up", True), pump(store_r, client_w, "bytes_down", False))


class Store:
    """Azurite (tests/azurite.py) with the two containers, reached directly or through a `CountingRelay`."""

    def __init__(self, location: Path, direct: bool) -> None:
        sys.path.insert(0, str(ROOT / "tests"))
        from azurite import Azurite  # tests/azurite.py

        location.mkdir(parents=True, exist_ok=True)
        self.azurite = Azurite(location=location)
        self.relay: CountingRelay | None = None
        self.direct = direct

    def start(self) -> Store:
        self.azurite.start()
        self.azurite.create_container(INPUT_CONTAINER)
        self.azurite.create_container(OUTPUT_CONTAINER)
        if not self.direct:
            self.relay = CountingRelay(self.azurite.port).start()
        return self

    def close(self) -> None:
        if self.relay is not None:
            self.relay.close()
        self.azurite.close()

    def storage_options(self) -> dict[str, Any]:
        """fsspec options for adlfs: Azurite's development account, at the relay's port unless --direct."""
        options = self.azurite.storage_options()
        if self.relay is not None:
            direct = f"127.0.0.1:{self.azurite.port}/"
            options["connection_string"] = options["connection_string"].replace(
                direct, f"127.0.0.1:{self.relay.port}/")
        return options

    def traffic(self) -> Counter[str]:
        return self.relay.snapshot() if self.relay is not None else Counter()


# ------------------------------------------------------------------------------------------- the clips


def cached_clip(cache: Path, width: int, height: int, seconds: float, gop: int | None) -> Path:
    """A cached testsrc2 + sine clip (x264 veryfast, crf 18): made once, reused by later runs."""
    cache.mkdir(parents=True, exist_ok=True)
    gop_tag = "" if gop is None else f"-gop{gop}"
    path = cache / f"testsrc2-{width}x{height}-{seconds:g}s-veryfast{gop_tag}.mp4"
    if path.exists():
        log(f"reusing {path}")
        return path
    log(f"writing a {seconds:g} s {width}x{height} clip to {path} (ffmpeg; cached)")
    partial = path.with_name(path.stem + ".partial.mp4")
    make_clip(partial, width, height, seconds, gop=gop)
    partial.rename(path)
    return path


def prepare(case: str, root: Path, store: Store, args: argparse.Namespace) -> dict[str, Any]:
    """Local copies under `root`/inputs/<case> and the same files in the store's input container."""
    folder = root / "inputs" / case
    folder.mkdir(parents=True)
    if case == "whole":
        clip = cached_clip(args.cache_dir, args.width, args.height, args.seconds, None)
        names = [f"clip-{i:03d}.mp4" for i in range(args.videos)]
    else:  # a keyframe a second, so that the probe can plan segments of segment_seconds
        clip = cached_clip(args.cache_dir, args.width, args.height, args.long_seconds, RATE)
        names = ["long.mp4"]
    data = clip.read_bytes()
    for name in names:  # items are keyed by path: copies are distinct items
        shutil.copyfile(clip, folder / name)
        store.azurite.upload_blob(INPUT_CONTAINER, f"{case}/{name}", data)
    return {"local": str(folder), "remote": f"az://{INPUT_CONTAINER}/{case}", "files": len(names),
            "bytes": len(data) * len(names), "clip": str(clip)}


# ----------------------------------------------------------------------------------------------- a job


def pipeline_options(case: str, args: argparse.Namespace) -> dict[str, Any]:
    op: dict[str, Any] = {"op": "identity"}
    if args.op == "style":
        op = {"op": "style", "style": args.style, "max_size": args.max_size}
    # whole: one segment per clip (this case is about many videos)
    segment_seconds = max(3600.0, 2 * args.seconds) if case == "whole" else args.segment_seconds
    return {**op, "segment_seconds": segment_seconds}


def run_case(case: str, contender: str, inputs: dict[str, Any], store: Store, work: Path, tag: str,
             args: argparse.Namespace) -> dict[str, Any]:
    """framefleet.run of one contender into fresh folders (and a fresh output prefix in the store)."""
    import framefleet
    from framefleet.settings import InputAccess

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    source = inputs["local"] if contender == "local" else inputs["remote"]
    access = InputAccess()
    if contender != "local":
        mode = contender.split("-")[0]
        access = InputAccess(mode=mode, cache_dir=str(work / "cache"))  # a fresh spool cache every run
    output = f"az://{OUTPUT_CONTAINER}/{tag}" if contender == "range-az" else str(work / "out")
    pipeline = framefleet.Pipeline.from_options(pipeline_options(case, args))
    before = store.traffic()
    t0 = time.perf_counter()
    settings = framefleet.RunSettings(input_access=access).given(workers=WORKERS)
    result = framefleet.run(framefleet.JobSpec([source], output, pipeline, settings), job_dir=work / "job",
                            storage_options=store.storage_options())
    wall = time.perf_counter() - t0
    traffic = store.traffic()
    traffic.subtract(before)
    if result.failures or result.interrupted:
        first = result.failures[0] if result.failures else {}
        raise RuntimeError(f"the job did not finish cleanly: counts {result.counts}, "
                           f"first failure {first.get('uri')}: {first.get('error')}")
    cached = sorted(p.stat().st_size for p in (work / "cache").glob("*") if p.is_file()) \
        if (work / "cache").is_dir() else []
    return {
        "contender": contender,
        "output": output,
        "frames": result.frames,
        "seconds": wall,
        "seconds_inside_run": result.seconds,
        "counts": result.counts,
        "ledger": ledger_stats(work / "job"),
        "store": dict(traffic) if store.relay is not None else None,
        "spool_cache_files": cached,
    }


def ledger_stats(job_dir: Path) -> dict[str, Any]:
    """Sums of the task metrics (upload_s among them) and the attempt time by task kind."""
    from framefleet.jobs.directory import open_ledger
    from framefleet.jobs.reads import LedgerReads

    ledger = open_ledger(job_dir)
    try:
        attempts = LedgerReads(ledger).attempts()
        metrics = LedgerReads(ledger).task_metrics()
    finally:
        ledger.close()
    held: Counter[str] = Counter()
    for a in attempts:
        if a["ended"] is not None:
            held[a["kind"]] += a["ended"] - a["started"]
    sums = {key: sum(m[key] for m in metrics)
            for key in ("seconds", "decode_s", "ops_s", "encode_s", "upload_s", "bytes_in", "bytes_out")}
    return {
        "tasks": dict(Counter(a["kind"] for a in attempts if a["outcome"] == "done")),
        "outcomes": dict(Counter(a["outcome"] for a in attempts)),
        "segments": sum(1 for a in attempts if a["kind"] == "segment" and a["outcome"] == "done"),
        "metrics_sum": sums,
        "attempt_seconds_by_kind": dict(held),
    }


# ------------------------------------------------------------------------------------------ the summary


def median(runs: list[dict], key) -> float | None:
    values = [key(r) for r in runs]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(raw: dict[str, dict[str, list[dict]]], inputs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for case in CASES:
        if case not in raw:
            continue
        size = inputs[case]["bytes"]
        local_fps = median(raw[case].get("local", []), lambda r: r["frames"] / r["seconds"])
        for name in CONTENDERS[case]:
            runs = raw[case].get(name)
            if not runs:
                continue
            fps = median(runs, lambda r: r["frames"] / r["seconds"])
            down = median(runs, lambda r: r["store"]["bytes_down"] if r["store"] else None)
            rows.append({
                "case": case,
                "contender": name,
                "runs": len(runs),
                "frames": runs[0]["frames"],
                "segments": median(runs, lambda r: r["ledger"]["segments"]),
                "wall_s": median(runs, lambda r: r["seconds"]),
                "fps": fps,
                "fps_ratio_to_local": fps / local_fps if fps and local_fps else None,
                "upload_s_sum": median(runs, lambda r: r["ledger"]["metrics_sum"]["upload_s"]),
                "decode_s_sum": median(runs, lambda r: r["ledger"]["metrics_sum"]["decode_s"]),
                "probe_s_sum": median(runs, lambda r: r["ledger"]["attempt_seconds_by_kind"].get("probe", 0.0)),
                "join_s_sum": median(runs, lambda r: r["ledger"]["attempt_seconds_by_kind"].get("join", 0.0)),
                "store_bytes_down": down if name != "local" else None,
                "store_bytes_down_per_input_byte": down / size if down is not None and name != "local" else None,
                "store_bytes_up": median(runs, lambda r: r["store"]["bytes_up"] if r["store"] else None)
                if name != "local" else None,
                "store_get_requests": median(runs, lambda r: r["store"].get("requests_GET", 0) if r["store"]
                                             else None) if name != "local" else None,
                "store_requests": median(runs, lambda r: sum(v for k, v in r["store"].items()
                                                             if k.startswith("requests_")) if r["store"]
                                         else None) if name != "local" else None,
                "spool_cache_files": median(runs, lambda r: len(r["spool_cache_files"])) if name == "spool"
                else None,
            })
    return rows


def table_rows(rows: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    out = []
    for r in rows:
        down = "-" if r["store_bytes_down"] is None else (
            f"{r['store_bytes_down'] / MIB:.1f} ({r['store_bytes_down_per_input_byte']:.2f}x)")
        requests = "-" if r["store_requests"] is None else f"{r['store_requests']:.0f} ({r['store_get_requests']:.0f})"
        out.append((r["case"], r["contender"], num(r["wall_s"], ".2f"), num(r["fps"], ".1f"),
                    num(r["fps_ratio_to_local"], ".3f"), num(r["probe_s_sum"], ".2f"),
                    num(r["upload_s_sum"], ".2f") if r["contender"] == "range-az" else "-",
                    down, requests))
    return out


# -------------------------------------------------------------------------------------------- the run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark framefleet jobs reading videos from an object store (Azurite): local disk vs "
                    "range reads vs spooled copies, and az:// outputs. Prints a table per case, writes JSON.",
    )
    add_run_arguments(parser, CASES)
    all_contenders = sorted({n for names in CONTENDERS.values() for n in names})
    parser.add_argument("--contenders", default=",".join(all_contenders),
                        help=f"comma-separated contenders to run where a case has them (default all: "
                             f"{','.join(all_contenders)}; without local there is no ratio)")
    parser.add_argument("--videos", type=int, default=None, help="whole: number of clips (default 4; --quick: 2)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="whole: length of each clip (default 10; --quick: 2)")
    parser.add_argument("--size", default=None, help="clip size (default 640x360; --quick: 320x180)")
    parser.add_argument("--long-seconds", type=float, default=None,
                        help="segments: length of the long clip (default 40; --quick: 6)")
    parser.add_argument("--segment-seconds", type=float, default=None,
                        help="segments: the pipeline's segment_seconds (default 5; --quick: 2)")
    parser.add_argument("--op", choices=("identity", "style"), default="identity",
                        help="the op of every job (default identity: I/O is what is measured)")
    parser.add_argument("--max-size", type=int, default=128,
                        help="--op style: longest side the model sees (default 128)")
    parser.add_argument("--style", default="7", help="--op style: built-in style (default 7)")
    parser.add_argument("--direct", action="store_true",
                        help="reach Azurite directly, without the counting relay (no byte counts)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                        help="where the clips are kept between runs (default benchmarks/results/clips)")
    parser.add_argument("--output", type=Path, default=None,
                        help="results JSON (default benchmarks/results/remote-reads-<UTC time>.json)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where inputs, Azurite's data and job outputs go "
                             "(default a temporary folder, removed at the end)")
    parser.add_argument("--keep", action="store_true", help="keep every job's output and job folder")
    args = parser.parse_args(argv)
    q = args.quick
    args.repeats = args.repeats if args.repeats is not None else (1 if q else 3)
    args.videos = args.videos if args.videos is not None else (2 if q else 4)
    args.seconds = args.seconds if args.seconds is not None else (2.0 if q else 10.0)
    args.long_seconds = args.long_seconds if args.long_seconds is not None else (6.0 if q else 40.0)
    args.segment_seconds = args.segment_seconds if args.segment_seconds is not None else (2.0 if q else 5.0)
    try:
        _, args.width, args.height = parse_size(args.size or ("320x180" if q else "640x360"))
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    args.case_list = parse_choices(parser, args.cases, CASES, "case")
    args.contender_list = parse_choices(parser, args.contenders, all_contenders, "contender")
    if min(args.repeats, args.videos) < 1:
        parser.error("--repeats and --videos must be at least 1")
    if min(args.seconds, args.long_seconds, args.segment_seconds) <= 0:
        parser.error("--seconds, --long-seconds and --segment-seconds must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))
    from azurite import find_azurite_blob

    if find_azurite_blob() is None:
        log("Azurite is not installed: run  npm ci --prefix tools/azurite")
        return 2
    started_at = dt.datetime.now(dt.timezone.utc)
    output = args.output or DEFAULT_RESULTS / (
        f"remote-reads-{started_at:%Y%m%dT%H%M%SZ}{'-quick' if args.quick else ''}.json")
    if args.repeats < 3:
        log(f"note: {args.repeats} repeat(s); BENCHMARKS.md asks for at least 3 for figures worth quoting")
    info = machine_info()
    log(f"{info['cores_available']} cores ({info['cpu_model']}); cases {', '.join(args.case_list)}; "
        f"{args.repeats} repeat(s); op {args.op}; store {'direct' if args.direct else 'through the counting relay'}")

    work_root = args.workdir or Path(tempfile.mkdtemp(prefix="framefleet-bench-remote-"))
    work_root.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work_root / "inputs", ignore_errors=True)
    shutil.rmtree(work_root / "azurite", ignore_errors=True)
    store = Store(work_root / "azurite", args.direct)
    raw: dict[str, dict[str, list[dict]]] = {}
    order_log: list[list[str]] = []
    inputs: dict[str, dict[str, Any]] = {}
    try:
        store.start()
        load_before = load_average()
        t_all = time.perf_counter()
        for case in args.case_list:
            inputs[case] = prepare(case, work_root, store, args)
            log(f"{case}: {inputs[case]['files']} file(s), {inputs[case]['bytes'] / MIB:.2f} MiB in all, "
                f"local and in az://{INPUT_CONTAINER}/{case}")

        for rep in range(args.repeats):
            order = []
            for case in args.case_list:
                names = [n for n in CONTENDERS[case] if n in args.contender_list]
                if not names:
                    continue
                shift = rep % len(names)  # rotate so no contender always runs first
                for name in names[shift:] + names[:shift]:
                    order.append(f"{case}/{name}")
                    work = work_root / "runs" / case / f"{name}-r{rep + 1}"
                    result = run_case(case, name, inputs[case], store, work, f"{case}-{name}-r{rep + 1}", args)
                    result["repeat"] = rep
                    raw.setdefault(case, {}).setdefault(name, []).append(result)
                    traffic = result["store"]
                    extra = ""
                    if traffic is not None and name != "local":
                        extra = (f", {traffic.get('bytes_down', 0) / MIB:.1f} MiB down / "
                                 f"{traffic.get('bytes_up', 0) / MIB:.1f} MiB up, "
                                 f"{traffic.get('requests_GET', 0)} GETs")
                    if name == "range-az":
                        extra += f", upload_s {result['ledger']['metrics_sum']['upload_s']:.2f}"
                    if name == "spool":
                        extra += f", {len(result['spool_cache_files'])} file(s) in the spool cache"
                    log(f"repeat {rep + 1}/{args.repeats} {case} {name}: {result['frames']} frames, "
                        f"{result['ledger']['segments']} segment(s) in {result['seconds']:.2f} s = "
                        f"{result['frames'] / result['seconds']:.1f} fps{extra}")
                    if not args.keep:
                        shutil.rmtree(work, ignore_errors=True)
                    gc.collect()
            order_log.append(order)
        total_seconds = time.perf_counter() - t_all
        load_after = load_average()
    finally:
        store.close()
        if args.keep or args.workdir:
            log(f"kept inputs and outputs under {work_root}")
        else:
            shutil.rmtree(work_root, ignore_errors=True)
    rows = summarise(raw, inputs)

    columns = ("case", "contender", "wall s", "fps", "fps / local", "probe s", "upload s",
               "MiB from store (x input)", "requests (GETs)")
    size = f"{args.width}x{args.height}"
    op = "identity" if args.op == "identity" else f"style {args.style}, max_size {args.max_size}"
    describe = {
        "whole": f"{args.videos} x {args.seconds:g} s {size} clips ({inputs.get('whole', {}).get('bytes', 0) / MIB:.1f} "
                 "MiB), one segment each",
        "segments": f"one {args.long_seconds:g} s {size} clip ({inputs.get('segments', {}).get('bytes', 0) / MIB:.1f} "
                    f"MiB), a keyframe a second, segment_seconds {args.segment_seconds:g}",
    }
    for case in args.case_list:
        header = (f"\nframefleet remote reads - {case}: {describe[case]}; op {op}, {WORKERS} workers; "
                  f"{info['cores_available']} cores; median of {args.repeats} alternating run(s)"
                  + ("; QUICK RUN: smoke test, not results" if args.quick else ""))
        case_rows = table_rows([r for r in rows if r["case"] == case])
        if case_rows:
            print_table(header, columns, case_rows, right=set(range(2, 9)))
    ranged = any(c.startswith("range") for c in args.contender_list)
    notes = [
        ("fps = frames / wall time of framefleet.run (worker start-up, listing and probes included); "
         "fps / local: the contender's median fps over the local contender's."),
        ("probe s: the probe tasks' summed attempt time (for spool it includes the download); upload s: the "
         "sum of upload_s in the ledger metrics (outputs staged locally, then uploaded)."),
        ("--direct: no byte counts." if args.direct else
         "MiB from store: bytes of HTTP responses through the counting relay (headers included), and that "
         "over the input bytes; requests: all HTTP requests (GETs in brackets)."),
        ("spool: a fresh cache folder per run, shared by both workers (InputOpener's default is one folder "
         "per user under $TMPDIR, shared by every worker and every job)." if "spool" in args.contender_list
         else ""),
        ("range: a task opens its video 2-3 times (probe, reader, audio copy); the opens share one block "
         "cache per video in each worker, so each worker fetches a block about once." if ranged else ""),
        (f"load average before/after: {load_before} / {load_after} (Azurite and the relay run on the same "
         "machine and compete with the workers for its cores)."),
    ]
    for note in filter(None, notes):
        print(f"  {note}")

    payload = {
        "benchmark": "remote_reads",
        "started_utc": started_at.isoformat(timespec="seconds"),
        "total_seconds": round(total_seconds, 1),
        "quick": args.quick,
        "args": {"cases": args.case_list, "contenders": args.contender_list, "repeats": args.repeats, "videos": args.videos, "seconds": args.seconds,
                 "size": [args.width, args.height], "long_seconds": args.long_seconds,
                 "segment_seconds": args.segment_seconds, "op": args.op, "max_size": args.max_size,
                 "style": args.style, "direct": args.direct, "workers": WORKERS, "rate": RATE},
        "inputs": inputs,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": info,
        "load_average": {"before": load_before, "after": load_after},
        "order_per_repeat": order_log,
        "summary": rows,
        "raw": raw,
    }
    write_results(output, payload, total_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
