"""Key management: a KMC per bank, bank identities, and the trust bundle verifiers load.

Trust bundle (public; what a merchant, token or regulator needs to verify offline):
    DIR/consortium.json          signed consortium file
    DIR/matrices/<BANK>.pub      each bank's KMC public matrix (33,799 bytes)
KMC secret store (one per bank, mode 0600, never printed):
    DIR/<BANK>.kmc               private matrix
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubi import jsonload
from hubi.files import write_atomic, write_secret
from hubi_core import codec, cpk, ec, suite
from hubi_core.consortium import BankEntry, Consortium
from hubi_core.errors import HubiError
from hubi_core.verify import Trust

TREASURY_SECRET = "treasury.secret"
TREASURY_TEMPLATE = "treasury.template"  # kept with the key: another database opens it too


class KeyKept(HubiError):
    """A key file is there and will not be written over; the message says what to do."""


def kept(key: Path, template: Path) -> bool:
    """A key and its Template kept before their account was opened (both are needed)."""
    return key.is_file() and template.is_file()


def read_key(path: Path) -> int:
    """The key kept in `path`: exactly 32 bytes, else a ValueError naming the file (never the
    bytes). A file cut short or grown (a full disk, a wrong copy) was taken for a key all the
    same: its first 32 bytes, or a smaller number."""
    from hubi.objects import read_regular

    raw = read_regular(path, 4096, "a 32-byte key")
    if len(raw) != 32:
        raise ValueError(f"{path} holds {len(raw)} bytes, not a 32-byte key")
    return int.from_bytes(raw, "big")


def read_private(path: Path) -> int:
    """read_key, and a key in [1, n-1], else a ValueError naming the file."""
    key = read_key(path)
    if not 1 <= key < ec.N:
        raise ValueError(f"{path} holds no usable key (out of range)")
    return key


def keep_key(key: Path, template: Path, priv: int, tpl: Any) -> None:
    """Write a new account's key (0600) and Template, each whole or not at all, before the
    account is opened: a key is random, one the database has and no file keeps is lost."""
    write_atomic(template, codec.encode(tpl))
    write_secret(key, priv.to_bytes(32, "big"))


def open_treasury(eng: Any, home: Path, bank: str) -> bool:
    """Open the treasury of `eng`'s database (which has none) with the key kept in
    HOME/banks/<BANK>/, or with a new one kept there first; True if the key is new. KeyKept
    for a key file with no Template beside it (a home from before the Template was kept): the
    key is not written over, nor can the account be opened with it. ValueError naming the
    kept key file when it holds no key (read_private)."""
    folder = bank_dir(home, bank)
    secret, template = folder / TREASURY_SECRET, folder / TREASURY_TEMPLATE
    if kept(secret, template):  # an init killed before its commit, or another database's
        eng.open_kept(read_private(secret), template.read_bytes(), treasury=True)
        return False
    if secret.exists() or secret.is_symlink():
        raise KeyKept(
            f"{secret} already holds the treasury key of another database, with no"
            f" {TREASURY_TEMPLATE} beside it to open this one with: use that database, or move"
            " the key file away (keep it) first"
        )
    eng.setup_treasury(
        load_kmc(home, bank), keep=lambda priv, tpl: keep_key(secret, template, priv, tpl)
    )
    return True


class Kmc:
    """One bank's key management centre: a CPK private matrix that issues keys."""

    def __init__(self, matrix: cpk.PrivateMatrix):
        self._matrix = matrix
        self.public = matrix.public()

    @property
    def bank(self) -> str:
        return self._matrix.owner

    def __repr__(self) -> str:
        return f"Kmc(bank={self.bank!r})"

    @classmethod
    def create(cls, bank: str, seed: bytes | None = None) -> Kmc:
        return cls(cpk.PrivateMatrix.generate(bank, seed))

    def save(self, path: Path) -> None:
        write_secret(Path(path), self._matrix.to_bytes())

    def issue(self, identity: str, separating: int | None = None) -> tuple[int, bytes]:
        """(private key, 33-byte separating public key) for identity; the key is never logged."""
        return self._matrix.issue(identity, separating)


@dataclass
class BankIdentity:
    """A bank's own signing key. repr() never shows the private key."""

    bank: str
    private: int
    separating_key: bytes

    def __repr__(self) -> str:
        return f"BankIdentity(bank={self.bank!r}, key=<secret>)"

    @property
    def public_key(self) -> bytes:
        return suite.public_key(self.private)


def save_trust(
    directory: Path, consortium: Consortium, matrices: dict[str, cpk.PublicMatrix]
) -> None:
    directory = Path(directory)
    for bank, m in matrices.items():
        write_atomic(directory / "matrices" / f"{bank}.pub", m.to_bytes())
    write_atomic(directory / "consortium.json", consortium.to_json().encode())


class TrustBundleError(HubiError, ValueError):
    """A trust bundle that cannot be used; the message names the folder and what is wrong."""


def load_trust(directory: Path) -> Trust:
    """Load and check a trust bundle: matrices must match the digests the consortium pins."""
    directory = Path(directory)
    if not directory.is_dir():
        raise TrustBundleError(f"trust bundle {directory}: no such folder")
    try:
        return _load_trust(directory)
    except (OSError, ValueError, HubiError) as exc:
        # Name the bundle: the caller is usually reading something else (a note, a book).
        raise TrustBundleError(f"trust bundle {directory}: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"no {Path(exc.filename).name} in it"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    return str(exc)


MAX_TRUST_FILE = 1 << 20  # a consortium file or a public matrix is tens of KB


def _read_trust_file(path: Path) -> bytes:
    """A file of the bundle, read only if it is a regular file of at most MAX_TRUST_FILE bytes:
    a bundle may come from anywhere (`note show --trust DIR`), so a FIFO there would hang the
    command and a link to /dev/zero fill its memory."""
    from hubi.objects import read_regular

    return read_regular(path, MAX_TRUST_FILE, "a file of a trust bundle")


# matrices checked in this process, by the SHA-256 of their file: the same bytes always pass
# (or fail) the same checks, and a process opens the same bundle often (tests, the demo, a
# node's merchant and bank commands). Bounded: a few consortia's matrices at most.
_CHECKED: dict[bytes, cpk.PublicMatrix] = {}
_CHECKED_MAX = 32


def public_matrix(raw: bytes) -> cpk.PublicMatrix:
    """cpk.PublicMatrix.from_bytes(raw) with every point checked, as fast as it can be: each
    compressed point is decoded by OpenSSL (which refuses a point off the curve, as
    ec.decode_point does) instead of a square root in Python per point, 1024 per matrix.
    Any point it refuses, or any doubt, goes the pure-Python way, with its exact error."""
    key = hashlib.sha256(raw).digest()
    matrix = _CHECKED.get(key)
    if matrix is None:
        matrix = _fast_matrix(raw) or cpk.PublicMatrix.from_bytes(raw)
        if len(_CHECKED) >= _CHECKED_MAX:
            _CHECKED.clear()
        _CHECKED[key] = matrix
    return matrix


def _fast_matrix(raw: bytes) -> cpk.PublicMatrix | None:
    """The matrix of `raw` with its points decoded by OpenSSL; None if any point is refused
    (the caller then names it the pure-Python way). ValueError for a bad header."""
    from cryptography.hazmat.primitives.asymmetric.ec import (
        SECP256R1,
        EllipticCurvePublicKey,
    )

    head = cpk.PublicMatrix.from_bytes(raw, validate=False)  # the header's checks and errors
    off = len(raw) - cpk.CELLS * cpk.POINT_LEN
    curve = SECP256R1()
    points = []
    for i in range(cpk.CELLS):
        cell = raw[off + i * cpk.POINT_LEN : off + (i + 1) * cpk.POINT_LEN]
        # ec.decode_point's own conditions first: a compressed point, x below the prime
        if cell[0] not in (2, 3) or int.from_bytes(cell[1:], "big") >= ec.P:
            return None
        try:
            numbers = EllipticCurvePublicKey.from_encoded_point(curve, cell).public_numbers()
        except ValueError:
            return None
        points.append((numbers.x, numbers.y))
    matrix = cpk.PublicMatrix(head.owner, points=points)
    # the points encode back to the file's bytes (what the consortium's digest pins)
    return matrix if matrix.to_bytes() == raw else None


def _load_trust(directory: Path) -> Trust:
    raw = _read_trust_file(directory / "consortium.json")
    # read here first for the guarantees the shared parser (MicroPython's too) cannot give
    jsonload.loads(raw, "consortium.json")
    consortium = Consortium.from_json(raw.decode("utf-8"))
    matrices = {}
    for bank in consortium.bank_ids():
        path = directory / "matrices" / f"{bank}.pub"
        if not path.exists():
            raise ValueError(f"public matrix of bank {bank} missing: matrices/{bank}.pub")
        try:
            matrices[bank] = public_matrix(_read_trust_file(path))
        except ValueError as exc:
            raise ValueError(f"matrices/{bank}.pub: {exc}") from exc
    trust = Trust(consortium, matrices)
    consortium.check_signatures(trust)
    return trust


def find_trust(start: Path) -> Path | None:
    """The nearest folder at or above `start` holding consortium.json (or a trust/ subfolder).
    Only named, never trusted by itself: a bundle beside a note may be its forger's."""
    start = Path(start).resolve()
    for d in [start, *start.parents]:
        if (d / "consortium.json").exists():
            return d
        if (d / "trust" / "consortium.json").exists():
            return d / "trust"
    return None


def make_consortium(
    name: str,
    kmcs: dict[str, Kmc],
    endpoints: dict[str, list[str]] | None = None,
    time: int = 0,
    separating: dict[str, int] | None = None,
) -> tuple[Consortium, dict[str, BankIdentity]]:
    """Issue each bank its own key from its KMC and build a consortium file signed by all.

    `separating` fixes banks' separating scalars (reproducible tests); default: random.
    """
    identities = {}
    entries = []
    for bank, kmc in sorted(kmcs.items()):
        priv, sep = kmc.issue(bank, (separating or {}).get(bank))
        identities[bank] = BankIdentity(bank, priv, sep)
        entries.append(BankEntry(bank, sep, kmc.public.digest(), (endpoints or {}).get(bank, [])))
    consortium = Consortium(name, entries, time=time)
    for bank, ident in identities.items():
        consortium.sign(bank, ident.private)
    return consortium, identities


def issue_account(
    kmc: Kmc, bank: BankIdentity, account: str, serial: int, time: int, currency: str = "CNY"
) -> tuple[int, codec.Obj]:
    """Issue an account key and its bank-sealed Template: (private key, template)."""
    if kmc.bank != bank.bank:
        raise ValueError(f"KMC of {kmc.bank} cannot issue accounts for bank {bank.bank}")
    priv, sep = kmc.issue(account)
    tpl = codec.make_template(bank.bank, serial, time, account, currency, sep)
    codec.sign(tpl, bank.private)
    return priv, tpl


# ------------------------------------------------------------------------------------------
# A "home" folder holds a whole installation on one machine (demo, tests, `consortium up`):
#   HOME/trust/...                      public trust bundle (see save_trust)
#   HOME/banks/<BANK>/kmc.secret        the bank's KMC private matrix   (0600)
#   HOME/banks/<BANK>/identity.secret   the bank's own private key      (0600)


def bank_dir(home: Path, bank: str) -> Path:
    return Path(home) / "banks" / bank


def create_home(
    home: Path, banks: list[str], name: str = "hubi", time: int = 0, seed: bytes | None = None
) -> Trust:
    """Set up KMCs, bank keys and a signed consortium file for `banks` under `home`."""
    kmcs = {b: Kmc.create(b, None if seed is None else seed + b.encode()) for b in banks}
    consortium, identities = make_consortium(name, kmcs, time=time)
    for b in banks:
        kmcs[b].save(bank_dir(home, b) / "kmc.secret")
        ident = identities[b]
        write_secret(
            bank_dir(home, b) / "identity.secret",
            ident.private.to_bytes(32, "big") + ident.separating_key,
        )
    save_trust(Path(home) / "trust", consortium, {b: k.public for b, k in kmcs.items()})
    return load_trust(Path(home) / "trust")


def _bank_secret(home: Path, bank: str, name: str, what: str) -> bytes:
    path = bank_dir(home, bank) / name
    try:
        return path.read_bytes()
    except FileNotFoundError:
        # Usually a mistyped account or --home: say which bank and which home, not just ENOENT.
        raise FileNotFoundError(
            f"bank {bank} has no {what} in home {home} (no file {path})"
        ) from None


def load_bank_identity(home: Path, bank: str) -> BankIdentity:
    raw = _bank_secret(home, bank, "identity.secret", "identity key")
    if len(raw) != 65:
        raise ValueError(f"identity file of bank {bank} is corrupt ({len(raw)} bytes)")
    priv = int.from_bytes(raw[:32], "big")
    if not 1 <= priv < ec.N:
        raise ValueError(f"identity file of bank {bank} is corrupt (bytes 0..31, key out of range)")
    try:
        ec.decode_point(raw[32:])  # the separating key: a point its templates' keys add to
    except ValueError as exc:
        raise ValueError(
            f"identity file of bank {bank} is corrupt (bytes 32..64, separating key: {exc})"
        ) from None
    return BankIdentity(bank, priv, raw[32:])


def load_kmc(home: Path, bank: str) -> Kmc:
    raw = _bank_secret(home, bank, "kmc.secret", "KMC")
    try:
        matrix = cpk.PrivateMatrix.from_bytes(raw)
    except ValueError as exc:  # says sizes and offsets only, never a scalar
        path = bank_dir(home, bank) / "kmc.secret"
        raise ValueError(f"KMC file of bank {bank} ({path}) is corrupt: {exc}") from None
    return Kmc(matrix)
