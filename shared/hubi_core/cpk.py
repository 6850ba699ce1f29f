"""Combined public keys (CPK) with separating keys (DESIGN §3).

A KMC holds a private matrix of 32 columns x 32 rows of scalars; the public matrix holds their
points. An identity hashes to one row per column; its combined key is the sum of the chosen
scalars (public: the sum of the chosen points).

Plain CPK falls to linear collusion (about 993 issued keys of one 32x32 matrix span the whole
space of identities), so every issued key adds a random separating key s:
private = combined + s (mod n), public = combined point + s*G. The separating public key travels
in the account's bank-signed Template; banks' are in the consortium file.
"""

import hashlib
import os

from hubi_core import ec, suite

COLS = 32
ROWS = 32
CELLS = COLS * ROWS
POINT_LEN = 33
ID_DOMAIN = b"hubi/cpk/identity/1\x00"
SEED_DOMAIN = b"hubi/cpk/matrix/1\x00"
# Public matrix file: suite, kind, version, owner (str8), then 1024 compressed points, row-major
# (row * COLS + col), so a token can read any point from flash by offset.
MATRIX_KIND = 0x0C
MATRIX_VERSION = 1
MAX_OWNER = 32


def identity_rows(identity):
    """Row index (0..31) chosen in each of the 32 columns for `identity` (a str)."""
    if not isinstance(identity, str) or not identity:
        raise ValueError("identity must be a non-empty string")
    h = hashlib.sha256(ID_DOMAIN + identity.encode()).digest()
    # One byte per column, low 5 bits: uniform over 32 rows.
    return [h[c] & (ROWS - 1) for c in range(COLS)]


def _random_scalar():
    while True:
        k = int.from_bytes(os.urandom(32), "big")
        if 1 <= k < ec.N:
            return k


def _seeded_scalar(seed, index):
    counter = 0
    while True:
        h = hashlib.sha256(
            SEED_DOMAIN + seed + index.to_bytes(2, "big") + counter.to_bytes(2, "big")
        ).digest()
        k = int.from_bytes(h, "big")
        if 1 <= k < ec.N:
            return k
        counter += 1


class PrivateMatrix:
    """A KMC's secret matrix. Never serialise it anywhere but the KMC's own protected store."""

    __slots__ = ("owner", "_cells")

    def __init__(self, owner, cells):
        if len(cells) != CELLS:
            raise ValueError("a private matrix has %d scalars" % CELLS)
        for k in cells:
            if not (1 <= k < ec.N):
                raise ValueError("matrix scalar out of range [1, n-1]")
        self.owner = owner
        self._cells = list(cells)

    @classmethod
    def generate(cls, owner, seed=None):
        """New matrix from the OS RNG, or reproducibly from `seed` (bytes; tests and demos)."""
        if seed is None:
            return cls(owner, [_random_scalar() for _ in range(CELLS)])
        return cls(owner, [_seeded_scalar(bytes(seed), i) for i in range(CELLS)])

    def __repr__(self):
        return "PrivateMatrix(owner=%r, <secret>)" % self.owner

    def combined_private(self, identity):
        rows = identity_rows(identity)
        total = 0
        for col in range(COLS):
            total += self._cells[rows[col] * COLS + col]
        return total % ec.N

    def public(self):
        # suite.public_key uses OpenSSL on CPython (milliseconds for 1024 points), pure elsewhere.
        return PublicMatrix(
            self.owner, points=[ec.decode_point(suite.public_key(k)) for k in self._cells]
        )

    def issue(self, identity, separating=None):
        """Issue `identity` a key: (private key, 33-byte separating public key).

        `separating` is the separating private scalar; by default a fresh random one.
        """
        s = separating if separating is not None else _random_scalar()
        if not (1 <= s < ec.N):
            raise ValueError("separating key out of range [1, n-1]")
        private = (self.combined_private(identity) + s) % ec.N
        if private == 0:  # probability 2^-256; refuse rather than issue a degenerate key
            raise ValueError("degenerate key; issue again")
        return private, suite.public_key(s, compressed=True)

    def to_bytes(self):
        """Secret serialisation for the KMC's own store (handle like a private key)."""
        owner = self.owner.encode()
        return bytes([len(owner)]) + owner + b"".join(k.to_bytes(32, "big") for k in self._cells)

    @classmethod
    def from_bytes(cls, data):
        data = bytes(data)
        n = data[0] if data else 0
        if n == 0 or n > MAX_OWNER or len(data) < 1 + n:
            raise ValueError("private matrix: %d bytes, no owner name at its start" % len(data))
        try:
            owner = data[1 : 1 + n].decode()
        except UnicodeError:
            raise ValueError("private matrix: owner (bytes 1..%d) is not UTF-8 text" % n) from None
        body = data[1 + n :]
        if len(body) != CELLS * 32:
            raise ValueError("private matrix must hold %d 32-byte scalars" % CELLS)
        return cls(owner, [int.from_bytes(body[i * 32 : i * 32 + 32], "big") for i in range(CELLS)])


class PublicMatrix:
    """A KMC's public matrix: 1024 points. `combined(identity)` is an identity's combined point.

    Points stay as their 33-byte encodings (in memory, or in a file read by offset, so a token
    keeps the matrix in flash) and are decoded, and validated, when first used; an in-memory
    matrix keeps the decoded points, a file-backed one (``open``: a token's small heap) does
    not.
    """

    __slots__ = ("owner", "_raw", "_path", "_off", "_points", "_cache")

    def __init__(self, owner, raw=None, path=None, off=0, points=None):
        self.owner = owner
        self._raw = raw
        self._path = path
        self._off = off
        self._points = {}
        self._cache = {}
        if points is not None:
            if len(points) != CELLS:
                raise ValueError("a public matrix has %d points" % CELLS)
            self._raw = b"".join(ec.encode_point(p, compressed=True) for p in points)
            self._off = 0
            for i in range(CELLS):
                self._points[i] = points[i]

    def _cell_bytes(self, i):
        start = self._off + i * POINT_LEN
        if self._raw is not None:
            return self._raw[start : start + POINT_LEN]
        with open(self._path, "rb") as f:
            f.seek(start)
            data = f.read(POINT_LEN)
        if len(data) != POINT_LEN:
            raise ValueError("public matrix file %s is truncated" % self._path)
        return data

    def _point(self, i):
        pt = self._points.get(i)
        if pt is None:
            try:
                pt = ec.decode_point(self._cell_bytes(i))
            except ValueError as exc:
                raise ValueError(
                    "public matrix %s: point %d invalid: %s" % (self.owner, i, exc)
                ) from None
            if self._raw is not None and len(self._points) < CELLS:
                self._points[i] = pt  # a file-backed matrix (a token's) keeps no points
        return pt

    def point(self, row, col):
        return self._point(row * COLS + col)

    def validate(self):
        """Decode every point (host default at load; a token checks the file's digest instead)."""
        for i in range(CELLS):
            self._point(i)
        return self

    def combined(self, identity):
        """Combined public point of `identity` (cached: a bank sees the same payers often)."""
        pt = self._cache.get(identity)
        if pt is None:
            rows = identity_rows(identity)
            pt = ec.point_sum(self._point(rows[c] * COLS + c) for c in range(COLS))
            if pt is None:
                raise ValueError("combined key of %r is the point at infinity" % identity)
            if len(self._cache) > 1024:
                self._cache.clear()
            self._cache[identity] = pt
        return pt

    def public_key(self, identity, separating_pub):
        """Full public key (65-byte SEC1) of `identity` given its separating public key."""
        sep = ec.decode_point(separating_pub)
        pt = ec.point_add(self.combined(identity), sep)
        if pt is None:
            raise ValueError("public key of %r is the point at infinity" % identity)
        return ec.encode_point(pt, compressed=False)

    def _head(self):
        owner = self.owner.encode()
        return bytes([1, MATRIX_KIND, MATRIX_VERSION, len(owner)]) + owner

    def to_bytes(self):
        if self._raw is not None:
            return self._head() + self._raw[self._off : self._off + CELLS * POINT_LEN]
        with open(self._path, "rb") as f:
            return f.read()

    def digest(self):
        """SHA-256 of the matrix file (what the consortium file pins); streams from flash."""
        if self._raw is not None:
            return hashlib.sha256(self.to_bytes()).digest()
        h = hashlib.sha256()
        buf = bytearray(512)
        with open(self._path, "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(buf[:n] if n < len(buf) else buf)
        return h.digest()

    @staticmethod
    def _parse_head(head, total_len):
        if len(head) < 4 or head[0] != 1:
            raise ValueError("public matrix: unknown suite (expected 1)")
        if head[1] != MATRIX_KIND:
            raise ValueError("public matrix: wrong object kind %d" % head[1])
        if head[2] != MATRIX_VERSION:
            raise ValueError("public matrix: unknown version %d" % head[2])
        n = head[3]
        if n == 0 or n > MAX_OWNER or len(head) < 4 + n:
            raise ValueError("public matrix: owner length %d out of range" % n)
        try:  # the same words on the token, whose UnicodeError says nothing
            owner = bytes(head[4 : 4 + n]).decode()
        except UnicodeError:
            raise ValueError(
                "public matrix: owner (bytes 4..%d) is not UTF-8 text" % (3 + n)
            ) from None
        off = 4 + n
        if total_len != off + CELLS * POINT_LEN:
            raise ValueError(
                "public matrix: expected %d bytes, got %d" % (off + CELLS * POINT_LEN, total_len)
            )
        return owner, off

    @classmethod
    def from_bytes(cls, data, validate=True):
        data = bytes(data)
        owner, off = cls._parse_head(data[: 4 + MAX_OWNER], len(data))
        m = cls(owner, raw=data, off=off)
        return m.validate() if validate else m

    @classmethod
    def open(cls, path):
        """File-backed matrix: points are read from the file by offset when needed."""
        import os as _os

        size = _os.stat(path)[6]
        with open(path, "rb") as f:
            head = f.read(4 + MAX_OWNER)
        owner, off = cls._parse_head(head, size)
        return cls(owner, path=path, off=off)
