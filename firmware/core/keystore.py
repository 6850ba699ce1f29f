"""The keystore: device secret, transport key, the account key sealed under the PIN, PIN tries.

Files (records, see core.store):
    dev.bin   device secret (32 random bytes) and, until provisioning, the transport key
    ks.bin    account id, KDF parameters, PIN check value, AES-256-GCM(account key)
    pin.cnt   failed PIN attempts since the last good PIN

Unlocking (``unlock``):
 1. read pin.cnt; at LIMIT or more the keystore is wiped (a crash after the tenth failure
    finishes the wipe at the next attempt or boot);
 2. write pin.cnt + 1 BEFORE anything about the PIN is computed, so cutting the power
    during the check still counts the attempt;
 3. wait the back-off for this attempt (0 for the first FREE_TRIES, then base, 2 x base, ...);
 4. derive K = HKDF-Extract(device secret, PBKDF2-HMAC-SHA-256(PIN, salt, iterations)) and
    compare its check value with hubi_core.ct.equal; decrypt the account key (GCM tag checked);
 5. good: write pin.cnt = 0. Wrong: at LIMIT failures wipe, else report the tries left.

The account key lives in the heap only while a payment or a balance is being computed; pure
MicroPython cannot wipe it (immutable ints and bytes): see docs/token.md.
"""

from core import kdf
from core.store import Corrupt, Records, open_record, seal_record
from hubi_core import ct
from hubi_core.pin import pin_problem

# suite (key generation) and aesgcm (the sealed key) are imported where they are used: the
# keystore stays resident, they are loaded for one unlock or provisioning (core/__init__.py)

LIMIT = 10
FREE_TRIES = 3
MAX_BACKOFF_STEPS = 6  # the delay doubles at most this many times
DEV = "dev.bin"
KS = "ks.bin"
PIN = "pin.cnt"
_DEV_KEY = b"hubi/token/dev/1"  # checksum key of dev.bin (it holds the secret itself)
_INFO_MAC = b"hubi/token/mac/1"
_INFO_ENC = b"hubi/token/ks-enc/1"
_INFO_CHECK = b"hubi/token/ks-check/1"
_ERR_STORAGE = 0x010B  # hubi_core.protocol.ERR_STORAGE
_EBADF = 9  # core.fault: a state file not usable (its name and why in args[1])
_NOT_FINISHED = "wipe not finished: "  # core.wallet.Wallet.wipe says it too
_KEPT = "ks.bin could not be removed (the key is still on the flash: no PIN is tried)"


class KeystoreError(Exception):
    pass


class WrongPin(KeystoreError):
    def __init__(self, left, why=None):
        super().__init__(
            "wrong PIN%s: %d tr%s left before the keys are wiped"
            % (" (%s)" % why if why else "", left, "y" if left == 1 else "ies")
        )
        self.left = left


class Wiped(KeystoreError):
    def __init__(self, why="too many wrong PINs: the keys were wiped"):
        super().__init__(why)


class NotProvisioned(KeystoreError):
    pass


def check_pin(pin):
    """The PIN as a str if it follows the rule of hubi_core.pin; ValueError saying what is
    wrong otherwise. Bytes (a PIN sent over the link) are decoded: bytes that are not UTF-8
    are not digits either."""
    if not isinstance(pin, str) and pin is not None:
        try:
            pin = bytes(pin).decode()
        except (UnicodeError, TypeError):
            raise ValueError("PIN must be digits only") from None
    why = pin_problem(pin)
    if why:
        raise ValueError(why)
    return pin


def backoff_ms(fails, base_ms):
    """Delay before the attempt that follows `fails` failures."""
    if fails < FREE_TRIES:
        return 0
    step = fails - FREE_TRIES
    if step > MAX_BACKOFF_STEPS:
        step = MAX_BACKOFF_STEPS
    return base_ms << step


class Keystore:
    def __init__(self, storage, rng, clock, iterations=10000, backoff_base_ms=1000):
        self.storage = storage
        self.rng = rng
        self.clock = clock
        self.iterations = iterations
        self.backoff_base_ms = backoff_base_ms
        self.secret = None
        self._transport = None
        self._transport_pub = None  # (private, public): GET_INFO asks for it often
        self.records = None
        self.account = None
        self.on_wipe = None  # wallet hook: remove everything else after the keys are gone

    # --------------------------------------------------------------------------- boot
    def boot(self):
        """Load (or create) the device record; finish an interrupted wipe. Returns provisioned."""
        raw = self.storage.read(DEV)
        body = None
        if raw is not None:
            try:
                body = open_record(_DEV_KEY, DEV, raw)
            except Corrupt:
                body = None
        if body is None:
            tmp = self.storage.read(DEV + ".tmp")
            if tmp is not None:
                try:
                    body = open_record(_DEV_KEY, DEV, tmp)
                except Corrupt:
                    body = None
        if body is None or len(body) not in (32, 64):
            # First boot (or an unreadable device record: nothing sealed under it can be
            # opened any more, so start again as a blank token).
            self._new_device()
        else:
            self.secret = body[:32]
            self._transport = int.from_bytes(body[32:], "big") if len(body) == 64 else None
            self.records = Records(self.storage, self._mac_key())
        ks = self._ks()
        if ks is None:
            if self._transport is None:
                self._new_transport()
            return False
        self.account = ks[0]
        if self.fails() >= LIMIT:
            self.wipe()
            return False
        if self._transport is not None:  # provisioning finished but the key drop was cut
            self.drop_transport()
        return True

    def _mac_key(self):
        return kdf.hkdf_expand(kdf.hkdf_extract(self.secret, b"hubi"), _INFO_MAC)

    def _new_device(self):
        self.secret = self.rng.bytes(32)
        self._transport = None
        self._new_transport()

    def _new_transport(self):
        from hubi_core import suite

        self._transport = suite.generate_private()
        self._save_dev()

    def _save_dev(self):
        body = self.secret
        if self._transport is not None:
            body = body + self._transport.to_bytes(32, "big")
        self.storage.write(DEV, seal_record(_DEV_KEY, DEV, body))
        self.records = Records(self.storage, self._mac_key())

    # --------------------------------------------------------------------- transport key
    def transport_public(self):
        if self._transport is None:
            return None
        if self._transport_pub is None or self._transport_pub[0] != self._transport:
            from hubi_core import suite

            self._transport_pub = (self._transport, suite.public_key(self._transport, True))
        return self._transport_pub[1]

    def transport_private(self):
        if self._transport is None:
            raise KeystoreError("no transport key: the token is already provisioned")
        return self._transport

    def drop_transport(self):
        self._transport = None
        self._save_dev()

    # ------------------------------------------------------------------------ keystore
    def _ks(self):
        try:
            body = self.records.get(KS)
        except Corrupt:
            return None
        if body is None:
            return None
        n = body[0]
        account = bytes(body[1 : 1 + n]).decode()
        p = 1 + n
        iters = int.from_bytes(body[p : p + 4], "big")
        salt = body[p + 4 : p + 20]
        check = body[p + 20 : p + 36]
        nonce = body[p + 36 : p + 48]
        sealed = body[p + 48 :]
        return account, iters, salt, check, nonce, sealed

    @property
    def provisioned(self):
        return self.account is not None

    def _derive(self, pin, salt, iters):
        k = kdf.pbkdf2_sha256(pin.encode(), salt, iters)
        prk = kdf.hkdf_extract(self.secret, k)
        return kdf.hkdf_expand(prk, _INFO_ENC), kdf.hkdf_expand(prk, _INFO_CHECK, 16)

    def create(self, account, priv, pin):
        """Seal the account key under pin and write ks.bin (the provisioning commit point)."""
        from hubi_core import suite

        check_pin(pin)
        suite.check_private(priv)
        self.records.put(PIN, b"\x00")
        self._write_ks(account, priv, pin)
        self.account = account

    def _write_ks(self, account, priv, pin):
        from hubi_core import aesgcm

        salt = self.rng.bytes(16)
        nonce = self.rng.bytes(12)
        enc, check = self._derive(pin, salt, self.iterations)
        aad = account.encode()
        sealed = aesgcm.encrypt(enc, nonce, priv.to_bytes(32, "big"), aad)
        acc = account.encode()
        body = (
            bytes([len(acc)])
            + acc
            + self.iterations.to_bytes(4, "big")
            + salt
            + check
            + nonce
            + sealed
        )
        self.records.put(KS, body)

    # ----------------------------------------------------------------------------- PIN
    def fails(self):
        try:
            body = self.records.get(PIN)
        except Corrupt:
            body = None
        if not body:  # unreadable or removed (create() writes it before ks.bin): the worst but one
            return LIMIT - 1
        return body[0]

    def tries_left(self):
        return max(0, LIMIT - self.fails())

    def next_delay_ms(self):
        return backoff_ms(self.fails(), self.backoff_base_ms)

    def unlock(self, pin, wait=None):
        """The account key (int) for the right PIN; WrongPin / Wiped / NotProvisioned.

        wait(ms) is called for the back-off delay (the UI shows it, the link keeps alive);
        by default the clock sleeps.
        """
        ks = self._ks()
        if ks is None:
            raise NotProvisioned("the token holds no account key (provision it first)")
        account, iters, salt, check, nonce, sealed = ks
        fails = self.fails()
        if fails >= LIMIT:
            raise self._wiped()
        self.records.put(PIN, bytes([fails + 1]))  # counted before anything is checked
        delay = backoff_ms(fails, self.backoff_base_ms)
        if delay:
            if wait is not None:
                wait(delay)
            else:
                self.clock.sleep_ms(delay)
        why = None
        try:
            pin = check_pin(pin)  # a PIN that breaks the rule is a wrong try, counted above
            enc, got = self._derive(pin, salt, iters)
            good = ct.equal(got, check)
        except ValueError as e:
            good = False
            why = str(e)
        if good:
            from hubi_core import aesgcm

            try:
                priv = int.from_bytes(aesgcm.decrypt(enc, nonce, sealed, account.encode()), "big")
            except aesgcm.AuthError:
                good = False
        if not good:
            if fails + 1 >= LIMIT:
                raise self._wiped()
            raise WrongPin(LIMIT - fails - 1, why)
        self.records.put(PIN, b"\x00")
        return priv

    def change_pin(self, old, new, wait=None):
        new = check_pin(new)
        priv = self.unlock(old, wait)
        self._write_ks(self.account, priv, new)

    # ----------------------------------------------------------------------------- wipe
    def _wiped(self):
        """The wipe of the last wrong PIN, and Wiped: said even if the flash stops the wipe
        after the key went (full: no new transport key); the caller boots the wallet again
        (core.fault.boot), which then says STORAGE as the next boot will. A wipe that could
        not remove the key is no wipe: STORAGE, the counter stays at LIMIT (every later
        unlock and boot wipes again, and no PIN is tried)."""
        try:
            self.wipe()
        except OSError:
            if self._key_kept():
                from core.wallet import WalletError

                return WalletError(_ERR_STORAGE, _NOT_FINISHED + _KEPT)
        return Wiped()

    def _key_kept(self):
        return self.storage.exists(KS) or self.storage.exists(KS + ".tmp")

    def wipe(self):
        """Destroy the account key first, then everything else, and make a new transport key
        (the token is blank again). The device secret stays: it authenticates ctr.bin, whose
        note serial must keep counting up if the same account is provisioned again.

        The PIN counter goes to LIMIT before the key is touched and is deleted only once the
        key is gone: a key the flash would not let go (hal.storage.remove answers False) must
        not come back with fresh tries. OSError(EBADF) says so; boot() wipes again."""
        if self.storage.exists(KS) and self.fails() < LIMIT:
            try:
                self.records.put(PIN, bytes([LIMIT]))
            except OSError:  # a full flash: the key's removal below is what counts
                pass
        for name in (KS, KS + ".tmp"):
            n = self.storage.size(name)
            if n > 0:
                try:
                    with self.storage.open(name, "wb") as f:  # overwrite in place, best effort
                        f.write(bytes(n))
                except OSError:
                    pass
            self.storage.remove(name)
        if self._key_kept():
            raise OSError(_EBADF, _KEPT)
        self.account = None
        if self.on_wipe is not None:
            self.on_wipe()
        self.records.delete(PIN)
        self._new_transport()
