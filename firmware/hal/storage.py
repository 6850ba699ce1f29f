"""Storage: named files under one root with atomic replace.

The interface (``Storage``) is what ``core`` uses. ``FsStorage`` implements it with ``os``
and works unchanged on every MicroPython VFS the token can have (littlefs on the ESP32, the
POSIX VFS of the unix port, FAT on a card) and on CPython.

Atomic replace: ``write(name, data)`` writes ``name.tmp``, flushes it (and calls os.sync or
fsync where the port has one), then renames it over ``name``. littlefs and POSIX rename
replace the target atomically, so a power cut leaves either the old or the new file. FAT
cannot rename over an existing file: there the old file is removed first, and a reader that
finds ``name`` missing takes ``name.tmp`` (``read``), which the record layer (core.store)
accepts only if its MAC is good.

``hook(op, name)`` (optional) is called before every mutating step: "write" (each chunk),
"sync", "rename", "remove". The simulator's fault injector uses it to stop the process at a
chosen step (tests/test_token_kill.py); answering TEAR to "write" writes half of the chunk and
then calls the hook with "torn".
"""

import os

_S_IFDIR = 0x4000
TEAR = "tear"  # a hook's answer: write only half of this chunk (simulated power cut)


def _sync(f):
    try:
        f.flush()
    except (AttributeError, OSError):
        pass
    fs = getattr(os, "fsync", None)
    if fs is not None:
        try:
            fs(f.fileno())
            return
        except (AttributeError, OSError, ValueError):
            pass
    s = getattr(os, "sync", None)
    if s is not None:
        try:
            s()
        except OSError:
            pass


class Storage:
    """Contract: names are relative paths of [A-Za-z0-9_.-] parts separated by '/'.

    read(name) -> bytes or None; write(name, data) (atomic replace); remove(name);
    exists(name); size(name) -> bytes or -1; listdir(folder) -> names; open(name, mode);
    rename(old, new); path(name) -> a path that ``open()`` of the running interpreter accepts
    (file-backed matrices). The methods are FsStorage's: no abstract ones here, each would be
    one more function object in a token's heap."""


class FsStorage(Storage):
    CHUNK = 512

    def __init__(self, root, hook=None):
        self.root = root.rstrip("/") if len(root) > 1 else root
        self.hook = hook
        self._mkdirs(self.root)

    # ------------------------------------------------------------------------- helpers
    def path(self, name):
        return self.root + "/" + name

    def _mkdirs(self, path):
        parts = path.split("/")
        cur = ""
        for i, p in enumerate(parts):
            if not p:
                if i == 0:
                    cur = "/"
                continue
            cur = cur + p if cur.endswith("/") or not cur else cur + "/" + p
            try:
                os.mkdir(cur)
            except OSError:
                pass

    def _parent(self, name):
        i = name.rfind("/")
        if i > 0:
            self._mkdirs(self.path(name[:i]))

    def _hook(self, op, name):
        if self.hook is not None:
            return self.hook(op, name)
        return None

    # ------------------------------------------------------------------------- interface
    def exists(self, name):
        try:
            os.stat(self.path(name))
            return True
        except OSError:
            return False

    def size(self, name):
        try:
            return os.stat(self.path(name))[6]
        except OSError:
            return -1

    def read(self, name):
        """Bytes of name, or None if it does not exist. A file that is there but cannot be read
        (a folder, no permission, a flash error) raises OSError(EIO, name): taken as missing,
        the device record would be made anew and the keystore taken as wiped. (The errno is
        not looked at: an `except ... as e` here kept a 96 KB heap from booting.)"""
        try:
            with open(self.path(name), "rb") as f:
                return f.read()
        except OSError:
            if self.exists(name):  # there but not readable: never taken as missing
                raise OSError(5, name) from None
            return None

    def write(self, name, data):
        """Atomically replace name with data (see the module docstring)."""
        self._parent(name)
        tmp = self.path(name + ".tmp")
        mv = memoryview(data)
        with open(tmp, "wb") as f:
            off = 0
            n = len(mv)
            while off < n or n == 0:
                k = min(self.CHUNK, n - off)
                if self._hook("write", name) == TEAR:
                    f.write(mv[off : off + k // 2])
                    f.flush()
                    self._hook("torn", name)
                f.write(mv[off : off + k])
                off += k
                if n == 0:
                    break
            self._hook("sync", name)
            _sync(f)
        self._hook("rename", name)
        try:
            os.rename(tmp, self.path(name))
        except OSError:  # FAT: no rename over an existing file
            try:
                os.remove(self.path(name))
            except OSError:
                pass
            os.rename(tmp, self.path(name))

    def remove(self, name):
        self._hook("remove", name)
        try:
            os.remove(self.path(name))
            return True
        except OSError:
            return False

    def rename(self, old, new):
        self._parent(new)
        self._hook("rename", new)
        try:
            os.rename(self.path(old), self.path(new))
        except OSError:
            os.remove(self.path(new))
            os.rename(self.path(old), self.path(new))

    def listdir(self, folder=""):
        p = self.path(folder) if folder else self.root
        try:
            return sorted(os.listdir(p))
        except OSError:
            if self.exists(folder):  # hist/ unreadable is not "no notes kept"
                raise OSError(5, folder) from None
            return []

    def isdir(self, name):
        try:
            return bool(os.stat(self.path(name))[0] & _S_IFDIR)
        except OSError:
            return False

    def open(self, name, mode="rb"):
        if "w" in mode or "a" in mode:
            self._parent(name)
            return _HookedFile(open(self.path(name), mode), self, name)
        return open(self.path(name), mode)

    def remove_tree(self, folder):
        """Remove every file under folder (and the folders). Missing folder: nothing to do."""
        for n in self.listdir(folder):
            sub = folder + "/" + n
            if self.isdir(sub):
                self.remove_tree(sub)
            else:
                self.remove(sub)
        try:
            os.rmdir(self.path(folder))
        except OSError:
            pass


class _HookedFile:
    """A file opened for writing whose writes pass the fault hook (streamed staging files)."""

    def __init__(self, f, store, name):
        self._f = f
        self._s = store
        self._n = name

    def write(self, data):
        if self._s._hook("write", self._n) == TEAR:
            self._f.write(memoryview(data)[: len(data) // 2])
            self._f.flush()
            self._s._hook("torn", self._n)
        return self._f.write(data)

    def close(self):
        self._s._hook("sync", self._n)
        _sync(self._f)
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
