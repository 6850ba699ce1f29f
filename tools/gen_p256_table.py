"""Generate shared/hubi_core/p256_table.bin, the fixed-base table of hubi_core.ec.

    .venv/bin/python tools/gen_p256_table.py            # (re)write the committed table
    .venv/bin/python tools/gen_p256_table.py --check    # exit 1 if the committed file differs
    .venv/bin/python tools/gen_p256_table.py --out X    # write somewhere else

Layout (all integers big-endian):
    header, 16 bytes: b"HUBIP256", version (1 byte), window width W (1), window count (2),
                      entry length 64 (2), 2 zero bytes
    rows i = 0 .. TABLE_WINDOWS-1, each with ENTRIES = 2^(W-1) entries j = 0 .. ENTRIES-1:
        entry (i, j) = affine x || y (32 + 32 bytes) of (2j + 1) * 2^(W*i) * G

The points are computed here with the slow affine reference formulas (ec.point_add), not with
the fast kernels that read the table, so a test that regenerates the file also cross-checks the
two. The script prints the file's SHA-256, which must equal ec.TABLE_SHA256.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "shared"))

from hubi_core import ec  # noqa: E402

DEFAULT_OUT = ROOT / "shared" / "hubi_core" / ec.TABLE_NAME


def build() -> bytes:
    out = bytearray()
    out += ec.TABLE_MAGIC
    out += bytes([ec.TABLE_VERSION, ec.W])
    out += ec.TABLE_WINDOWS.to_bytes(2, "big")
    out += ec.ENTRY_LEN.to_bytes(2, "big")
    out += b"\x00\x00"
    assert len(out) == ec.TABLE_HEADER_LEN
    base = ec.G  # 2^(W*i) * G
    for _ in range(ec.TABLE_WINDOWS):
        twice = ec.point_add(base, base)
        pt = base
        for _ in range(ec.ENTRIES):
            assert ec.is_on_curve(pt)
            out += pt[0].to_bytes(32, "big") + pt[1].to_bytes(32, "big")
            pt = ec.point_add(pt, twice)
        for _ in range(ec.W):
            base = ec.point_add(base, base)
    assert len(out) == ec.TABLE_LEN
    return bytes(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the table")
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing")
    args = ap.parse_args(argv)
    data = build()
    digest = hashlib.sha256(data).hexdigest()
    if args.check:
        same = args.out.exists() and args.out.read_bytes() == data
        print("%s: %s (sha256 %s)" % (args.out, "up to date" if same else "DIFFERS", digest))
        return 0 if same else 1
    args.out.write_bytes(data)
    print("wrote %s: %d bytes, sha256 %s" % (args.out, len(data), digest))
    if digest != ec.TABLE_SHA256:
        print("note: set ec.TABLE_SHA256 = %r in shared/hubi_core/ec.py" % digest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
