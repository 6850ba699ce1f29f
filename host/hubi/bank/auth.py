"""Signed requests and roles of the bank node's HTTP API (DESIGN §5, docs/bank-api.md).

Every request other than a note upload (and the operational /health, /metrics, OpenAPI) carries:

    X-Hubi-Caller     the caller's identity: an account id (BKA-000042), a bank id (BKB) or a
                      regulator id (listed in the consortium file, see below)
    X-Hubi-Time       Unix seconds when the request was signed
    X-Hubi-Nonce      16-64 characters [A-Za-z0-9_-], never reused by this caller
    X-Hubi-Signature  hex of the 64-byte ECDSA P-256 signature (suite 1, r||s) over the
                      canonical request below, made with the caller's identity key
    X-Hubi-Template   (optional, accounts only) hex of the caller's full bank-sealed Template

Canonical request (UTF-8, lines joined by a single LF, no trailing LF):

    hubi-request/1
    <bank id of the node addressed>
    <METHOD>
    <path>                       e.g. /v1/accounts/BKA-000042/book
    <canonical query>            pairs sorted by key then value, RFC 3986 percent-encoded,
                                 joined by '&' (empty line when there is no query)
    <hex SHA-256 of the body>    of the empty string when there is no body
    <X-Hubi-Time>
    <X-Hubi-Nonce>
    <X-Hubi-Caller>

The node addressed is part of what is signed, so a request signed for one bank cannot be
replayed at another; the time must be within ``window`` seconds of the node's clock; a
(caller, nonce) pair is accepted once while its time is inside the window.

Where a caller's key comes from:
- an account of this bank: the Template the bank issued (looked up by the engine); a caller
  may also present its Template (X-Hubi-Template), accepted when the issuing bank's seal
  verifies against the trust bundle and the account matches the caller;
- a bank (this one or a peer): its CPK key from the consortium file and its public matrix;
- a regulator: the consortium file lists regulators inside the entry of the bank whose KMC
  issued their key, as an extra field (covered by the founders' signatures):

      {"id": "BKA", ..., "regulators": [{"id": "PBOC", "key": "<33-byte separating key hex>"}]}

  The regulator's key = combined point of its id in that bank's matrix + the separating key.
  Regulator ids follow the bank-id syntax and must not equal a bank id.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote

from hubi_core import codec, ids, suite, verify
from hubi_core.consortium import Consortium
from hubi_core.errors import HubiError

DOMAIN = "hubi-request/1"
H_CALLER = "x-hubi-caller"
H_TIME = "x-hubi-time"
H_NONCE = "x-hubi-nonce"
H_SIG = "x-hubi-signature"
H_TEMPLATE = "x-hubi-template"
AUTH_HEADERS = (H_CALLER, H_TIME, H_NONCE, H_SIG)
DEFAULT_WINDOW = 300  # seconds either side of the node's clock
MAX_NONCES = 500_000
_NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class Role(enum.StrEnum):
    """Who a verified caller is, relative to the node that checks the request."""

    CUSTOMER = "customer"  # an account (sees its own book and notices only)
    REGULATOR = "regulator"  # reads books, verifies chains, never writes
    PEER = "peer-bank"  # another bank of the consortium (validation requests, issue 5)
    SELF = "bank"  # this bank's own identity key (operator tools, its hot backup)
    ANYONE = "anyone"  # no signature (note upload)


@dataclass(frozen=True)
class Caller:
    identity: str
    role: Role


ANONYMOUS = Caller("", Role.ANYONE)


class AuthError(Exception):
    """A request that fails authentication or authorisation; maps to one JSON error reply."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


# ------------------------------------------------------------------------------ canonical form


def canonical_query(query: str | Iterable[tuple[str, str]] | None) -> str:
    """Query pairs sorted by (key, value), each part percent-encoded (RFC 3986 unreserved kept)."""
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True) if isinstance(query, str) else list(query)
    enc = sorted((quote(str(k), safe="-._~"), quote(str(v), safe="-._~")) for k, v in pairs)
    return "&".join(k + "=" + v for k, v in enc)


def canonical_request(
    bank: str,
    method: str,
    path: str,
    query: str | Iterable[tuple[str, str]] | None,
    body_sha256: str,
    timestamp: str,
    nonce: str,
    caller: str,
) -> bytes:
    lines = [
        DOMAIN,
        bank,
        method.upper(),
        path,
        canonical_query(query),
        body_sha256,
        timestamp,
        nonce,
        caller,
    ]
    return "\n".join(lines).encode("utf-8")


def new_nonce() -> str:
    return os.urandom(16).hex()


@dataclass
class Signer:
    """A caller's identity and private key, for signing requests (client side).

    repr() never shows the key."""

    identity: str
    private: int = field(repr=False)
    template: bytes | None = None  # an account's full Template, sent along when set

    def __repr__(self) -> str:
        return f"Signer(identity={self.identity!r}, key=<secret>)"

    def headers(
        self,
        bank: str,
        method: str,
        path: str,
        query: str | Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
        now: float | None = None,
        nonce: str | None = None,
    ) -> dict[str, str]:
        ts = str(int(time.time() if now is None else now))
        nonce = nonce or new_nonce()
        msg = canonical_request(
            bank,
            method,
            path,
            query,
            hashlib.sha256(body).hexdigest(),
            ts,
            nonce,
            self.identity,
        )
        out = {
            "X-Hubi-Caller": self.identity,
            "X-Hubi-Time": ts,
            "X-Hubi-Nonce": nonce,
            "X-Hubi-Signature": suite.sign(self.private, msg).hex(),
        }
        if self.template is not None:
            out["X-Hubi-Template"] = self.template.hex()
        return out


# ----------------------------------------------------------------------------- regulators


@dataclass(frozen=True)
class RegulatorEntry:
    id: str
    issuer: str  # bank whose KMC issued the key
    key: bytes  # 33-byte separating public key


def regulators_of(consortium: Consortium) -> dict[str, RegulatorEntry]:
    """Regulators listed in the consortium file (bank entries' extra field ``regulators``)."""
    out: dict[str, RegulatorEntry] = {}
    for bank_id in consortium.bank_ids():
        entry = consortium.banks[bank_id]
        for doc in entry.extra.get("regulators", []) or []:
            if not isinstance(doc, Mapping):
                raise ValueError(f"bank {bank_id}: regulators must be a list of objects")
            reg_id = ids.check_bank_id(str(doc.get("id", "")), "regulator id")
            if reg_id in consortium.banks:
                raise ValueError(f"regulator id {reg_id} is also a bank id")
            if reg_id in out:
                raise ValueError(f"regulator {reg_id} listed twice")
            try:
                key = bytes.fromhex(str(doc.get("key", "")))
            except ValueError:
                raise ValueError(f"regulator {reg_id}: key is not hex") from None
            if len(key) != 33:
                raise ValueError(f"regulator {reg_id}: key must be 33 bytes")
            out[reg_id] = RegulatorEntry(reg_id, bank_id, key)
    return out


def add_regulator(home: Path, regulator: str, issuer: str) -> Signer:
    """Issue `regulator` a key from bank `issuer`'s KMC and list it in the home's consortium file.

    The consortium file is re-signed by every founder whose identity secret is in the home (a
    one-machine installation: demo, tests). The regulator's private key is written to
    HOME/regulators/<ID>.secret (0600) and returned as a Signer.
    """
    from hubi import kmc as kmc_mod

    home = Path(home)
    trust_dir = home / "trust"
    trust = kmc_mod.load_trust(trust_dir)
    cons = trust.consortium
    ids.check_bank_id(regulator, "regulator id")
    if regulator in cons.banks:
        raise ValueError(f"regulator id {regulator} is also a bank id")
    if regulator in regulators_of(cons):
        raise ValueError(f"regulator {regulator} is already listed")
    kmc = kmc_mod.load_kmc(home, issuer)
    priv, sep = kmc.issue(regulator)
    entry = cons.bank(issuer)
    regs = list(entry.extra.get("regulators", []) or [])
    regs.append({"id": regulator, "key": sep.hex()})
    entry.extra["regulators"] = regs
    cons.signatures = {}
    for founder in cons.founders:
        cons.sign(founder, kmc_mod.load_bank_identity(home, founder).private)
    kmc_mod.save_trust(trust_dir, cons, trust.matrices)
    kmc_mod.write_secret(home / "regulators" / f"{regulator}.secret", priv.to_bytes(32, "big"))
    kmc_mod.load_trust(trust_dir)  # re-check: signatures and matrices
    return Signer(regulator, priv)


def load_regulator(home: Path, regulator: str) -> Signer:
    raw = (Path(home) / "regulators" / f"{regulator}.secret").read_bytes()
    if len(raw) != 32:
        raise ValueError(f"secret of regulator {regulator} is corrupt")
    return Signer(regulator, suite.check_private(int.from_bytes(raw, "big")))


def bank_signer(home: Path, bank: str) -> Signer:
    """A Signer for a bank's own identity (operator tools, the hot backup)."""
    from hubi import kmc as kmc_mod

    ident = kmc_mod.load_bank_identity(home, bank)
    return Signer(bank, ident.private)


# --------------------------------------------------------------------------------- verifier


class NonceCache:
    """(caller, nonce) pairs seen inside the time window; bounded, thread-safe.

    Kept in memory: after a restart, a request captured in the last ``window`` seconds could be
    replayed once more. Signed requests that change state are idempotent on the node's side.

    A pair is kept for twice the window of monotonic time, never by the wall clock: a wall
    clock stepped forward then back again (NTP correcting it) purged pairs whose requests the
    window then took again (replayed), and one stepped back by days kept the oldest pair
    "unexpired" so that nothing was purged and, full, the cache refused every request. A wall
    clock stepped back by more than the window still lets requests signed that long before in
    once more, as a restart does.
    """

    def __init__(
        self,
        window: int,
        max_entries: int = MAX_NONCES,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.window = window
        self.max_entries = max_entries
        self.clock = clock
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()  # -> expiry (monotonic)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def _purge(self, now: float) -> None:
        # monotonic time never goes back, so expiries are inserted in order: the oldest first
        while self._seen:
            key, exp = next(iter(self._seen.items()))
            if exp >= now:  # at exp itself a request of this nonce may still be in the window
                break
            self._seen.popitem(last=False)

    def add(self, caller: str, nonce: str) -> bool:
        """Record the pair; False if it was seen before (a replay)."""
        key = (caller, nonce)
        with self._lock:
            now = self.clock()
            self._purge(now)
            if key in self._seen:
                return False
            if len(self._seen) >= self.max_entries:
                raise AuthError(429, "busy", "too many signed requests in the time window")
            self._seen[key] = now + 2 * self.window
            return True


TemplateLookup = Callable[[str], "codec.Obj | bytes | None"]


class Authenticator:
    """Checks signed requests for one bank node and tells the caller's role."""

    def __init__(
        self,
        bank: str,
        trust: verify.Trust,
        template_lookup: TemplateLookup | None = None,
        window: int = DEFAULT_WINDOW,
        clock: Callable[[], float] = time.time,
        max_nonces: int = MAX_NONCES,
    ):
        self.bank = bank
        self.trust = trust
        self.template_lookup = template_lookup
        self.window = window
        self.clock = clock
        self.nonces = NonceCache(window, max_nonces)
        self.regulators = regulators_of(trust.consortium)
        self._keys: OrderedDict[str, tuple[bytes, Role]] = OrderedDict()
        self._lock = threading.Lock()

    # -------------------------------------------------------------------------- keys
    def _cached(self, identity: str) -> tuple[bytes, Role] | None:
        with self._lock:
            hit = self._keys.get(identity)
            if hit is not None:
                self._keys.move_to_end(identity)
            return hit

    def _remember(self, identity: str, key: bytes, role: Role) -> None:
        with self._lock:
            self._keys[identity] = (key, role)
            while len(self._keys) > 8192:
                self._keys.popitem(last=False)

    def key_of(self, identity: str, presented_template: str | None = None) -> tuple[bytes, Role]:
        """(65-byte public key, role) of a caller identity; AuthError(401) if unknown."""
        if "-" in identity:
            return self._account_key(identity, presented_template)
        hit = self._cached(identity)
        if hit is not None:
            return hit
        try:
            ids.check_bank_id(identity, "caller")
        except HubiError as exc:
            raise AuthError(401, "unknown-caller", str(exc), H_CALLER) from None
        if identity in self.trust.consortium.banks:
            try:
                key = self.trust.bank_key(identity)
            except HubiError as exc:
                raise AuthError(401, "unknown-caller", str(exc), H_CALLER) from None
            role = Role.SELF if identity == self.bank else Role.PEER
        elif identity in self.regulators:
            reg = self.regulators[identity]
            try:
                key = self.trust.matrix(reg.issuer).public_key(reg.id, reg.key)
            except (HubiError, ValueError) as exc:
                raise AuthError(401, "unknown-caller", str(exc), H_CALLER) from None
            role = Role.REGULATOR
        else:
            raise AuthError(
                401,
                "unknown-caller",
                f"{identity} is neither a bank nor a regulator of consortium "
                f"{self.trust.consortium.name}",
                H_CALLER,
            )
        self._remember(identity, key, role)
        return key, role

    def _account_key(self, account: str, presented: str | None) -> tuple[bytes, Role]:
        try:
            ids.check_account_id(account, "caller")
        except HubiError as exc:
            raise AuthError(401, "unknown-caller", str(exc), H_CALLER) from None
        if presented is None:
            hit = self._cached(account)
            if hit is not None:
                return hit
        tpl = found = None
        if self.template_lookup is not None:
            found = self.template_lookup(account)
            if found is not None:
                tpl = codec.decode(found, codec.TEMPLATE) if isinstance(found, bytes) else found
        if tpl is None and presented is not None:
            try:
                tpl = codec.decode(bytes.fromhex(presented), codec.TEMPLATE)
            except ValueError as exc:  # bad hex or a CodecError (a ValueError too)
                raise AuthError(
                    400, "bad-template", f"X-Hubi-Template: {exc}", H_TEMPLATE
                ) from None
        if tpl is None:
            raise AuthError(
                401,
                "unknown-caller",
                f"account {account} is unknown to bank {self.bank} (present its Template in "
                "X-Hubi-Template)",
                H_CALLER,
            )
        if tpl["account"] != account:
            raise AuthError(
                401,
                "bad-template",
                f"template is for {tpl['account']}, not the caller {account}",
                H_TEMPLATE,
            )
        try:
            key = verify.template_key(tpl, self.trust)
        except (HubiError, ValueError) as exc:
            raise AuthError(401, "bad-template", f"template: {exc}", H_TEMPLATE) from None
        # only the books' Template is kept: a presented one's key, cached, outlived the
        # account's opening under another Template (the owner refused, the old key let in)
        if found is not None:
            self._remember(account, key, Role.CUSTOMER)
        return key, Role.CUSTOMER

    # ---------------------------------------------------------------------- requests
    def authenticate(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> Caller:
        """Verify a signed request; returns the Caller or raises AuthError."""
        missing = [h for h in AUTH_HEADERS if not headers.get(h)]
        if missing:
            raise AuthError(
                401,
                "unsigned",
                "this endpoint needs a signed request; missing header(s): "
                + ", ".join(_title(h) for h in missing),
                _title(missing[0]),
            )
        caller = headers[H_CALLER]
        ts = headers[H_TIME]
        nonce = headers[H_NONCE]
        sig_hex = headers[H_SIG]
        if not (ts.isascii() and ts.isdigit()) or len(ts) > 12:
            raise AuthError(400, "bad-header", "X-Hubi-Time must be Unix seconds", "X-Hubi-Time")
        if not _NONCE_RE.match(nonce):
            raise AuthError(
                400,
                "bad-header",
                "X-Hubi-Nonce must be 16-64 characters A-Z a-z 0-9 _ -",
                "X-Hubi-Nonce",
            )
        try:
            sig = bytes.fromhex(sig_hex)
        except ValueError:
            sig = b""
        if len(sig) != suite.SIG_LEN:
            raise AuthError(
                400,
                "bad-header",
                "X-Hubi-Signature must be 128 hex digits (64-byte r||s)",
                "X-Hubi-Signature",
            )
        now = self.clock()
        skew = int(ts) - now
        if abs(skew) > self.window:
            raise AuthError(
                401,
                "stale-timestamp",
                f"X-Hubi-Time is {abs(int(skew))} s {'ahead of' if skew > 0 else 'behind'} the "
                f"node's clock (allowed: {self.window} s)",
                "X-Hubi-Time",
            )
        key, role = self.key_of(caller, headers.get(H_TEMPLATE))
        msg = canonical_request(
            self.bank,
            method,
            path,
            query,
            hashlib.sha256(body).hexdigest(),
            ts,
            nonce,
            caller,
        )
        if not suite.verify(key, msg, sig):
            raise AuthError(
                401,
                "bad-signature",
                f"signature does not verify under the key of {caller} (signed string: "
                "see docs/bank-api.md; the node addressed is " + self.bank + ")",
                "X-Hubi-Signature",
            )
        if not self.nonces.add(caller, nonce):
            raise AuthError(
                401, "replayed-nonce", f"nonce already used by {caller}", "X-Hubi-Nonce"
            )
        return Caller(caller, role)


def _title(header: str) -> str:
    return "-".join(p.capitalize() for p in header.split("-"))


# ------------------------------------------------------------------------------- policies


def require(caller: Caller, *roles: Role) -> None:
    if caller.role not in roles:
        raise AuthError(
            403,
            "role-denied",
            f"{caller.identity or 'an unsigned caller'} ({caller.role.value}) may not do this; "
            "allowed: " + ", ".join(r.value for r in roles),
        )


def require_party_bank(caller: Caller, parties: tuple[str, str] | None) -> None:
    """A peer bank sees a record only when its note's payer or payee is that bank's customer
    (a record carries amounts, times and the note: other banks' customers are none of its
    business); `parties` None (no such record, or no note behind it) is refused alike."""
    if parties is not None and caller.identity in (ids.bank_of(a) for a in parties):
        return
    raise AuthError(
        403,
        "role-denied",
        f"bank {caller.identity} ({caller.role.value}) may read only records of notes a "
        "customer of its own is party to",
    )


def require_account_access(
    caller: Caller, account: str, *, regulator: bool, own_bank: bool = True
) -> None:
    """Customers see only their own account; regulators (if allowed) and the bank itself any."""
    if caller.role == Role.CUSTOMER:
        if not hmac.compare_digest(caller.identity.encode(), account.encode()):
            raise AuthError(
                403,
                "role-denied",
                f"customer {caller.identity} may not read account {account}",
            )
        return
    if caller.role == Role.REGULATOR and regulator:
        return
    if caller.role == Role.SELF and own_bank:
        return
    raise AuthError(
        403,
        "role-denied",
        f"{caller.identity} ({caller.role.value}) may not read account {account}",
    )
