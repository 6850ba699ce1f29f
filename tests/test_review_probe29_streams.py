"""Review of hubi.output.safe_streams with the standard streams closed.

With stdin, stdout and stderr all closed (a daemon started `<&- >&- 2>&-`), stdout's /dev/null
took descriptor 0 and stderr's descriptor 1: the next file the command opened was descriptor
2, and what a C library writes to its stderr (perror here; OpenSSL's, libpq's, a fatal error
of Python's own) was written into that file. Now each /dev/null is put on the closed
descriptor itself, and a closed stdin gets one too (a file on 0 was every child's input).

Real parts: a real shell closes the descriptors of a real Python process that runs hubi's
code; the C library writes to descriptor 2 as it does.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.xdist_group("test_review_probe29_streams")

SCRIPT = """
import ctypes, sys
from hubi.output import safe_streams
safe_streams()
data = open(sys.argv[1], "w")  # a file of the command's own (its data)
data.write("data\\n")
data.flush()
ctypes.CDLL(None).perror(b"c-library")  # C's stderr: descriptor 2
with open(sys.argv[2], "w") as f:
    f.write(f"{sys.stdout.fileno()} {sys.stderr.fileno()} {data.fileno()}")
"""


@pytest.mark.parametrize("closed", ["<&- >&- 2>&-", ">&- 2>&-", "2>&-"])
def test_a_file_opened_after_closed_streams_gets_no_stderr_writes(tmp_path: Path, closed: str):
    data, fds = tmp_path / "data.txt", tmp_path / "fds.txt"
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    cmd = f'"{sys.executable}" "{script}" "{data}" "{fds}" {closed}'
    subprocess.run(["bash", "-c", cmd], check=True, timeout=60, stdin=subprocess.DEVNULL)
    out, err, own = (int(x) for x in fds.read_text().split())
    assert data.read_text() == "data\n"  # nothing of the C library's
    assert own > 2, (out, err, own)  # 0, 1 and 2 are what they say
    assert err == 2 and (out == 1 or ">&-" not in closed), (out, err, own)
