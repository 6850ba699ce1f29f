"""Typed HTTP client of a bank node (docs/bank-api.md).

One class for everyone who talks to a bank over HTTP: merchants uploading notes (unsigned),
customers fetching notices and their book, regulators reading books and running audits, peer
banks, the bank's own hot backup (replication), and ``hubi audit restore`` fetching lost records
from a hot-backup node (:class:`HttpRecordSource`).

Errors: a reply with a 4xx/5xx status raises :class:`BankError` carrying the node's JSON error
(``code``, ``message``, ``field``); a reply that is not a node's JSON (another server's page)
raises it with code ``not-a-bank`` (or ``http-NNN``) and one short line of what answered;
transport failures raise :class:`BankUnavailable`.
"""

from __future__ import annotations

import json
import re
import socket
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from hubi import jsonload
from hubi.bank.auth import Signer
from hubi.infra.deadlines import DEADLINES, shut
from hubi.output import printable

__all__ = [
    "BankClient",
    "BankError",
    "BankUnavailable",
    "HttpRecordSource",
    "UploadResult",
]

DEFAULT_TIMEOUT = 30.0
# the longest answer a node gives is a page of a book, of the replication log or an audit's
# findings: a few MB. Anything past this is not a bank node's answer.
MAX_REPLY = 64 << 20
# httpx's timeout holds for each read; one exchange as a whole gets this many times as long
DEADLINE_FACTOR = 10


class BankError(Exception):
    """The node answered with an error status and a JSON body naming what is wrong."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        body=None,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.body = body
        # the reply's headers: a Retry-After to honour, a redirect's Location to name
        self.headers: Mapping[str, str] = headers if headers is not None else {}


class BankUnavailable(Exception):
    """No reply from the node (connection refused or reset, timeout)."""


@dataclass
class UploadResult:
    """What the node says about one uploaded object."""

    note_id: str
    outcome: str  # booked | refused | bounced
    reason_code: int | None = None
    reason: str | None = None
    refusal: bytes | None = None  # the bank-signed Refusal when the note bounced or was refused
    notices: list[dict[str, Any]] = field(default_factory=list)
    duplicate: bool = False  # the node had seen this note before; this is the first answer
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def booked(self) -> bool:
        return self.outcome == "booked"

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> UploadResult:
        """The node's answer; ValueError naming the field that is of the wrong type."""

        def field_(name: str, kind: type, what: str, default: Any) -> Any:
            value = doc.get(name, default)
            if value is None:
                return None
            # bool is an int to Python: a number must not be true/false, nor a flag a number
            if kind is bool:
                ok = isinstance(value, bool)
            else:
                ok = isinstance(value, kind) and not isinstance(value, bool)
            if not ok:
                raise ValueError(f"{name} is not {what}")
            return value

        ref = field_("refusal", str, "hex", None)
        try:
            refusal = bytes.fromhex(ref) if ref else None
        except ValueError:
            raise ValueError("refusal is not hex") from None
        return cls(
            note_id=field_("note_id", str, "a string", "") or "",
            outcome=doc["outcome"],
            reason_code=field_("reason_code", int, "a number", None),
            reason=field_("reason", str, "a string", None),
            refusal=refusal,
            notices=list(field_("notices", list, "a list", []) or []),
            duplicate=bool(field_("duplicate", bool, "true or false", False)),
            raw=doc,
        )


class BankClient:
    """HTTP client of one bank node. Pass `signer` for anything but uploads and health.

    `bank` is the node's bank id (part of what a signed request covers); when None it is read
    once from GET /health.
    """

    def __init__(
        self,
        base_url: str,
        signer: Signer | None = None,
        bank: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        retries: int = 0,
        max_reply: int = MAX_REPLY,
        deadline: float | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.signer = signer
        self._bank = bank
        self.retries = retries
        self.max_reply = max_reply
        self.timeout = timeout
        self.deadline = deadline if deadline is not None else timeout * DEADLINE_FACTOR
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        # the Date header of the last reply (None: none, or not yet): the bank's clock, for a
        # caller telling an 'expired' that is its own clock's doing
        self.last_date: str | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BankClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def with_signer(self, signer: Signer | None) -> BankClient:
        """A client for the same node acting as another caller (shares nothing mutable)."""
        return BankClient(
            self.base_url,
            signer,
            self._bank,
            self._http.timeout.read or DEFAULT_TIMEOUT,
            max_reply=self.max_reply,
            deadline=self.deadline,
        )

    # -------------------------------------------------------------------------- plumbing
    @property
    def bank(self) -> str:
        if self._bank is None:
            self._bank = self.health()["bank"]
        return self._bank

    def _send(
        self,
        method: str,
        path: str,
        params: Sequence[tuple[str, str]] | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        signed: bool = True,
        signer: Signer | None = None,
    ) -> httpx.Response:
        query = urlencode(list(params or []))
        headers: dict[str, str] = {}
        if content_type:
            headers["Content-Type"] = content_type
        attempt = 0
        while True:
            if signed:
                who = signer or self.signer
                if who is None:
                    raise ValueError(f"{method} {path} needs a signed request: pass a signer")
                headers.update(who.headers(self.bank, method, path, query, body))
            url = path + ("?" + query if query else "")
            try:
                resp = self._request(method, url, body, headers)
            except httpx.TransportError as exc:
                if attempt < self.retries:
                    attempt += 1
                    time.sleep(min(0.05 * 2**attempt, 1.0))
                    continue
                raise BankUnavailable(f"{method} {self.base_url}{path}: {exc!r}") from exc
            if resp.status_code >= 400:
                raise _error(resp)
            return resp

    def _request(
        self, method: str, url: str, body: bytes, headers: dict[str, str]
    ) -> httpx.Response:
        """One exchange, its reply read to at most ``max_reply`` bytes: a server that is no bank
        node (or one gone wrong) must not fill the caller's memory. A longer reply is not read
        further, and the connection is dropped. The exchange as a whole ends by ``deadline``
        seconds: a server trickling its answer a byte at a time meets every read's timeout."""
        token = DEADLINES.watch(self.deadline, self.interrupt)  # the deadline passed
        self.last_date = None
        try:
            with self._http.stream(
                method,
                url,
                content=body or None,
                headers=headers,
                extensions={"trace": self._trace},
            ) as resp:
                self.last_date = resp.headers.get("date")
                chunks: list[bytes] = []
                size = 0
                for chunk in resp.iter_bytes():  # decoded: the cap holds for a compressed reply
                    size += len(chunk)
                    if size > self.max_reply:
                        raise BankError(
                            resp.status_code,
                            "reply-too-large",
                            f"the reply is longer than {self.max_reply:,} bytes, the most this"
                            " client reads: not read further",
                        )
                    chunks.append(chunk)
        except httpx.TransportError:
            if DEADLINES.done(token):
                raise httpx.ReadTimeout(
                    f"no whole answer within {self.deadline:g} s (the deadline of one exchange)"
                ) from None
            raise
        finally:
            DEADLINES.done(token)
        kept = [(k, v) for k, v in resp.headers.multi_items() if k.lower() != "content-encoding"]
        return httpx.Response(
            resp.status_code, headers=kept, content=b"".join(chunks), request=resp.request
        )

    def _trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's trace hook: note each new connection's socket (for interrupt)."""
        if event == "connection.connect_tcp.complete" and info.get("return_value") is not None:
            sock = info["return_value"].get_extra_info("socket")
            if sock is not None:
                self._sockets.add(sock)

    def interrupt(self) -> None:
        """Shut the client's sockets down, which wakes a read waiting on one (from any thread;
        one exchange at a time per client; an idle pooled connection just reconnects)."""
        for sock in list(self._sockets):
            shut(sock)

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        return _doc(self._send(method, path, **kw))

    # --------------------------------------------------------------------------- anyone
    def health(self) -> dict[str, Any]:
        return self._json("GET", "/health", signed=False)

    def metrics(self) -> str:
        return self._send("GET", "/metrics", signed=False).text

    def upload(self, data: bytes, encoding: str = "raw") -> UploadResult:
        """Upload a note (or another bookable object) — open to anyone, idempotent.

        encoding: "raw" (application/octet-stream), "hex" or "base64" (JSON body)."""
        if encoding == "raw":
            resp = self._send(
                "POST",
                "/v1/notes",
                body=bytes(data),
                content_type="application/octet-stream",
                signed=False,
            )
        elif encoding in ("hex", "base64"):
            import base64

            text = data.hex() if encoding == "hex" else base64.b64encode(data).decode()
            resp = self._send(
                "POST",
                "/v1/notes",
                body=json.dumps({encoding: text}).encode(),
                content_type="application/json",
                signed=False,
            )
        else:
            raise ValueError("encoding must be raw, hex or base64")
        doc = _doc(resp)
        if not isinstance(doc, dict) or not isinstance(doc.get("outcome"), str):
            raise BankError(
                resp.status_code, "not-a-bank", _foreign(resp), None, None, resp.headers
            )
        try:
            return UploadResult.from_json(doc)
        except ValueError as exc:
            raise BankError(
                resp.status_code, "not-a-bank", f"not a hubi bank node's answer: {exc}"
            ) from None

    # ---------------------------------------------------------------- customers/regulators
    def notices(self, account: str, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Notices addressed to `account` (signed by the account itself)."""
        doc = self._json(
            "GET",
            f"/v1/accounts/{account}/notices",
            params=[("after", str(after)), ("limit", str(limit))],
        )
        return doc["notices"]

    def account(self, account: str) -> dict[str, Any]:
        """Account details: template, flags, book length, balance (owner/regulator/bank)."""
        return self._json("GET", f"/v1/accounts/{account}")

    def open_account(self, template: bytes) -> dict[str, Any]:
        """Open an account from a Template this bank sealed (the bank's own identity only)."""
        body = json.dumps({"template": bytes(template).hex()}).encode()
        return self._json("POST", "/v1/accounts", body=body, content_type="application/json")

    def book(self, account: str, start: int = 1, limit: int = 1000) -> dict[str, Any]:
        """A page of an account's book (owner, regulator or the bank itself)."""
        return self._json(
            "GET",
            f"/v1/accounts/{account}/book",
            params=[("from", str(start)), ("limit", str(limit))],
        )

    def book_all(self, account: str, page: int = 1000) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        start = 1
        while True:
            doc = self.book(account, start, page)
            recs = doc["records"]
            out.extend(recs)
            if len(recs) < page:
                return out
            start = recs[-1]["number"] + 1

    def audit(self, books: Iterable[str] | None = None, chain_only: bool = False) -> dict[str, Any]:
        """Run the engine's audit on the node (regulator or the bank itself)."""
        params = [("book", b) for b in books or []]
        if chain_only:
            params.append(("chain_only", "true"))
        return self._json("GET", "/v1/audit", params=params)

    # ------------------------------------------------------------------ checkpoints/proofs
    def checkpoints(self, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        doc = self._json(
            "GET", "/v1/checkpoints", params=[("after", str(after)), ("limit", str(limit))]
        )
        return doc["checkpoints"]

    def checkpoint_now(self) -> dict[str, Any]:
        """Have the node sign a tree head over its whole register (the bank itself only)."""
        return self._json("POST", "/v1/checkpoints")

    def latest_checkpoint(self) -> dict[str, Any]:
        return self._json("GET", "/v1/checkpoints/latest")

    def inclusion_proof(
        self, book: str, number: int, tree_size: int | None = None
    ) -> dict[str, Any]:
        """RFC 9162 inclusion proof of record (book, number); check it with
        ``hubi.bank.engine.verify_inclusion_proof``."""
        params = [("book", book), ("number", str(number))]
        if tree_size is not None:
            params.append(("tree_size", str(tree_size)))
        return self._json("GET", "/v1/proofs/inclusion", params=params)

    def consistency_proof(self, first: int, second: int) -> dict[str, Any]:
        return self._json(
            "GET",
            "/v1/proofs/consistency",
            params=[("first", str(first)), ("second", str(second))],
        )

    # --------------------------------------------------------------- hot backup / replication
    def records(self, names: Iterable[tuple[str, int]]) -> list[dict[str, Any]]:
        """Named records (book, number), each with its signatures; missing ones are left out."""
        body = json.dumps({"records": [{"book": b, "number": int(n)} for b, n in names]}).encode()
        doc = self._json("POST", "/v1/backup/records", body=body, content_type="application/json")
        if not isinstance(doc, dict) or not isinstance(doc.get("records"), list):
            raise BankError(
                200, "not-a-bank", f"records answer of the wrong shape: {str(doc)[:80]}"
            )
        return doc["records"]

    def replication_log(self, start: int, limit: int = 500) -> dict[str, Any]:
        """Register entries (with their records) from sequence number `start` on, in order."""
        return self._json(
            "GET", "/v1/replication/log", params=[("from", str(start)), ("limit", str(limit))]
        )


def _error(resp: httpx.Response) -> BankError:
    try:
        doc = _json_of(resp)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        # the node's words, but they land in the merchant's outbox and on a terminal
        return BankError(
            resp.status_code,
            printable(doc["error"], 60),
            printable(doc.get("message", "")),
            printable(doc["field"], 60) if isinstance(doc.get("field"), str) else None,
            doc,
            resp.headers,
        )
    return BankError(
        resp.status_code, "http-%d" % resp.status_code, _foreign(resp), None, doc, resp.headers
    )


def _doc(resp: httpx.Response) -> Any:
    """A success's JSON body; a body that is not JSON did not come from a bank node."""
    try:
        return _json_of(resp)
    except ValueError:
        raise BankError(
            resp.status_code, "not-a-bank", _foreign(resp), None, None, resp.headers
        ) from None


def _json_of(resp: httpx.Response) -> Any:
    """The reply's JSON; JsonError (a ValueError) for one that is not JSON a node would send."""
    return jsonload.loads(resp.content, "the bank node's answer")


def _foreign(resp: httpx.Response) -> str:
    """An answer that is not a bank node's (a proxy's, a portal's, another server's page) in one
    short line, not the whole page: it lands in the merchant's outbox and on the terminal (so
    control characters are shown as escapes, never sent to the terminal)."""
    text = " ".join(re.sub(r"<[^>]*>", " ", resp.text).split())  # an HTML page's words
    kind = resp.headers.get("content-type", "no content type").split(";")[0]
    return f"not a hubi bank node's answer ({printable(kind, 60)}): {printable(text, 160)}"


class HttpRecordSource:
    """Lost records from a hot-backup node over HTTP, for ``hubi audit restore --backup URL``.

    ``fetch(names)`` returns the records the node has, with their signatures, as the JSON the
    node serves (see docs/bank-api.md: ``/v1/backup/records``)."""

    def __init__(self, url: str, signer: Signer, bank: str | None = None, batch: int = 500):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"hot-backup URL must be http(s)://host:port, not {url!r}")
        self.client = BankClient(url, signer, bank, retries=2)
        self.batch = batch

    def fetch(self, names: Iterable[tuple[str, int]]) -> Iterator[dict[str, Any]]:
        names = list(names)
        for i in range(0, len(names), self.batch):
            yield from self.client.records(names[i : i + self.batch])

    def close(self) -> None:
        self.client.close()
