"""Zero the GPU code of every architecture but one in a CUDA shared library, so it compresses small.

    python tools/gpu/prune_cubins.py LIBRARY.so 90      # keep sm_90 (H100, H200) only

onnxruntime-gpu's CUDA provider carries cubins for sm_75 to sm_120 (about 220 of its 284 MB); a machine
with one GPU model loads only its own. Zeroing the others (their headers stay, so offsets do not move)
leaves a library that works on that GPU and compresses to a quarter. For carrying a build to an offline
GPU machine with an upload limit (`tools/gpu/carry.sh`); never for a package others install.
"""

from __future__ import annotations

import struct
import subprocess
import sys

FATBIN_MAGIC = 0xBA55ED50


def fatbin_section(path: str) -> tuple[int, int]:
    """(file offset, size) of the library's .nv_fatbin section, from readelf."""
    listing = subprocess.run(["readelf", "-S", "-W", path], capture_output=True, text=True, check=True).stdout
    fields = next(line for line in listing.splitlines() if " .nv_fatbin " in line).split()
    return int(fields[-7], 16), int(fields[-6], 16)


def prune(path: str, keep: int) -> int:
    """Zero the payload of every fatbin entry whose architecture is not `keep`; returns the bytes zeroed."""
    with open(path, "rb") as handle:
        data = bytearray(handle.read())
    start, size = fatbin_section(path)
    position, end, zeroed = start, start + size, 0
    while position < end:
        magic, _, header_size, body_size = struct.unpack_from("<IHHQ", data, position)
        if magic != FATBIN_MAGIC:
            position += 8  # blobs are 8-byte aligned
            continue
        entry, blob_end = position + header_size, position + header_size + body_size
        while entry < blob_end:
            _, _, entry_header, payload = struct.unpack_from("<HHIQ", data, entry)
            arch = struct.unpack_from("<I", data, entry + 28)[0]
            if arch != keep:
                data[entry + entry_header:entry + entry_header + payload] = bytes(payload)
                zeroed += payload
            entry += entry_header + payload
        position = blob_end
    with open(path, "wb") as handle:
        handle.write(data)
    return zeroed


if __name__ == "__main__":
    library, architecture = sys.argv[1], int(sys.argv[2])
    print(f"{library}: zeroed {prune(library, architecture) / 1e6:.0f} MB of other architectures' code")
