"""Scripted input for the simulator: events read from a file as it grows.

One step per line; '#' starts a comment::

    confirm: ok                 # the next time the "confirm" screen asks: OK
    pin: up ok up up ok enter   # several events for the "pin" screen, in order
    ok                          # no screen named: whichever screen asks next

Events: up, down, ok, back, enter, 0..9. Steps are taken strictly in order: a step for a
named screen waits until that screen asks, and the steps behind it wait too. The launcher's
keyboard mode appends one line per key press to the same kind of file, so a script and the
keyboard are the same driver.
"""

import os
import time

from hal.ui import EVENTS, Input

_KNOWN = EVENTS + ("enter",)


class ScriptInput(Input):
    def __init__(self, path, log=None):
        self.path = path
        self.pos = 0
        self.queue = []
        self.partial = b""
        self.log = log
        self.taken = 0

    def _refill(self):
        try:
            size = os.stat(self.path)[6]
        except OSError:
            return
        if size <= self.pos:
            return
        with open(self.path, "rb") as f:
            f.seek(self.pos)
            data = f.read(size - self.pos)
        self.pos += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        for raw in lines:
            try:
                line = raw.decode()
            except UnicodeError:  # a script saved in another encoding ended the simulator
                if self.log:
                    self.log("script: a line that is not UTF-8 ignored: %r" % bytes(raw[:40]))
                continue
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            screen = None
            if ":" in line:
                screen, line = line.split(":", 1)
                screen = screen.strip()
                if screen in ("", "*"):
                    screen = None
            for ev in line.split():
                ev = ev.lower()
                if ev not in _KNOWN:
                    if self.log:
                        self.log("script: unknown event %r ignored" % ev)
                    continue
                self.queue.append((screen, ev))

    def _take(self, screen):
        if self.queue:
            want, ev = self.queue[0]
            if want is None or want == screen:
                self.queue.pop(0)
                self.taken += 1
                if not self.queue and self.log:  # what a script's writer can wait for
                    self.log("script: all %d events taken" % self.taken)
                return ev
        return None

    def get(self, timeout_ms=0, screen=None):
        ev = self._take(screen)
        if ev is not None:
            return ev
        self._refill()
        ev = self._take(screen)
        if ev is not None or timeout_ms <= 0:
            return ev
        step = 10 if timeout_ms > 10 else timeout_ms
        waited = 0
        while waited < timeout_ms:
            time.sleep_ms(step)
            waited += step
            self._refill()
            ev = self._take(screen)
            if ev is not None:
                return ev
        return None
