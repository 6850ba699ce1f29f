"""Records and evidence-chained books (DESIGN §4), independent of any database.

A *book* is one account's chain of records; its keeper (a bank for its customers, or a merchant
for its own book) signs every record. Record ``n`` of book ``B`` carries:

- ``kind``      what happened (debit, credit, a notice or receipt received, ...)
- ``evidence``  the object bytes that justify it (the Note, or a notice)
- ``delta``     signed amount in minor units (debit < 0 < credit)
- ``lsum``      the evidence's linear sum (``hubi_core.lsum``; for a note: payer, serial, amount,
                purpose, payee)
- ``ecode``     ``ecode_n = ecode_(n-1) XOR lsum_n``, ``ecode_0 = 0``            (seed)
- ``coded_bal`` the new balance, ECIES-sealed to the keeper's key (see :class:`BookKeys`)
- ``sig8``      keeper's signature over (keeper, book, n, ecode)
- ``sig9``      keeper's signature over (keeper, book, n, coded_bal)

and, outside the record bytes, ``hchain_n = SHA-256(hchain_(n-1) || u64(n) || body_n)`` with
``hchain_0`` = 32 zero bytes. A *head* (keeper-signed statement of ``(book, n, hchain)``) is
updated in the same transaction as every append, so a cut-off tail shows.

Record bytes ("body"; fixed offsets first so a chain-only audit reads three slices):

    off len
    0    1   version (= 1)
    1    1   kind
    2    8   n                  u64 big-endian
    10   4   time               u32 Unix seconds
    14   8   delta              i64 big-endian, two's complement
    22   16  lsum
    38   16  ecode
    54   64  sig8               r||s, low S
    118  64  sig9               r||s, low S
    182  ..  keeper str8, book str8, coded_bal (u8 length + bytes), evidence (u16 length + bytes)

Signed messages (domain-separated; ``str8`` = u8 length + UTF-8):

    sig8   = "hubi/book/ecode/1\\0"   || str8(keeper) || str8(book) || u64(n) || ecode
    sig9   = "hubi/book/balance/1\\0" || str8(keeper) || str8(book) || u64(n) || u8 len || coded_bal
    head   = "hubi/book/head/1\\0"    || str8(keeper) || u32(time) || u8 count
             || count * (str8(book) || u64(n) || hchain)

One head statement may cover several books (the debit and the credit of one booking share one
signature); each book's head row stores the statement and checks that it names its own (n, hchain).

Balance sealing. Balances are ECIES blobs (``hubi_core.ecies`` format, opened by
``ecies.open_sealed(keeper_priv, blob, info)``) with ``info = "hubi/record-balance/1\\0" || str8(book) ||
u64(n) || u8(kind) || lsum``. The seed's ``key = rG`` is the blob's ephemeral point and ``β``
the key schedule that only the keeper's private key reopens. Like HPKE's multi-message contexts,
one sealing context (ephemeral key and its ECDH secret) serves up to ``SEAL_ROTATE`` blobs, each
with its own key and nonce derived from its own ``info``; (book, n, kind, lsum) never repeats with
another balance in an append-only book, so no (key, nonce) pair is used for two plaintexts.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from hubi.bank import merkle
from hubi_core import aesgcm, ec, ecies, suite

try:  # CPython: one OpenSSL key object per keeper instead of one per signature
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec as cec
    from cryptography.hazmat.primitives.asymmetric import utils as cutils
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    _X962 = Encoding.X962
    _COMPRESSED = PublicFormat.CompressedPoint
except ImportError:  # pragma: no cover - cryptography is a hard dependency of the host package
    cec = None

__all__ = [
    "BODY_FIXED",
    "BookKeys",
    "BookVerifier",
    "ChainError",
    "CryptoFailure",
    "Head",
    "KIND_CODES",
    "KIND_NAMES",
    "Record",
    "RecordFormatError",
    "ZERO16",
    "ZERO32",
    "append",
    "balance_info",
    "chain_hash",
    "head_message",
    "head_signed",
    "parse_head",
    "record_body",
    "sig8_message",
    "sig9_message",
    "sign_heads",
    "sign_heads_many",
    "xor16",
]

VERSION = 1
ZERO16 = bytes(16)
ZERO32 = bytes(32)
SIG_LEN = 64
BODY_FIXED = 182  # bytes before the variable part
MAX_EVIDENCE = 0xFFFF

DEBIT = 1
CREDIT = 2
NOTICE = 3  # a notice received (merchant's own book: SettlementNotice / BalanceNotice)
RECEIPT = 4  # a receipt received (payer's own book)
ADJUST = 5  # reserved: an operator correction, with its own evidence
KIND_NAMES = {
    DEBIT: "debit",
    CREDIT: "credit",
    NOTICE: "notice",
    RECEIPT: "receipt",
    ADJUST: "adjust",
}
KIND_CODES = {v: k for k, v in KIND_NAMES.items()}

D_SIG8 = b"hubi/book/ecode/1\x00"
D_SIG9 = b"hubi/book/balance/1\x00"
D_HEAD = b"hubi/book/head/1\x00"
D_HEADS = b"hubi/book/heads/2\x00"
D_BALANCE = b"hubi/record-balance/1\x00"

SEAL_ROTATE = 4096  # blobs per sealing context before a fresh ephemeral key

_FIXED = struct.Struct(">BBQIq16s16s64s64s")
assert _FIXED.size == BODY_FIXED
I64_MIN = -(1 << 63)  # a balance and a record's delta are signed 64-bit numbers
I64_MAX = (1 << 63) - 1


class RecordFormatError(ValueError):
    """Record bytes that do not parse; the message names the field and offset."""


class ChainError(ValueError):
    """An append that would break the chain (wrong head, balance overflow, bad values)."""


class CryptoFailure(RuntimeError):
    """The crypto library failed (out of memory, ...): nothing is wrong with the data, and the
    same call may succeed later. Not a ChainError, which a caller takes for a damaged book."""


@functools.lru_cache(maxsize=65536)
def str8(text: str) -> bytes:
    raw = text.encode()
    if not 1 <= len(raw) <= 255:
        raise ValueError(f"identifier {text!r} must be 1-255 bytes")
    return bytes([len(raw)]) + raw


def xor16(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(16, "big")


def chain_hash(prev: bytes, n: int, body: bytes) -> bytes:
    """hchain_n = SHA-256(hchain_(n-1) || u64(n) || body_n)."""
    return hashlib.sha256(prev + n.to_bytes(8, "big") + body).digest()


def sig8_message(keeper: str, book: str, n: int, ecode: bytes) -> bytes:
    return D_SIG8 + str8(keeper) + str8(book) + n.to_bytes(8, "big") + ecode


def sig9_message(keeper: str, book: str, n: int, coded_bal: bytes) -> bytes:
    return (
        D_SIG9
        + str8(keeper)
        + str8(book)
        + n.to_bytes(8, "big")
        + bytes([len(coded_bal)])
        + coded_bal
    )


def balance_info(book: str, n: int, kind: int, lsum: bytes) -> bytes:
    """The ECIES ``info`` of record n's coded balance (binds the blob to its record)."""
    return D_BALANCE + str8(book) + n.to_bytes(8, "big") + bytes([kind]) + lsum


def head_message(keeper: str, time: int, entries: Iterable[tuple[str, int, bytes]]) -> bytes:
    """Statement a keeper signs: the heads (book, n, hchain) it just wrote, at `time`."""
    entries = list(entries)
    if not 1 <= len(entries) <= 255:
        raise ValueError("a head statement names 1-255 books")
    out = [D_HEAD, str8(keeper), time.to_bytes(4, "big"), bytes([len(entries)])]
    for book, n, hchain in entries:
        if len(hchain) != 32:
            raise ValueError("hchain must be 32 bytes")
        out += [str8(book), n.to_bytes(8, "big"), hchain]
    return b"".join(out)


def _head_leaf(book: str, n: int, hchain: bytes) -> bytes:
    if len(hchain) != 32:
        raise ValueError("hchain must be 32 bytes")
    return str8(book) + n.to_bytes(8, "big") + hchain


def _merkle_paths(leaves: list[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """RFC 9162 root of the leaf hashes and every leaf's inclusion path (2n hashes in all)."""
    if len(leaves) == 1:
        return leaves[0], [[]]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    left, lp = _merkle_paths(leaves[:k])
    right, rp = _merkle_paths(leaves[k:])
    for p in lp:
        p.append(right)
    for p in rp:
        p.append(left)
    return merkle.node_hash(left, right), lp + rp


def sign_heads_many(
    keys: BookKeys, time: int, heads: list[tuple[str, int, bytes]]
) -> list[tuple[bytes, bytes]]:
    """One signature for the new heads of any number of books: (statement, signature) per head.

    The keeper signs ``D_HEADS || str8(keeper) || u32(time) || u32(count) || root``, the RFC 9162
    Merkle root over the leaves ``str8(book) || u64(n) || hchain``; each book's statement is that
    signed message followed by its own leaf, its index and its inclusion path, so a head row
    stands alone (``parse_head`` checks the path, ``head_signed`` gives the signed bytes)."""
    if not heads or len(heads) > 0xFFFFFFFF:
        raise ValueError("a head statement names at least one book")
    leaves = [_head_leaf(b, n, h) for b, n, h in heads]
    root, paths = _merkle_paths([merkle.leaf_hash(x) for x in leaves])
    signed = b"".join(
        (D_HEADS, str8(keys.keeper), time.to_bytes(4, "big"), len(heads).to_bytes(4, "big"), root)
    )
    sig = keys.sign(signed)
    return [
        (
            b"".join((signed, leaf, i.to_bytes(4, "big"), bytes([len(path)]), *path)),
            sig,
        )
        for i, (leaf, path) in enumerate(zip(leaves, paths))
    ]


def head_signed(statement: bytes) -> bytes:
    """The bytes a head statement's signature covers (RecordFormatError if malformed): the
    whole statement for a one-statement head (``D_HEAD``), the root message for ``D_HEADS``."""
    if statement.startswith(D_HEADS):
        try:
            kl = statement[len(D_HEADS)]
        except IndexError:
            raise RecordFormatError("head statement: truncated") from None
        end = len(D_HEADS) + 1 + kl + 4 + 4 + 32
        if len(statement) < end:
            raise RecordFormatError("head statement: truncated")
        return statement[:end]
    if statement.startswith(D_HEAD):
        return statement
    raise RecordFormatError("head statement: wrong domain tag")


def _parse_heads(statement: bytes) -> tuple[str, int, list[tuple[str, int, bytes]]]:
    pos = len(D_HEADS)
    kl = statement[pos]
    keeper = statement[pos + 1 : pos + 1 + kl].decode()
    pos += 1 + kl
    time = int.from_bytes(statement[pos : pos + 4], "big")
    count = int.from_bytes(statement[pos + 4 : pos + 8], "big")
    root = statement[pos + 8 : pos + 40]
    leaf_at = pos + 40
    bl = statement[leaf_at]
    book = statement[leaf_at + 1 : leaf_at + 1 + bl].decode()
    pos = leaf_at + 1 + bl
    n = int.from_bytes(statement[pos : pos + 8], "big")
    hchain = statement[pos + 8 : pos + 40]
    leaf = statement[leaf_at : pos + 40]
    pos += 40
    index = int.from_bytes(statement[pos : pos + 4], "big")
    depth = statement[pos + 4]
    pos += 5
    if not bl or len(root) != 32 or len(hchain) != 32 or len(statement) != pos + 32 * depth:
        raise RecordFormatError("head statement: truncated or trailing bytes")
    path = [statement[pos + 32 * i : pos + 32 * i + 32] for i in range(depth)]
    try:
        merkle.verify_inclusion(merkle.leaf_hash(leaf), index, count, path, root)
    except merkle.MerkleError as exc:
        raise RecordFormatError(
            f"head statement: the head is not under the signed root ({exc})"
        ) from None
    return keeper, time, [(book, n, hchain)]


def parse_head(statement: bytes) -> tuple[str, int, list[tuple[str, int, bytes]]]:
    """(keeper, time, [(book, n, hchain)]) of a head statement; RecordFormatError if malformed.

    For a ``sign_heads_many`` statement the one entry is the statement's own book, and only after
    its inclusion path led to the signed root."""
    try:
        if statement.startswith(D_HEADS):
            return _parse_heads(statement)
        if not statement.startswith(D_HEAD):
            raise RecordFormatError("head statement: wrong domain tag")
        pos = len(D_HEAD)
        kl = statement[pos]
        keeper = statement[pos + 1 : pos + 1 + kl].decode()
        pos += 1 + kl
        time = int.from_bytes(statement[pos : pos + 4], "big")
        count = statement[pos + 4]
        pos += 5
        entries = []
        for _ in range(count):
            bl = statement[pos]
            book = statement[pos + 1 : pos + 1 + bl].decode()
            pos += 1 + bl
            n = int.from_bytes(statement[pos : pos + 8], "big")
            hchain = statement[pos + 8 : pos + 40]
            if len(hchain) != 32:
                raise RecordFormatError("head statement: truncated")
            pos += 40
            entries.append((book, n, hchain))
        if pos != len(statement):
            raise RecordFormatError("head statement: %d trailing bytes" % (len(statement) - pos))
        return keeper, time, entries
    except (IndexError, UnicodeDecodeError) as exc:
        raise RecordFormatError(f"head statement: {exc}") from None


# --------------------------------------------------------------------------------------- record


@dataclass(frozen=True)
class Record:
    """One record of one book (see the module docstring for every field)."""

    keeper: str
    book: str
    n: int
    kind: int
    time: int
    delta: int
    lsum: bytes
    ecode: bytes
    coded_bal: bytes
    evidence: bytes
    sig8: bytes
    sig9: bytes

    @property
    def kind_name(self) -> str:
        return KIND_NAMES.get(self.kind, f"kind-{self.kind}")

    def body(self) -> bytes:
        """The canonical record bytes (what the hash chain and the register cover)."""
        return record_body(
            self.keeper,
            self.book,
            self.n,
            self.kind,
            self.time,
            self.delta,
            self.lsum,
            self.ecode,
            self.coded_bal,
            self.evidence,
            self.sig8,
            self.sig9,
        )

    @classmethod
    def parse(cls, body: bytes) -> Record:
        """Parse record bytes; RecordFormatError names what is wrong."""
        body = bytes(body)
        if len(body) < BODY_FIXED + 5:
            raise RecordFormatError(f"record is {len(body)} bytes, shorter than its fixed part")
        version, kind, n, time, delta, lsum, ecode, sig8, sig9 = _FIXED.unpack_from(body)
        if version != VERSION:
            raise RecordFormatError(f"record version {version} unknown (offset 0)")
        pos = BODY_FIXED
        fields = []
        for what in ("keeper", "book"):
            ln = body[pos]
            raw = body[pos + 1 : pos + 1 + ln]
            if ln == 0 or len(raw) != ln:
                raise RecordFormatError(f"record {what}: bad length at offset {pos}")
            try:
                fields.append(raw.decode())
            except UnicodeDecodeError:
                raise RecordFormatError(f"record {what}: not UTF-8 (offset {pos})") from None
            pos += 1 + ln
        if pos >= len(body):
            raise RecordFormatError(f"record truncated at offset {pos} (coded balance)")
        bl = body[pos]
        coded = body[pos + 1 : pos + 1 + bl]
        if len(coded) != bl:
            raise RecordFormatError(f"record coded balance truncated (offset {pos})")
        pos += 1 + bl
        if pos + 2 > len(body):
            raise RecordFormatError(f"record truncated at offset {pos} (evidence length)")
        el = int.from_bytes(body[pos : pos + 2], "big")
        evidence = body[pos + 2 : pos + 2 + el]
        if len(evidence) != el:
            raise RecordFormatError(f"record evidence truncated (offset {pos})")
        pos += 2 + el
        if pos != len(body):
            raise RecordFormatError(f"record has {len(body) - pos} trailing bytes (offset {pos})")
        return cls(
            fields[0], fields[1], n, kind, time, delta, lsum, ecode, coded, evidence, sig8, sig9
        )

    def to_json(self) -> dict:
        return {
            "keeper": self.keeper,
            "book": self.book,
            "n": self.n,
            "kind": self.kind_name,
            "time": self.time,
            "delta": self.delta,
            "lsum": self.lsum.hex(),
            "ecode": self.ecode.hex(),
            "coded_balance": self.coded_bal.hex(),
            "evidence": self.evidence.hex(),
            "sig8": self.sig8.hex(),
            "sig9": self.sig9.hex(),
        }


def record_body(
    keeper: str,
    book: str,
    n: int,
    kind: int,
    time: int,
    delta: int,
    lsum: bytes,
    ecode: bytes,
    coded_bal: bytes,
    evidence: bytes,
    sig8: bytes,
    sig9: bytes,
) -> bytes:
    """Record bytes from its fields (``Record(...).body()`` without the object)."""
    if not I64_MIN <= delta <= I64_MAX:
        raise ChainError(f"record {book}#{n}: delta {delta} out of range")
    if len(coded_bal) > 255:
        raise ChainError(f"record {book}#{n}: coded balance over 255 bytes")
    if len(evidence) > MAX_EVIDENCE:
        raise ChainError(f"record {book}#{n}: evidence over {MAX_EVIDENCE} bytes")
    return b"".join(
        (
            _FIXED.pack(VERSION, kind, n, time, delta, lsum, ecode, sig8, sig9),
            str8(keeper),
            str8(book),
            bytes([len(coded_bal)]),
            coded_bal,
            len(evidence).to_bytes(2, "big"),
            evidence,
        )
    )


def body_n(body: bytes) -> int:
    """Record number stored in record bytes (no full parse)."""
    return int.from_bytes(body[2:10], "big")


@dataclass(frozen=True)
class Head:
    """The state of a book after its last record: what the next append builds on.

    ``coded_bal`` is the last record's sealed balance (None for an empty book); ``statement`` and
    ``sig`` the keeper-signed head statement that names (book, n, hchain)."""

    book: str
    n: int = 0
    ecode: bytes = ZERO16
    hchain: bytes = ZERO32
    coded_bal: bytes | None = None
    last_kind: int = 0
    last_lsum: bytes = ZERO16
    statement: bytes = b""
    sig: bytes = b""

    def balance_info(self) -> bytes:
        return balance_info(self.book, self.n, self.last_kind, self.last_lsum)


# ---------------------------------------------------------------------------------------- keys


def _low_s(r: int, s: int) -> bytes:
    if s > suite.HALF_N:
        s = ec.N - s
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


class BookVerifier:
    """Checks a keeper's record and head signatures with one cached OpenSSL key object.

    Accepts only low-S signatures (a record has one encoding, as a note does)."""

    def __init__(self, keeper: str, public_key: bytes):
        self.keeper = keeper
        self.public_key = bytes(public_key)
        self._key = None
        if cec is not None:
            self._key = cec.EllipticCurvePublicKey.from_encoded_point(
                cec.SECP256R1(), self.public_key
            )

    def verify(self, msg: bytes, sig: bytes) -> bool:
        if len(sig) != SIG_LEN:
            return False
        r = int.from_bytes(sig[:32], "big")
        s = int.from_bytes(sig[32:], "big")
        if not (1 <= r < ec.N and 1 <= s <= suite.HALF_N):
            return False
        if self._key is None:  # pragma: no cover
            return suite.verify(self.public_key, msg, sig)
        try:
            self._key.verify(cutils.encode_dss_signature(r, s), msg, _ECDSA)
            return True
        except InvalidSignature:
            return False

    def verify_head(self, statement: bytes, sig: bytes) -> bool:
        """A head statement's signature (either format, see ``head_signed``)."""
        try:
            return self.verify(head_signed(statement), sig)
        except RecordFormatError:
            return False

    def check_record(self, rec: Record) -> list[str]:
        """Names of the record signatures that fail: subset of ['sig8', 'sig9']."""
        bad = []
        if rec.keeper != self.keeper or not self.verify(
            sig8_message(rec.keeper, rec.book, rec.n, rec.ecode), rec.sig8
        ):
            bad.append("sig8")
        if rec.keeper != self.keeper or not self.verify(
            sig9_message(rec.keeper, rec.book, rec.n, rec.coded_bal), rec.sig9
        ):
            bad.append("sig9")
        return bad


_ECDSA = cec.ECDSA(hashes.SHA256(), deterministic_signing=True) if cec is not None else None


# ------------------------------------------------------------------------- batch signing


class _BaseMul:
    """k*G on P-256 by the system's libcrypto through ctypes (``EC_POINT_mul`` with the
    generator: the fixed-base, constant-time path OpenSSL's own ECDSA uses for its nonce point).

    One set of scratch objects per thread. ``available()`` is None when no usable libcrypto is
    found; the signer then signs through ``cryptography`` one message at a time."""

    _NID_P256 = 415  # NID_X9_62_prime256v1
    _BN_FLG_CONSTTIME = 0x04

    def __init__(self, lib: Any):
        self.lib = lib
        self.local = threading.local()

    @classmethod
    def load(cls) -> _BaseMul | None:
        import ctypes
        import ctypes.util

        try:
            path = ctypes.util.find_library("crypto")
            if not path:
                return None
            lib = ctypes.CDLL(path)
            vp, ci = ctypes.c_void_p, ctypes.c_int
            for name, res, args in (
                ("EC_GROUP_new_by_curve_name", vp, [ci]),
                ("EC_GROUP_free", None, [vp]),
                ("EC_POINT_new", vp, [vp]),
                ("EC_POINT_free", None, [vp]),
                ("BN_new", vp, []),
                ("BN_clear_free", None, [vp]),
                ("BN_free", None, [vp]),
                ("BN_clear", None, [vp]),
                ("BN_set_flags", None, [vp, ci]),
                ("BN_CTX_new", vp, []),
                ("BN_CTX_free", None, [vp]),
                ("BN_bin2bn", vp, [ctypes.c_char_p, ci, vp]),
                ("BN_bn2binpad", ci, [vp, ctypes.c_char_p, ci]),
                ("EC_POINT_mul", ci, [vp, vp, vp, vp, vp, vp]),
                ("EC_POINT_get_affine_coordinates", ci, [vp, vp, vp, vp, vp]),
            ):
                fn = getattr(lib, name)
                fn.restype = res
                fn.argtypes = args
            me = cls(lib)
            # the same x as cryptography's own k*G, or no fast path at all
            k = 0x5EED5EED5EED5EED5EED5EED5EED5EED5EED5EED5EED5EED5EED5EED5EED5EED
            want = cec.derive_private_key(k, cec.SECP256R1()).public_key().public_numbers().x
            if me.base_x([k]) != [want]:
                return None
            return me
        except Exception:  # noqa: BLE001 - any trouble with the library: the plain path
            return None

    def _scratch(self) -> Any:
        s = getattr(self.local, "s", None)
        if s is None:
            s = self.local.s = _Scratch(self.lib)
        return s

    def base_x(self, ks: list[int]) -> list[int]:
        """x coordinates of k*G (affine, as ints) for nonces k in [1, n-1]."""
        s = self._scratch()
        lib = self.lib
        bin2bn, mul, affine, bn2bin = (
            lib.BN_bin2bn,
            lib.EC_POINT_mul,
            lib.EC_POINT_get_affine_coordinates,
            lib.BN_bn2binpad,
        )
        group, ctx, kbn, xbn, pt, buf = s.group, s.ctx, s.k, s.x, s.pt, s.buf
        out = []
        try:
            for k in ks:
                if not bin2bn(k.to_bytes(32, "big"), 32, kbn):
                    raise CryptoFailure("libcrypto: BN_bin2bn failed")
                if mul(group, pt, kbn, None, None, ctx) != 1:
                    raise CryptoFailure("libcrypto: EC_POINT_mul failed")
                if affine(group, pt, xbn, None, ctx) != 1 or bn2bin(xbn, buf, 32) != 32:
                    raise CryptoFailure("libcrypto: affine coordinates failed")
                out.append(int.from_bytes(buf.raw, "big"))
        finally:
            lib.BN_clear(kbn)
        return out


class _Scratch:
    """One thread's libcrypto objects for _BaseMul (freed with the thread's local storage)."""

    def __init__(self, lib: Any):
        import ctypes

        self.lib = lib
        self.group = lib.EC_GROUP_new_by_curve_name(_BaseMul._NID_P256)
        self.ctx = lib.BN_CTX_new()
        self.k = lib.BN_new()
        self.x = lib.BN_new()
        self.pt = lib.EC_POINT_new(self.group) if self.group else None
        if not (self.group and self.ctx and self.k and self.x and self.pt):
            raise CryptoFailure("libcrypto: out of memory")
        lib.BN_set_flags(self.k, _BaseMul._BN_FLG_CONSTTIME)
        self.buf = ctypes.create_string_buffer(32)

    def __del__(self) -> None:
        try:
            lib = self.lib
            lib.EC_POINT_free(self.pt)
            lib.BN_clear_free(self.k)
            lib.BN_free(self.x)
            lib.BN_CTX_free(self.ctx)
            lib.EC_GROUP_free(self.group)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


_BASEMUL_STATE: list[_BaseMul | None] = []
_BASEMUL_LOCK = threading.Lock()


def _basemul() -> _BaseMul | None:
    if not _BASEMUL_STATE:
        with _BASEMUL_LOCK:
            if not _BASEMUL_STATE:
                _BASEMUL_STATE.append(_BaseMul.load() if cec is not None else None)
    return _BASEMUL_STATE[0]


_X36 = bytes(b ^ 0x36 for b in range(256))
_X5C = bytes(b ^ 0x5C for b in range(256))
_PAD36 = b"\x36" * 32
_PAD5C = b"\x5c" * 32
_V0 = b"\x01" * 32
_N = ec.N
_HALF_N = suite.HALF_N
_sha256 = hashlib.sha256


def _hmac_key(key: bytes) -> tuple[Any, Any]:
    """HMAC-SHA-256 states for a 32-byte key (inner and outer pads absorbed)."""
    return _sha256(key.translate(_X36) + _PAD36), _sha256(key.translate(_X5C) + _PAD5C)


def _hmac(state: tuple[Any, Any], msg: bytes) -> bytes:
    inner = state[0].copy()
    inner.update(msg)
    outer = state[1].copy()
    outer.update(inner.digest())
    return outer.digest()


class _Rfc6979:
    """RFC 6979 §3.2 nonces (HMAC-SHA-256) for one P-256 key: the nonces ``suite.sign`` and
    OpenSSL's deterministic ECDSA use, with the key-only part of the first HMAC absorbed once."""

    def __init__(self, private: int):
        self.x = private.to_bytes(32, "big")
        inner, outer = _hmac_key(bytes(32))
        inner.update(_V0 + b"\x00" + self.x[:31])  # first 64 bytes of V || 0x00 || x || h1
        self.head = (inner, outer)

    def first(self, h1: bytes) -> int:
        """The first RFC 6979 candidate nonce for message digest h1, or 0 if it is not in
        [1, n-1] (about 2^-32: the caller then signs that message the plain way, which goes on
        to the next candidate as RFC 6979 says)."""
        z = int.from_bytes(h1, "big")
        h = h1 if z < _N else (z - _N).to_bytes(32, "big")  # bits2octets
        x = self.x
        k = _hmac(self.head, x[31:] + h)
        st = _hmac_key(k)
        v = _hmac(st, _V0)
        k = _hmac(st, v + b"\x01" + x + h)
        st = _hmac_key(k)
        v = _hmac(st, _hmac(st, v))
        cand = int.from_bytes(v, "big")
        return cand if 1 <= cand < _N else 0


_BATCH_MIN = 3  # below this, one inversion per nonce costs more than OpenSSL's own signing


class _SealContext:
    __slots__ = ("header", "prk", "used")

    def __init__(self, header: bytes, prk: tuple[Any, Any]):
        self.header = header
        self.prk = prk  # HKDF-Extract of the context's ECDH secret, as HMAC states
        self.used = 0


def _hkdf(z: bytes, ctx: bytes, length: int) -> bytes:
    """HKDF-SHA-256 exactly as ``hubi_core.ecies`` (salt ``ecies.SALT``), with C-speed HMAC."""
    prk = hmac.digest(ecies.SALT, z, "sha256")
    out = b""
    t = b""
    i = 1
    while len(out) < length:
        t = hmac.digest(prk, t + ctx + bytes([i]), "sha256")
        out += t
        i += 1
    return out[:length]


def _prk(z: bytes) -> tuple[Any, Any]:
    """HKDF-Extract (salt ``ecies.SALT``) of an ECDH secret, kept as HMAC states."""
    return _hmac_key(hmac.digest(ecies.SALT, z, "sha256"))


_OKM_LEN = aesgcm.KEY_LEN + aesgcm.NONCE_LEN
assert 32 < _OKM_LEN <= 64


def _okm(prk: tuple[Any, Any], ctx: bytes) -> bytes:
    """HKDF-Expand to key || nonce: the same bytes as ``_hkdf(z, ctx, 44)``."""
    t1 = _hmac(prk, ctx + b"\x01")
    return t1 + _hmac(prk, t1 + ctx + b"\x02")[: _OKM_LEN - 32]


class BookKeys(BookVerifier):
    """A keeper's private key: signs records and heads, seals and opens balances.

    Signatures are ECDSA P-256 with RFC 6979 nonces and low S: the same bytes as
    ``hubi_core.suite.sign``. ``repr`` never shows the key."""

    def __init__(self, keeper: str, private: int):
        suite.check_private(private)
        self._priv = private
        self._okey = cec.derive_private_key(private, cec.SECP256R1()) if cec is not None else None
        super().__init__(keeper, suite.public_key(private))
        self._rfc6979 = _Rfc6979(private)
        self._recipient = ec.encode_point(ec.decode_point(self.public_key), compressed=True)
        self._lock = threading.Lock()
        self._ctx: _SealContext | None = None
        self._z_cache: OrderedDict[bytes, tuple[Any, Any]] = OrderedDict()  # header -> PRK

    def __repr__(self) -> str:
        return f"BookKeys(keeper={self.keeper!r}, key=<secret>)"

    # -- signatures
    def sign(self, msg: bytes) -> bytes:
        return self._sign_plain(msg)

    def _sign_plain(self, msg: bytes) -> bytes:
        """OpenSSL's deterministic ECDSA through ``cryptography`` (``suite.sign``'s bytes)."""
        if self._okey is None:  # pragma: no cover
            return suite.sign(self._priv, msg)
        r, s = cutils.decode_dss_signature(self._okey.sign(msg, _ECDSA))
        return _low_s(r, s)

    def sign_many(self, msgs: Sequence[bytes]) -> list[bytes]:
        """``[self.sign(m) for m in msgs]``, the same bytes (RFC 6979 nonces, low S), cheaper for
        a batch: each nonce point is one fixed-base multiplication in libcrypto and the nonces
        share one inversion mod n, blinded by a random factor so it never sees a nonce alone."""
        bm = _basemul() if len(msgs) >= _BATCH_MIN else None
        if bm is None:
            return [self._sign_plain(m) for m in msgs]
        digests = [_sha256(m).digest() for m in msgs]
        first = self._rfc6979.first
        ks = [first(h) for h in digests]
        if 0 in ks:  # a first candidate >= n (about 2^-32): that message the plain way
            return [self._sign_plain(m) for m in msgs]
        xs = bm.base_x(ks)
        n = _N
        acc = int.from_bytes(os.urandom(32), "big") % (n - 1) + 1
        prefix = []
        for k in ks:
            prefix.append(acc)
            acc = acc * k % n
        inv = pow(acc, -1, n)
        d = self._priv
        out: list[bytes] = [b""] * len(ks)
        for i in range(len(ks) - 1, -1, -1):
            kinv = inv * prefix[i] % n
            inv = inv * ks[i] % n
            r = xs[i] % n
            s = kinv * (int.from_bytes(digests[i], "big") + r * d) % n
            if r == 0 or s == 0:  # about 2^-256: the next RFC 6979 candidate, the plain way
                out[i] = self._sign_plain(msgs[i])
                continue
            if s > _HALF_N:
                s = n - s
            out[i] = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return out

    def sign_obj(self, obj):
        """Sign every signed field of a hubi_core Obj with this key (same bytes as codec.sign)."""
        from hubi_core import codec

        names = [name for name in codec.signed_fields(obj.kind) if name in obj.values]
        sigs = self.sign_many([codec.field_message(obj, name) for name in names])
        obj.sigs.update(zip(names, sigs))
        obj.raw = None
        return obj

    # -- balances
    def _context(self) -> _SealContext:
        with self._lock:
            ctx = self._ctx
            if ctx is None or ctx.used >= SEAL_ROTATE:
                eph = suite.generate_private()
                header = bytes([ecies.SUITE_BYTE]) + suite.public_key(eph, compressed=True)
                prk = _prk(suite.ecdh(eph, self._recipient))
                ctx = self._ctx = _SealContext(header, prk)
                self._z_cache[header] = prk
            ctx.used += 1
            return ctx

    def seal_balance(self, info: bytes, balance: int) -> bytes:
        """ECIES blob of the balance (i64) for this keeper, openable by ecies.open_sealed."""
        if not I64_MIN <= balance <= I64_MAX:
            raise ChainError(f"balance {balance} out of the 64-bit range")
        ctx = self._context()
        okm = _okm(ctx.prk, ctx.header + self._recipient + info)
        plain = balance.to_bytes(8, "big", signed=True)
        if cec is None:  # pragma: no cover
            return ctx.header + aesgcm.encrypt(okm[:32], okm[32:], plain, ctx.header)
        return ctx.header + AESGCM(okm[:32]).encrypt(okm[32:], plain, ctx.header)

    def open_balance(self, info: bytes, blob: bytes) -> int:
        """The balance in a blob sealed to this keeper; ecies errors (ValueError) otherwise."""
        blob = bytes(blob)
        header = blob[: ecies.HEADER_LEN]
        if len(blob) != ecies.OVERHEAD + 8:
            raise ecies.ShortBlob(
                f"coded balance is {len(blob)} bytes, expected {ecies.OVERHEAD + 8}"
            )
        with self._lock:
            prk = self._z_cache.get(header)
        if prk is None:
            if header[0] != ecies.SUITE_BYTE:
                raise ecies.BadSuite("coded balance: byte 0 is not suite 1")
            try:
                prk = _prk(suite.ecdh(self._priv, header[1:]))
            except ValueError as exc:
                raise ecies.BadPoint(f"coded balance: ephemeral key: {exc}") from None
            with self._lock:
                self._z_cache[header] = prk
                while len(self._z_cache) > 1024:
                    self._z_cache.popitem(last=False)
        okm = _okm(prk, header + self._recipient + info)
        try:
            if cec is None:  # pragma: no cover
                plain = aesgcm.decrypt(okm[:32], okm[32:], blob[ecies.HEADER_LEN :], header)
            else:
                plain = AESGCM(okm[:32]).decrypt(okm[32:], blob[ecies.HEADER_LEN :], header)
        except MemoryError as exc:  # the library's trouble, not the blob's
            raise CryptoFailure("opening a coded balance: out of memory") from exc
        except Exception:
            raise ecies.AuthFailed(
                "coded balance does not open (wrong key, altered blob, or moved to another record)"
            ) from None
        return int.from_bytes(plain, "big", signed=True)

    def balance_of(self, head: Head) -> int:
        """Current balance of a book from its head (0 for an empty book). ChainError for a head
        past record 0 without a coded balance: its row was altered, and 0 would be a lie that
        the next record signs."""
        if head.n == 0:
            return 0
        if head.coded_bal is None:
            raise ChainError(
                f"book {head.book}'s head is at record {head.n} but holds no coded balance: "
                "the head row was altered (hubi audit verify names it)"
            )
        return self.open_balance(head.balance_info(), head.coded_bal)


def seal_to(pub: bytes, plaintext: bytes, info: bytes = b"") -> bytes:
    """``ecies.seal`` with a fresh ephemeral key, on OpenSSL throughout: the same blob format and
    key schedule (``ecies.open_sealed`` opens it), about three times faster on CPython."""
    if cec is None:  # pragma: no cover
        return ecies.seal(pub, plaintext, info)
    try:
        peer = cec.EllipticCurvePublicKey.from_encoded_point(cec.SECP256R1(), bytes(pub))
    except ValueError as exc:
        raise ecies.BadPoint(f"ecies: recipient public key: {exc}") from None
    recipient = peer.public_bytes(_X962, _COMPRESSED)
    eph = cec.generate_private_key(cec.SECP256R1())
    header = bytes([ecies.SUITE_BYTE]) + eph.public_key().public_bytes(_X962, _COMPRESSED)
    z = eph.exchange(cec.ECDH(), peer)
    okm = _hkdf(z, header + recipient + info, aesgcm.KEY_LEN + aesgcm.NONCE_LEN)
    return header + AESGCM(okm[:32]).encrypt(okm[32:], plaintext, header)


# -------------------------------------------------------------------------------------- append


def append(
    keys: BookKeys,
    head: Head,
    *,
    kind: int,
    time: int,
    delta: int,
    lsum: bytes,
    evidence: bytes,
    balance: int | None = None,
) -> tuple[Record, bytes, bytes]:
    """Build record head.n + 1 of head.book: (record, body, hchain). Pure: stores nothing.

    ``balance`` is the balance before this record (default: opened from the head's coded
    balance). The caller stores body and hchain and a new head in one transaction, e.g. with
    ``Head(book, rec.n, rec.ecode, hchain, rec.coded_bal, kind, lsum, statement, sig)``."""
    if kind not in KIND_NAMES:
        raise ChainError(f"unknown record kind {kind}")
    if len(lsum) != 16:
        raise ChainError("lsum must be 16 bytes")
    if balance is None:
        balance = keys.balance_of(head)
    n = head.n + 1
    new_balance = balance + delta
    ecode = xor16(head.ecode, lsum)
    coded = keys.seal_balance(balance_info(head.book, n, kind, lsum), new_balance)
    sig8 = keys.sign(sig8_message(keys.keeper, head.book, n, ecode))
    sig9 = keys.sign(sig9_message(keys.keeper, head.book, n, coded))
    rec = Record(
        keys.keeper, head.book, n, kind, time, delta, lsum, ecode, coded, evidence, sig8, sig9
    )
    body = rec.body()
    return rec, body, chain_hash(head.hchain, n, body)


def next_head(rec: Record, hchain: bytes, statement: bytes, sig: bytes) -> Head:
    return Head(
        rec.book, rec.n, rec.ecode, hchain, rec.coded_bal, rec.kind, rec.lsum, statement, sig
    )


def sign_heads(
    keys: BookKeys, time: int, heads: list[tuple[str, int, bytes]]
) -> tuple[bytes, bytes]:
    """(statement, signature) for the new heads of one transaction."""
    statement = head_message(keys.keeper, time, heads)
    return statement, keys.sign(statement)
