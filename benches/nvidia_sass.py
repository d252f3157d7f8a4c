"""The SASS machine code of our kernels on an NVIDIA GPU, cut from the Vulkan driver's
pipeline-cache blobs that `depthlens kernels --binary DIR` writes (DIR/KERNEL.blob).

The blob's layout is NVIDIA's and undocumented. What this relies on, checked on driver
580.159.04 (H100) for every kernel: after Vulkan's 32-byte cache header and NVIDIA's own
header, a zstd frame holds an "NVDANVVM" record whose little-endian u32s at byte 72 are
(1, code size, code offset); the code starts 8 zero bytes past that offset, and its size equals
the driver's own "Binary Size" statistic.
The script checks both and refuses a blob where either fails, so a later driver that moves things
gives an error, not a wrong listing.

    python3 benches/nvidia_sass.py DIR [--stats STATS.txt]   # writes DIR/KERNEL.code
    nvdisasm -b SM90 DIR/KERNEL.code > KERNEL.sass           # on a machine with CUDA

`--stats` is the table `depthlens kernels` printed: each code size is checked against the
kernel's "Binary Size". Decompression uses the `zstd` command (Debian package zstd).
"""

import glob
import os
import struct
import subprocess
import sys

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
RECORD_MAGIC = b"NVDANVVM"


def binary_sizes(stats_path):
    """{kernel file stem: Binary Size} from a `depthlens kernels` table."""
    sizes, column = {}, None
    for line in open(stats_path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if "Binary Size" in cells:
            column = cells.index("Binary Size")
        elif column is not None and len(cells) > column and cells[column].isdigit():
            stem = cells[0].replace(" ", "_").replace(",", "_")
            sizes[stem] = int(cells[column])
    return sizes


def machine_code(blob):
    start = blob.find(ZSTD_MAGIC)
    if start < 0:
        raise ValueError("no zstd frame in the blob")
    raw = subprocess.run(
        ["zstd", "-d", "-c"], input=blob[start:], capture_output=True, check=True
    ).stdout
    if not raw.startswith(RECORD_MAGIC):
        raise ValueError(f"the zstd frame does not hold an {RECORD_MAGIC!r} record")
    one, size, offset = struct.unpack_from("<III", raw, 72)
    start = offset + 8
    if one != 1 or start + size > len(raw) or raw[offset:start] != bytes(8):
        raise ValueError(f"record header (1, size, offset) reads ({one}, {size}, {offset})")
    return raw[start : start + size]


def main():
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        sys.exit(__doc__)
    directory = args[0]
    sizes = binary_sizes(args[args.index("--stats") + 1]) if "--stats" in args else {}
    blobs = sorted(glob.glob(os.path.join(directory, "*.blob")))
    if not blobs:
        sys.exit(f"no .blob files in {directory}: run `depthlens kernels --binary {directory}`")
    for path in blobs:
        stem = os.path.basename(path)[: -len(".blob")]
        code = machine_code(open(path, "rb").read())
        if stem in sizes and sizes[stem] != len(code):
            sys.exit(f"{path}: {len(code)} bytes of code, but the driver says {sizes[stem]}")
        out = os.path.join(directory, stem + ".code")
        open(out, "wb").write(code)
        checked = "checked against Binary Size" if stem in sizes else "not checked"
        print(f"{out}: {len(code)} bytes ({checked})")


if __name__ == "__main__":
    main()
