"""Authenticated records on the token's storage.

Every state file is one record::

    "HUBR"  ver:u8 (=1)  len:u16  body[len]  tag[16]
    tag = HMAC-SHA-256(key, name || header || body)[:16]

``name`` is under the tag, so a record copied to another file fails. The key is derived from
the device secret (core.keystore) except for the device record itself, which can only carry
a checksum key (it holds the secret). A record that is missing reads as None; one that is
present but fails its tag raises Corrupt. Writes go through Storage.write (temp file + rename),
so after a power cut a record holds its old or its new body, never a mix; if the main file is
gone (FAT's remove-then-rename), the temp file is taken when its tag is good.

Constant-time tag comparison: hubi_core.ct.equal.
"""

from hubi_core import ct
from hubi_core.ct import hmac_sha256

MAGIC = b"HUBR"
VERSION = 1
TAG_LEN = 16
_HEAD = 7


class Corrupt(Exception):
    """A state file exists but its record does not check out."""

    def __init__(self, name, why):
        super().__init__("%s: %s" % (name, why))
        self.name = name
        self.why = why


def seal_record(key, name, body):
    n = len(body)
    if n > 0xFFFF:
        raise ValueError("record %s: %d bytes, at most 65535" % (name, n))
    head = MAGIC + bytes((VERSION, n >> 8, n & 0xFF))
    tag = hmac_sha256(key, name.encode() + head + body)[:TAG_LEN]
    return head + body + tag


def open_record(key, name, raw):
    if len(raw) < _HEAD + TAG_LEN:
        raise Corrupt(name, "%d bytes, shorter than a record" % len(raw))
    if raw[:4] != MAGIC:
        raise Corrupt(name, "bad magic")
    if raw[4] != VERSION:
        raise Corrupt(name, "record version %d unknown" % raw[4])
    n = (raw[5] << 8) | raw[6]
    if len(raw) != _HEAD + n + TAG_LEN:
        raise Corrupt(name, "length %d does not match the file (%d bytes)" % (n, len(raw)))
    body = raw[_HEAD : _HEAD + n]
    tag = hmac_sha256(key, name.encode() + raw[:_HEAD] + body)[:TAG_LEN]
    if not ct.equal(tag, raw[_HEAD + n :]):
        raise Corrupt(name, "authentication tag mismatch")
    return body


class Records:
    """get/put/delete authenticated records by name on a Storage."""

    def __init__(self, storage, key):
        self.storage = storage
        self.key = key

    def get(self, name):
        raw = self.storage.read(name)
        if raw is None:
            tmp = self.storage.read(name + ".tmp")
            if tmp is None:
                return None
            try:
                return open_record(self.key, name, tmp)
            except Corrupt:
                return None  # an interrupted first write: as if never written
        return open_record(self.key, name, raw)

    def put(self, name, body):
        self.storage.write(name, seal_record(self.key, name, body))

    def delete(self, name):
        self.storage.remove(name)
        self.storage.remove(name + ".tmp")
