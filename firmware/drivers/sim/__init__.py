"""Simulator drivers: the unix port stands in for a board (hubi token sim).

display  SimDisplay: a framebuf written as PNG frames (hubi_core.png) on every show()
input    ScriptInput: events from a file that is read as it grows (a script, or the keys
         the launcher forwards from the keyboard)
storage  FaultyStorage: FsStorage with kill points for the power-cut tests
link     hubi_core.link.StreamTransport over stdin/stdout (the pseudo-terminal master)
log      stderr (stdout is the link)
"""

import sys


def log(*args):
    sys.stderr.write("hubi-sim: " + " ".join(str(a) for a in args) + "\n")
