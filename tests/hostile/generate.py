"""Write a corpus of hostile and broken inputs, as strangers' uploads could be (issue 17).

    python tests/hostile/generate.py OUT_DIR [SOURCE ...]

Nothing is checked in: every file is made here, from small clips PyAV writes (and from the SOURCE videos
given, such as ../shared/videos/*). `generate(folder, sources)` returns {file name: class}; the classes:

- truncated: a clip cut at many offsets (inside its header, its index, mid-packet);
- bitflip / shuffled: bits flipped, byte ranges swapped, in the data or in the header;
- empty, header-only: zero bytes, the first few KiB of a clip;
- huge-claim: a frame of 30000x30000 declared in the header, a duration of 30 000 years;
- timestamps: negative, jumping back and forth, near 2^62 (overflowing when converted);
- streams: a container with a thousand streams (PyAV crashes writing twice as many);
- bomb: frames of 8200x8200 pixels, compressing to almost nothing;
- misnamed: a video with another container's extension, text and a picture named as videos;
- names: traversal-looking, control and odd characters in the file name; symbolic links inside, outside
  the input folder, dangling and looping.

A file that grows while it is read is made by the test itself (it needs a writer running beside the job).
"""

from __future__ import annotations

import os
import random
import struct
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from framefleet.video.synth import ClipSpec, write_clip

TRUNCATIONS = 40
BITFLIPS = 15
SHUFFLES = 10


def base_clips(folder: Path) -> dict[str, Path]:
    """Small clips in three containers, the sources of the byte-level damage."""
    folder.mkdir(parents=True, exist_ok=True)
    clips = {
        "mp4": ClipSpec(width=96, height=64, frames=24, audio=("aac",)),
        "mkv": ClipSpec(width=96, height=64, frames=24, audio=("aac",), time_base=Fraction(1, 1000)),
        "ts": ClipSpec(width=96, height=64, frames=24, audio=("aac",), time_base=Fraction(1, 90000)),
    }
    paths = {}
    for suffix, spec in clips.items():
        paths[suffix] = folder / f"base.{suffix}"
        write_clip(paths[suffix], spec)
    return paths


def generate(folder: Path, sources: list[Path] | None = None, seed: int = 17) -> dict[str, str]:
    """Write the corpus into `folder` (created); return {file name: class}."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}
    bases = base_clips(folder.parent / f"{folder.name}-bases")
    originals = {f"{name}.{suffix}": path for suffix, path in bases.items() for name in ["clip"]}
    for source in sources or []:
        originals[source.name] = source

    def write(name: str, data: bytes, kind: str) -> None:
        (folder / name).write_bytes(data)
        made[name] = kind

    for label, path in originals.items():
        stem, suffix = os.path.splitext(label)
        data = path.read_bytes()
        cuts = sorted({int(len(data) * (i + 0.5) / TRUNCATIONS) for i in range(TRUNCATIONS)} | {1, 7, 188, 1000})
        for cut in cuts[:TRUNCATIONS]:
            write(f"truncated-{stem}-{cut}{suffix}", data[:cut], "truncated")
        for i in range(BITFLIPS):
            damaged = bytearray(data)
            region = (0, min(len(data), 4096)) if i % 3 == 0 else (0, len(data))  # a third hit the header
            for _ in range(8 + i * 4):
                at = rng.randrange(*region)
                damaged[at] ^= 1 << rng.randrange(8)
            write(f"bitflip-{stem}-{i}{suffix}", bytes(damaged), "bitflip")
        for i in range(SHUFFLES):
            damaged = bytearray(data)
            size = rng.randrange(64, max(65, len(data) // 8))
            a, b = rng.randrange(0, len(data) - size), rng.randrange(0, len(data) - size)
            damaged[a:a + size], damaged[b:b + size] = data[b:b + size], data[a:a + size]
            write(f"shuffled-{stem}-{i}{suffix}", bytes(damaged), "shuffled")
        for head in (512, 4096):
            write(f"header-only-{stem}-{head}{suffix}", data[:head], "header-only")

    write("empty.mp4", b"", "empty")
    _huge_frame(folder / "huge-frame.mkv")
    made["huge-frame.mkv"] = "huge-claim"
    _huge_duration(bases["mkv"], folder / "huge-duration.mkv")
    made["huge-duration.mkv"] = "huge-claim"
    for name, pts in (("negative-times.mkv", lambda i: -10_000_000 + i * 40),
                      ("jumping-times.mkv", lambda i: (i % 2) * 100_000 + i * 40),
                      ("overflowing-times.mkv", lambda i: 2 ** 62 + i * 40)):
        _retimed(bases["mkv"], folder / name, pts)
        made[name] = "timestamps"
    _many_streams(folder / "many-streams.mkv", 1000)  # PyAV 18 crashes writing about 2000
    made["many-streams.mkv"] = "streams"
    write_clip(folder / "bomb.mp4", ClipSpec(width=8200, height=8200, frames=2, bframes=0,
                                             codec="libx264"), pictures=lambda i: np.zeros((8200, 8200, 3), np.uint8))
    made["bomb.mp4"] = "bomb"
    write("mp4-named.mkv", bases["mp4"].read_bytes(), "misnamed")
    write("mkv-named.ts", bases["mkv"].read_bytes(), "misnamed")
    write("notes.mp4", b"these are notes, not a video\n" * 50, "misnamed")
    write("picture.mov", _png(), "misnamed")
    for name in ("..mp4", "...mp4", "-rf.mp4", " leading space.mp4", "ünïcödé ✓.mp4", "%2e%2e%2fescape.mp4",
                 "line\nbreak.mp4", "escape\x1b[31m.mp4", "tab\there.mp4", "back\\slash.mp4"):
        write(name, bases["mp4"].read_bytes(), "names")
    for name, target in (("link-inside.mp4", folder / "..mp4"), ("link-outside.mp4", Path("/etc/hostname")),
                         ("link-dangling.mp4", folder / "no-such-file.mp4"), ("link-loop.mp4", folder / "link-loop.mp4")):
        os.symlink(target, folder / name)
        made[name] = "names"
    return made


def _huge_frame(path: Path) -> None:
    """A Matroska file whose raw video stream declares 30000x30000 pixels (written at 1000x1000, then its
    PixelWidth and PixelHeight elements rewritten); its one packet holds a million bytes."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("rawvideo", rate=25)
        stream.width, stream.height, stream.pix_fmt = 1000, 1000, "gray"
        frame = av.VideoFrame.from_ndarray(np.zeros((1000, 1000), np.uint8), format="gray")
        frame.pts = 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    data = path.read_bytes()
    for element in (b"\xb0", b"\xba"):  # PixelWidth, PixelHeight: 2-byte values of 1000
        data = data.replace(element + b"\x82\x03\xe8", element + b"\x82" + (30000).to_bytes(2, "big"), 1)
    path.write_bytes(data)


def _huge_duration(source: Path, path: Path) -> None:
    """A copy of a Matroska clip whose header claims 30 000 years (its Duration element rewritten)."""
    data = bytearray(source.read_bytes())
    at = data.find(b"\x44\x89\x88")  # Duration, an 8-byte float of timecode-scale units (ms)
    if at < 0:
        raise RuntimeError(f"{source}: no 8-byte Duration element to rewrite")
    data[at + 3:at + 11] = struct.pack(">d", 30_000 * 365.25 * 86400 * 1000.0)
    path.write_bytes(bytes(data))


def _retimed(source: Path, path: Path, pts_of: object) -> None:
    """`source`'s video alone, its packets given the timestamps `pts_of(i)` (ms); written as NUT, which
    takes any 64-bit time, whatever the name says."""
    with av.open(str(source)) as src, av.open(str(path), "w", format="nut") as out:
        template = src.streams.video[0]
        stream = out.add_stream_from_template(template)
        packets = [p for p in src.demux(template) if p.size]
        for i, packet in enumerate(packets):
            packet.stream, packet.time_base = stream, Fraction(1, 1000)
            packet.pts = packet.dts = pts_of(i)
            try:
                out.mux(packet)
            except (av.error.FFmpegError, ValueError):
                continue  # a muxer that refuses a timestamp: the file holds the packets it took


def _many_streams(path: Path, count: int) -> None:
    """A Matroska file with one short video stream and `count` - 1 silent audio streams declared."""
    with av.open(str(path), "w", format="matroska") as out:
        video = out.add_stream("mpeg4", rate=25)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        for _ in range(count - 1):
            audio = out.add_stream("pcm_s16le", rate=8000)
            audio.layout = "mono"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 40 * i, np.uint8), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame.reformat(format="yuv420p")))
        out.mux(video.encode(None))


def _png() -> bytes:
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


if __name__ == "__main__":
    corpus = generate(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
    kinds: dict[str, int] = {}
    for kind in corpus.values():
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f"{len(corpus)} files: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
