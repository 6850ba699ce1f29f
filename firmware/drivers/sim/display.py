"""The simulator's screen: a 1-bit framebuf saved as a PNG file on every show().

Frames go to FOLDER/NNNNNN.png (numbered in drawing order) and FOLDER/screen.png (the latest).
A frame identical to one of the last 64 written is not written again (an animated QR loop
writes each of its frames once), and at most ``max_frames`` files are kept per run.
"""

import binascii
import os

from drivers.fbdisplay import FbDisplay
from hubi_core import png


class SimDisplay(FbDisplay):
    def __init__(self, width, height, folder, max_frames=5000):
        FbDisplay.__init__(self, width, height)
        self.folder = folder
        self.max_frames = max_frames
        self.count = 0
        self.recent = []
        try:
            os.mkdir(folder)
        except OSError:
            pass
        # continue numbering after an earlier run (a restart after a power cut)
        for n in os.listdir(folder):
            if n.endswith(".png") and n[:6].isdigit():
                k = int(n[:6]) + 1
                if k > self.count:
                    self.count = k

    def show(self):
        crc = binascii.crc32(self.buf)
        if crc in self.recent:
            self._save(self.folder + "/screen.png")
            return
        self.recent.append(crc)
        if len(self.recent) > 64:
            self.recent.pop(0)
        if self.count < self.max_frames:
            self._save("%s/%06d.png" % (self.folder, self.count))
            self.count += 1
        self._save(self.folder + "/screen.png")

    def _save(self, path):
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            png.save_framebuf(f, self.buf, self.width, self.height, png.MONO_HLSB, self.stride)
        os.rename(tmp, path)
