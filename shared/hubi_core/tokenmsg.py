"""Payloads of the token's application messages (docs/token.md, "Link messages").

The message type numbers and error codes are in ``protocol`` (PROVISION_*, PAY_*, ...); this
module holds the few payload layouts both ends must build and parse identically:

Provisioning bundle (the plaintext of PROVISION_COMMIT, ECIES-sealed to the token's transport
key with info PROVISION_INFO): fields ``tag:u8 len:varint value``, tags increasing, each once:

    1 account key      32 bytes, big-endian scalar (the only secret that ever crosses the link)
    2 template         the account's full Template (bank-sealed)
    3 pin              4..8 ASCII digits (the customer's initial PIN)
    4 consortium       SHA-256 of the consortium file staged with PROVISION_FILE
    5 allowance        OfflineAllowance (optional)
    6 time             u32 Unix time (sets the token's clock)

PROVISION_FILE: ``name_len:u8 name file-bytes`` (name "consortium.json" or "<BANK>.pub").
PAY_REQUEST reply: ``status:u8`` then a note (PAY_NOTE) or a JSON summary (PAY_NEEDS_PIN).
"""

from hubi_core.errors import BadValue
from hubi_core.pin import pin_problem
from hubi_core.wire import Reader, varint

PROVISION_INFO = b"hubi/provision/1"

B_KEY = 1
B_TEMPLATE = 2
B_PIN = 3
B_CONSORTIUM = 4
B_ALLOWANCE = 5
B_TIME = 6
_NAMES = {
    B_KEY: "key",
    B_TEMPLATE: "template",
    B_PIN: "pin",
    B_CONSORTIUM: "consortium",
    B_ALLOWANCE: "allowance",
    B_TIME: "time",
}
_REQUIRED = (B_KEY, B_TEMPLATE, B_PIN, B_CONSORTIUM)


def check_pin(pin):
    """The bundle's PIN as the token will take it (the rule of hubi_core.pin)."""
    why = pin_problem(pin)
    if why:
        raise BadValue(why)
    return pin


# PAY_REQUEST reply status byte
PAY_NOTE = 1  # the user confirmed on the device; the note follows
PAY_NEEDS_PIN = 2  # headless: JSON summary follows; answer with PAY_CONFIRM(pin) or PAY_CANCEL

MAX_NAME = 40


def encode_bundle(fields):
    """fields: {name: bytes} with the names above ('time' may be an int)."""
    out = []
    for tag in sorted(_NAMES):
        v = fields.get(_NAMES[tag])
        if v is None:
            if tag in _REQUIRED:
                raise BadValue("provisioning bundle: %s missing" % _NAMES[tag])
            continue
        if tag == B_TIME and isinstance(v, int):
            v = v.to_bytes(4, "big")
        v = bytes(v)
        out.append(bytes([tag]) + varint(len(v)) + v)
    return b"".join(out)


def decode_bundle(data):
    r = Reader(data, "provisioning bundle")
    out = {}
    last = 0
    while r.remaining():
        tag = r.u8("tag")
        if tag not in _NAMES or tag <= last:
            raise BadValue("provisioning bundle: tag %d unknown or out of order" % tag)
        last = tag
        n = r.varint("length", 4096)
        out[_NAMES[tag]] = r.take(n, _NAMES[tag])
    for tag in _REQUIRED:
        if _NAMES[tag] not in out:
            raise BadValue("provisioning bundle: %s missing" % _NAMES[tag])
    if len(out["key"]) != 32:
        raise BadValue("provisioning bundle: key must be 32 bytes")
    if len(out["consortium"]) != 32:
        raise BadValue("provisioning bundle: consortium digest must be 32 bytes")
    if "time" in out:
        if len(out["time"]) != 4:
            raise BadValue("provisioning bundle: time must be 4 bytes")
        out["time"] = int.from_bytes(out["time"], "big")
    try:
        out["pin"] = bytes(out["pin"]).decode()
    except UnicodeError:
        raise BadValue("provisioning bundle: pin: PIN must be digits only") from None
    return out


def file_header(name):
    raw = name.encode()
    if not 1 <= len(raw) <= MAX_NAME:
        raise BadValue("file name must be 1..%d bytes" % MAX_NAME)
    return bytes([len(raw)]) + raw


def check_file_name(name):
    """'consortium.json' or '<BANK>.pub' with a valid bank id; BadValue otherwise."""
    from hubi_core import ids

    if name == "consortium.json":
        return name
    if name.endswith(".pub"):
        ids.check_bank_id(name[:-4], "matrix file bank id")
        return name
    raise BadValue(
        "file %s: only consortium.json and <BANK>.pub can be provisioned" % ids.shown(name, 40)
    )
