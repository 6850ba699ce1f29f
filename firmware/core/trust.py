"""Trust on the token: the bank keys computed at provisioning and the public matrices, each file
checked against the SHA-256 recorded with the keys before it is used (trust/keys.bin, an
authenticated record). The consortium file itself is read at provisioning only (core.prov).

Imported for one step and released after it (core/__init__.py).
"""

from core.store import Corrupt
from core.wallet import WalletError

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


# hubi_core.protocol's numbers (tests/test_token_core.py checks them)
_ERR_VERIFY = const(0x0105)
_ERR_PROVISION = const(0x0107)

KEYS = "trust/keys.bin"


def _err(code, msg):
    return WalletError(code, msg)


def keys_record(banks):
    """trust/keys.bin body: per bank, u8 id length, id, 65-byte public key, 32-byte digest of
    its matrix file. `banks`: [(bank id, key, digest)]."""
    out = b""
    for bank, key, digest in banks:
        bid = bank.encode()
        out += bytes([len(bid)]) + bid + key + digest
    return out


def keys(w):
    """[(bank id, 65-byte key, matrix digest)] from trust/keys.bin.

    Only a provisioned token asks (the callers check first), and provisioning writes KEYS
    before ks.bin, atomically: a KEYS missing, zero-length or failing its tag is damage. It is
    a STORAGE error naming the file (nothing is verified, so nothing is paid or loaded), never
    "no trust files (provision it)": a provisioned token cannot be provisioned again."""
    try:
        raw = w.records.get(KEYS)
    except Corrupt as e:  # 9: EBADF, core.fault names the file and why
        raise OSError(9, "%s damaged (%s)" % (KEYS, e.why)) from None
    if not raw:
        raise OSError(9, "%s missing or empty: provisioning wrote it" % KEYS)
    out = []
    p = 0
    while p < len(raw):
        n = raw[p]
        bank = bytes(raw[p + 1 : p + 1 + n]).decode()
        p += 1 + n
        out.append((bank, bytes(raw[p : p + 65]), bytes(raw[p + 65 : p + 97])))
        p += 97
    return out


def bank_ids(w):
    return sorted(b for b, _, _ in keys(w))


def matrices(w):
    """{bank: file-backed PublicMatrix}, each file checked against its recorded digest."""
    from hubi_core.cpk import PublicMatrix

    mats = {}
    for bank, _, digest in keys(w):
        name = "trust/%s.pub" % bank
        if not w.storage.exists(name):
            raise _err(_ERR_PROVISION, "public matrix of bank %s missing (%s)" % (bank, name))
        try:
            m = PublicMatrix.open(w.storage.path(name))
        except ValueError as e:  # a damaged header: name the file, not an internal error
            raise _err(
                _ERR_VERIFY, "public matrix of %s is damaged (%s): %s" % (bank, name, e)
            ) from None
        if m.digest() != digest:
            raise _err(_ERR_VERIFY, "public matrix of %s does not match the consortium file" % bank)
        mats[bank] = m
    return mats


def load_trust(w, matrices=True):
    """A verify.Trust from the cached bank keys and (if `matrices`) the matrix files."""
    from hubi_core.verify import Trust

    bank_keys = {}
    for bank, key, _ in keys(w):
        bank_keys[bank] = key
    return Trust(None, _matrices(w) if matrices else {}, bank_keys)


_matrices = matrices
