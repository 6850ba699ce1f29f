"""The wallet: provisioning, offline allowance, payments, notices, history (DESIGN sections 2, 7).

Pure logic over the HAL's Storage, Clock and Rng; no screen, no link (core.token wires those).
This module is the wallet's resident part: its state (account, currency, serial counter) and
the entry points. The work itself is in modules imported for one step and released after it
(core/__init__.py): core.pay (verify a request, sign a note), core.prov (provisioning and
allowances), core.notes (notes kept, notices, balance).

Files besides the keystore's (records, core.store):
    tpl.obj          the account's Template (bank-sealed)
    allow.obj        the current OfflineAllowance (bank-signed)
    ctr.bin          account, next note serial, allowance serial/cap/spent/expiry/first serial,
                     last known time: written BEFORE a note is signed (persist-then-sign)
    trust/           consortium.json, <BANK>.pub (public matrices, read from flash by offset),
                     keys.bin (per bank: its public key, computed once at provisioning, and the
                     SHA-256 of its matrix file, checked before the file is used)
    hist/nNNNNNNNN   the last HISTORY notes;  hist/bal, hist/rcpt   last balance notice, receipt
    stage/           public files uploaded for a provisioning that has not been committed

Payment (core.pay ``prepare`` then ``sign``): the request is verified offline (the shared codec,
then the signatures against the file-backed matrix), its expiry checked against the clock, the
amount against the allowance;
after the PIN, ``sign`` writes ctr.bin with serial + 1 and spent + amount and only then signs,
so a power cut can lose a note but never reuse a serial or sign past the allowance.
"""

from core import fmt
from core.store import Corrupt

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_ERR_STATE = const(0x0101)  # hubi_core.protocol.ERR_STATE
_ERR_STORAGE = const(0x010B)  # hubi_core.protocol.ERR_STORAGE
_EBADF = const(9)  # a state file there but not usable (core.hand says which)
_TICKS_TRUSTED = const(5 * 86400)  # s: well inside half the ticks' period (request_now)

HISTORY = 8
TPL = "tpl.obj"
ALLOW = "allow.obj"
CTR = "ctr.bin"
PAID = "hist/paid"  # core.pay: digest (16 bytes) + serial (u64) of each paid request


class WalletError(Exception):
    """A refusal with a reason the user and the host can act on. ``code``: protocol ERR_*."""

    def __init__(self, code, msg):
        super().__init__(msg)
        self.code = code


def _u64(n):
    return n.to_bytes(8, "big")


class Counter:
    """ctr.bin: what must never go backwards."""

    __slots__ = (
        "account",
        "next_serial",
        "allow_serial",
        "cap",
        "spent",
        "expiry",
        "first",
        "last_time",
    )

    def __init__(
        self,
        account="",
        next_serial=1,
        allow_serial=0,
        cap=0,
        spent=0,
        expiry=0,
        first=0,
        last_time=0,
    ):
        self.account = account
        self.next_serial = next_serial
        self.allow_serial = allow_serial
        self.cap = cap
        self.spent = spent
        self.expiry = expiry
        self.first = first
        self.last_time = last_time

    def to_bytes(self):
        a = self.account.encode()
        return (
            bytes([len(a)])
            + a
            + _u64(self.next_serial)
            + _u64(self.allow_serial)
            + _u64(self.cap)
            + _u64(self.spent)
            + self.expiry.to_bytes(4, "big")
            + _u64(self.first)
            + self.last_time.to_bytes(4, "big")
        )

    @classmethod
    def from_bytes(cls, b):
        n = b[0]
        p = 1 + n
        g = lambda i, k=8: int.from_bytes(b[p + i : p + i + k], "big")  # noqa: E731
        return cls(bytes(b[1:p]).decode(), g(0), g(8), g(16), g(24), g(32, 4), g(36), g(44, 4))

    def left(self):
        return self.cap - self.spent if self.cap > self.spent else 0


class Wallet:
    # the OSError that stopped boot() (core.fault.boot); a class attribute: one more instance
    # attribute grew every wallet's dict and a 96 KB heap no longer booted
    fault = None
    host_time = None  # (time, ticks_ms) of a host's SET_TIME since boot (request_now)

    def __init__(self, storage, keystore, clock, settings=None):
        self.storage = storage
        self.ks = keystore
        self.clock = clock
        self.settings = settings or {}
        self.counter = None
        self.counter_damaged = False
        self.account = None
        self.currency = ""
        self.pending = None  # headless: the payment (core.pay) waiting for PAY_CONFIRM
        keystore.on_wipe = self._on_wipe

    # -------------------------------------------------------------------------- boot
    def boot(self):
        """Load the state; False if blank. OSError if the flash cannot give back a state file
        or take one at the first boot: core.fault.boot leaves the token in `fault` then."""
        ready = self.ks.boot()
        self.records = self.ks.records
        self.counter = self._load_counter()
        if self.counter.last_time and not self.clock.is_set():
            self.clock.set_time(self.counter.last_time)
        self.account = None
        self.currency = ""  # a wiped account's currency is not this blank token's
        if not ready:
            st = self.storage
            if st.exists(TPL) or st.listdir("hist") or st.listdir("trust"):
                self._clear()  # a wipe cut after the key went: the account's notes go too
            return False
        from hubi_core import codec
        from hubi_core.errors import CodecError

        try:
            tpl = codec.decode(self.records.get(TPL), codec.TEMPLATE)
        except (Corrupt, CodecError, TypeError) as e:
            # the firmware writes tpl.obj before ks.bin and removes ks.bin first: a key without
            # its template is damage, and the template is public (its bank can give it again);
            # the key is not, so it is kept and the token refuses everything until then
            raise OSError(_EBADF, "%s damaged (%s)" % (TPL, e)) from None
        # the template itself is decoded again when a note is signed: an object of codec's
        # classes kept here would keep the whole codec module in the heap
        self.account = tpl["account"]
        self.currency = tpl["currency"]
        return True

    @property
    def provisioned(self):
        return self.account is not None

    def _load_counter(self):
        """ctr.bin; a damaged one (never a torn write: writes are atomic) reads as "no
        allowance", so nothing is signed until the bank loads a new allowance whose
        first_serial restarts the serials above every note it knows of."""
        self.counter_damaged = False
        try:
            body = self.records.get(CTR)
        except Corrupt:
            self.counter_damaged = True
            body = None
        return Counter.from_bytes(body) if body else Counter()

    def _save_counter(self, c):
        self.records.put(CTR, c.to_bytes())
        self.counter = c

    def _copy_counter(self):
        return Counter.from_bytes(self.counter.to_bytes())

    def now(self):
        t = self.clock.time()
        if self.counter is not None and t < self.counter.last_time:
            t = self.counter.last_time
        return t

    def set_time(self, t):
        """A host's SET_TIME: the clock a request's expiry is checked against from now on
        (request_now); the time of a note still never goes below the last note's (now)."""
        self.clock.set_time(t)
        self.host_time = (int(t), self.clock.ticks_ms())

    def request_now(self):
        """The time a payee's request expires by: the host's time of this session (its
        SET_TIME, run on by the token's monotonic ticks, not its wall clock, which may step)
        once a host set one, else now(). A host a day ahead that dated a note raised the
        floor of now(): every request made on the right clock with a shorter life was then
        refused EXPIRED until that day had passed. The expiry is the payee's own promise (it
        signs the request; payee and amount are confirmed), so only the note's own time keeps
        the floor."""
        h = self.host_time
        if h is None:
            return self.now()
        ms = self.clock.ticks_diff(self.clock.ticks_ms(), h[1])
        # ticks_ms comes round every 2**30 ms (12.4 days) where small ints are 30 bits (the
        # ESP32): past half of that the ticks cannot tell the time since SET_TIME (12.5 days
        # showed as a few seconds, and an expired request was paid), so the token's own
        # clock, which ran on from SET_TIME, says whether that much time has passed
        if ms < 0 or self.clock.time() - h[0] > _TICKS_TRUSTED:
            return self.now()
        return h[0] + ms // 1000

    def _need_ready(self):
        if not self.provisioned:
            raise WalletError(_ERR_STATE, "token not provisioned")

    # ------------------------------------------------------------------------ info
    def info(self):
        if self.fault is not None:  # for the home screen (requests get the error: core.fault)
            return {"fault": 1}
        c = self.counter
        out = {
            "state": "ready" if self.provisioned else "blank",
            "account": self.account,
            "currency": self.currency,
            "next_serial": max(c.next_serial, c.first) if self.provisioned else None,
            "pin_tries_left": self.ks.tries_left() if self.provisioned else None,
            "time": self.now(),
            "clock_set": self.clock.is_set(),
            "notes": len(self.note_serials()),
        }
        tk = self.ks.transport_public()
        out["transport_key"] = fmt.hexs(tk) if tk else None
        if self.provisioned and c.allow_serial:
            out["allowance"] = {
                "serial": c.allow_serial,
                "cap": c.cap,
                "spent": c.spent,
                "left": c.left(),
                "expiry": c.expiry,
                "first_serial": c.first,
            }
        else:
            out["allowance"] = None
        return out

    def note_serials(self):
        out = []
        for n in self.storage.listdir("hist"):
            if n[0] == "n" and not n.endswith(".tmp"):
                try:
                    s = int(n[1:])
                except ValueError:
                    continue
                if 0 < s < 0xFFFFFFFFFFFFFFFF:  # a planted name must not overflow ctr.bin
                    out.append(s)
        out.sort()  # by number: past 10^8 the names' text order is not the serials' order
        return out

    # -------------------------------------------------------------------------- wipe
    def _on_wipe(self):
        """Called by the keystore after the account key is destroyed (also from ks.boot,
        which finishes a stopped wipe before boot() took the records)."""
        self.records = self.ks.records
        self._clear()
        self.storage.remove_tree("stage")

    def _clear(self):
        st = self.storage
        for name in (TPL, ALLOW):
            self.records.delete(name)
        st.remove_tree("hist")
        st.remove_tree("trust")
        self.account = None
        self.pending = None

    def wipe(self):
        from core.fault import boot

        try:
            self.ks.wipe()
        except OSError as e:
            # stopped part way (a full flash: the new transport key not written): the wallet
            # boots from what the flash holds, as the next boot will (blank, still ready, or
            # the STORAGE fault until room is made), and the refusal says the wipe is not done
            from core.fault import storage_text
            from core.keystore import _NOT_FINISHED

            boot(self)
            raise WalletError(_ERR_STORAGE, _NOT_FINISHED + storage_text(e)) from None
        boot(self)  # blank; or in fault again (STORAGE) if a file a wipe keeps is damaged
