"""The bank node's HTTP/JSON API (FastAPI): see docs/bank-api.md for every endpoint.

``create_app(node)`` builds the ASGI app around a :class:`Node` (the engine plus the things the
HTTP layer needs: trust, request authenticator, metrics). Rules the app keeps:

- Note upload is open to anyone and idempotent; everything under /v1 apart from it needs a
  signed request (hubi.bank.auth) and the right role.
- Bad input never gives a 5xx: every error reply is JSON ``{"error": code, "message": text,
  "field": name-or-null}`` with a 4xx status; the codes are listed in docs/bank-api.md.
- Request bodies are capped (``max_body``, default 64 KiB) before they are read into memory.
- Nothing secret is logged: keys never pass through this layer, and request logs name the route,
  not headers or bodies.
"""

import base64
import binascii
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hubi import jsonload
from hubi.bank import auth
from hubi.bank.auth import AuthError, Caller, Role
from hubi.bank.records import Record
from hubi.output import counted
from hubi_core import codec
from hubi_core.errors import CodecError, HubiError

log = logging.getLogger("hubi.bank.api")

DEFAULT_MAX_BODY = 64 * 1024
MAX_PAGE = 5000
MAX_NUMBER = 2**62  # the largest record number, tree size or sequence number a route takes
MAX_AUDIT_BOOKS = 100  # distinct books one /v1/audit may name (each is looked up and walked)
ACCOUNT_PATTERN = r"^[A-Z0-9]{2,16}-[A-Za-z0-9._]{1,30}$"
_ACCOUNT_RE = re.compile(ACCOUNT_PATTERN.strip("^$"))


# ------------------------------------------------------------------------------------ errors


class ApiError(AuthError):
    """An error reply: HTTP status, a stable code, a message naming what is wrong (the same
    shape as an authentication error, which is one kind of it)."""


def _note_parties(body: bytes) -> tuple[str, str] | None:
    """(payer, payee) of the note a record (its stored bytes) is evidence of; None for any
    other record (funding, a notice booked back) or one that does not parse."""
    try:
        note = codec.decode(Record.parse(body).evidence)
    except (CodecError, ValueError):  # (a ChainError is a ValueError)
        return None
    return (note.signer, note["payee"]) if note.kind == codec.NOTE else None


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": code, "message": message, "field": field}


class ErrorModel(BaseModel):
    error: str = Field(description="stable machine-readable code, e.g. bad-hex, role-denied")
    message: str = Field(description="what is wrong, for people")
    field: str | None = Field(None, description="the header, parameter or field at fault")


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    texts = {
        400: "bad input (bad hex/base64, unknown kind, malformed object or header)",
        401: "unsigned, unknown caller, bad signature, stale timestamp or replayed nonce",
        403: "role denied",
        404: "not found",
        409: "conflicts with the node's state (not-local, conflict, register-damaged, book-damaged)",
        413: "request body over the size cap",
        415: "unsupported Content-Type",
        422: "parameter out of range or of the wrong type",
        429: "too many signed requests in the time window",
        503: "cannot answer now: retry later (store-full, consortium-unavailable,"
        " orderer-unavailable, caller-gone, crypto-unavailable)",
    }
    return {s: {"model": ErrorModel, "description": texts[s]} for s in statuses}


SIGNED_ERRORS = error_responses(400, 401, 403, 413, 422, 429)


# ------------------------------------------------------------------------------------ metrics


class Metrics:
    """Prometheus metrics of one node (own registry: several apps may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.uploads = Counter(
            "hubi_uploads",
            "Uploaded objects by outcome (booked, refused, bounced, invalid)",
            ["outcome"],
            registry=self.registry,
        )
        self.booking = Histogram(
            "hubi_booking_seconds",
            "Time to verify and book one uploaded note (engine call)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
            registry=self.registry,
        )
        self.requests = Counter(
            "hubi_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "hubi_http_errors",
            "Error replies by code (internal = 5xx)",
            ["code"],
            registry=self.registry,
        )
        self.replicated = Counter(
            "hubi_replica_records",
            "Records copied from the primary (hot backup nodes only)",
            registry=self.registry,
        )
        for outcome in ("booked", "refused", "bounced", "invalid"):
            self.uploads.labels(outcome)

    def render(self) -> bytes:
        return generate_latest(self.registry)


# --------------------------------------------------------------------------------------- node


@dataclass
class Node:
    """What the HTTP layer serves: a bank's engine (or a hot backup's store) plus auth, metrics."""

    bank: str
    backend: Any  # hubi.bank.service.Backend (primary) or hubi.bank.replica.Replica
    authenticator: auth.Authenticator
    role: str = "primary"  # or "replica"
    max_body: int = DEFAULT_MAX_BODY
    metrics: Metrics = field(default_factory=Metrics)
    started: float = field(default_factory=time.monotonic)  # uptime: a wall-clock step is none
    on_startup: list[Callable[[], Awaitable[None] | None]] = field(default_factory=list)
    on_shutdown: list[Callable[[], Awaitable[None] | None]] = field(default_factory=list)
    # Optional parts add their routes here (issue 5: hubi.consortium.service.attach).
    extensions: list[Callable[[FastAPI], None]] = field(default_factory=list)
    stopped: bool = False  # on_shutdown has run (since the last startup)


async def shut_down(node: Node) -> None:
    """Run the node's shutdown hooks once: from the app's lifespan, or after a forced quit
    (uvicorn skips the lifespan's end then; ``hubi.bank.server.serve``)."""
    if node.stopped:
        return
    node.stopped = True
    for fn in node.on_shutdown:
        r = fn()
        if r is not None:
            await r


# --------------------------------------------------------------------------------- middleware


class Guard:
    """Pure ASGI middleware: caps request bodies and counts requests by route and status.

    A body over ``max_body`` bytes gets 413 before it is held in memory: at once when the
    Content-Length says so, otherwise as soon as the streamed bytes pass the cap (the app then
    sees a client disconnect and its own reply is dropped)."""

    def __init__(self, app: ASGIApp, max_body: int, metrics: Metrics):
        self.app = app
        self.max_body = max_body
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = _method_label(scope.get("method", "?"))
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    n = int(value)
                except ValueError:
                    n = -1
                if n < 0:
                    await self._reply(send, 400, "bad-header", "Content-Length is not a number")
                    self._count(method, scope, 400)
                    return
                if n > self.max_body:
                    await self._too_large(send)
                    self._count(method, scope, 413)
                    return
        state = {"seen": 0, "started": False, "rejected": False, "status": 500}

        async def limited() -> Message:
            if state["rejected"]:
                return {"type": "http.disconnect"}
            msg = await receive()
            if msg["type"] == "http.request":
                state["seen"] += len(msg.get("body", b""))
                if state["seen"] > self.max_body:
                    state["rejected"] = True
                    if not state["started"]:
                        state["started"] = True
                        state["status"] = 413
                        await self._too_large(send)
                    return {"type": "http.disconnect"}
            return msg

        async def guarded_send(msg: Message) -> None:
            if state["rejected"]:
                return  # we answered 413 already; the app's reply goes nowhere
            if msg["type"] == "http.response.start":
                state["started"] = True
                state["status"] = msg["status"]
            await send(msg)

        try:
            await self.app(scope, limited, guarded_send)
        finally:
            self._count(method, scope, int(state["status"]))

    def _count(self, method: str, scope: Scope, status: int) -> None:
        route = scope.get("route")
        name = getattr(route, "path", None) or "unmatched"
        self.metrics.requests.labels(method, name, str(status)).inc()

    async def _too_large(self, send: Send) -> None:
        await self._reply(
            send,
            413,
            "body-too-large",
            f"request body over the cap of {counted(self.max_body, 'byte')}",
        )

    async def _reply(self, send: Send, status: int, code: str, message: str) -> None:
        self.metrics.errors.labels(code).inc()
        body = json.dumps(error_body(code, message)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


# the methods counted by name: h11 (--http-impl plain) passes any token as a method, and a
# label of each one a client made up grew the registry (and /metrics) by every request
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"))


def _method_label(method: str) -> str:
    return method if method in _METHODS else "other"


# ---------------------------------------------------------------------------- response models


class UploadJson(BaseModel):
    hex: str | None = Field(None, description="the object's bytes as hex")
    base64: str | None = Field(None, description="the object's bytes as standard base64")


class NoticeOut(BaseModel):
    kind: str = Field(description="SettlementNotice, BalanceNotice or Refusal")
    account: str | None = Field(None, description="the account the notice is for")
    note_id: str | None = Field(None, description="hex id of the note it is about")
    hex: str = Field(description="the bank-signed object's bytes, hex")
    id: int | None = Field(None, description="cursor: pass as ?after= to fetch newer ones")
    time: int | None = None


class UploadOut(BaseModel):
    note_id: str
    kind: str = "Note"
    outcome: str = Field(description="booked | refused | bounced")
    status: str | None = Field(None, description="the engine's status (booked, refused, ...)")
    reason_code: int | None = None
    reason: str | None = None
    reason_name: str | None = None
    refusal: str | None = Field(None, description="hex of the bank-signed Refusal")
    duplicate: bool = Field(False, description="the node had this note before: first answer")
    payer: str | None = None
    payee: str | None = None
    amount: int | None = None
    debit: dict[str, Any] | None = None
    credit: dict[str, Any] | None = None
    notices: list[NoticeOut] = []


class NoticesOut(BaseModel):
    account: str
    notices: list[NoticeOut]


class BookOut(BaseModel):
    account: str
    length: int = Field(description="records in the book")
    head: dict[str, Any] = Field(description="the bank-signed head (n, hchain, statement, sig)")
    records: list[dict[str, Any]]


class TemplateIn(BaseModel):
    template: str = Field(description="the bank-sealed Template, hex", max_length=2 * 4096)


class RecordsIn(BaseModel):
    records: list[dict[str, Any]] = Field(
        description='names of records: [{"book": "BKA-000001", "number": 7}, ...]',
        max_length=MAX_PAGE,
    )


class RecordsOut(BaseModel):
    records: list[dict[str, Any]]
    missing: list[dict[str, Any]] = []


class HealthOut(BaseModel):
    status: str
    bank: str
    role: str
    uptime: float
    detail: dict[str, Any] = {}


# ------------------------------------------------------------------------------------ the app


def _decode_upload(body: bytes, content_type: str) -> bytes:
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == "application/json":
        try:
            doc = jsonload.loads(body, "body")  # an upload is one level deep
        except jsonload.JsonError as exc:
            raise ApiError(400, "bad-json", str(exc)) from None
        if not isinstance(doc, dict):
            raise ApiError(400, "bad-json", 'body must be a JSON object {"hex": ...}')
        unknown = sorted(set(doc) - {"hex", "base64"})
        if unknown:
            raise ApiError(400, "bad-json", f"unknown field(s): {', '.join(unknown)}", unknown[0])
        if ("hex" in doc) == ("base64" in doc):
            raise ApiError(400, "bad-json", 'give exactly one of "hex" or "base64"')
        if "hex" in doc:
            text = doc["hex"]
            if not isinstance(text, str):
                raise ApiError(400, "bad-hex", "hex must be a string", "hex")
            try:
                return bytes.fromhex(text)
            except ValueError as exc:
                raise ApiError(400, "bad-hex", f"hex: {exc}", "hex") from None
        text = doc["base64"]
        if not isinstance(text, str):
            raise ApiError(400, "bad-base64", "base64 must be a string", "base64")
        try:
            return base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
            raise ApiError(400, "bad-base64", f"base64: {exc}", "base64") from None
    if ctype in ("application/octet-stream", ""):
        return body
    if ctype == "text/plain":  # hex typed by hand (curl -d @note.hex)
        try:
            return bytes.fromhex(body.decode("ascii"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "bad-hex", f"text body must be hex: {exc}") from None
    raise ApiError(
        415,
        "unsupported-media-type",
        f"Content-Type {ctype} not accepted: use application/octet-stream, application/json "
        "or text/plain (hex)",
        "Content-Type",
    )


# A connection that dies during COMMIT leaves it unknown whether the server committed:
# "nothing was stored" would be a promise the node cannot keep.
MAYBE_STORED = (
    "the note may or may not have been stored (the database may have committed it before "
    "the connection failed): sending it again is safe, a repeated upload is answered as a "
    "duplicate"
)


def store_error(exc: BaseException, detail: str, *, note: bool = False) -> ApiError:
    """The 503 for a database that failed: ``store-full`` when it (or its disk) is full, so
    that the operator sees what to do, else ``store-unavailable`` with `detail`. A full
    database refused the write: nothing was stored. Any other failure may have come while
    the server committed (the connection died during COMMIT): for a note upload (`note`) the
    answer says it may or may not have been stored, and that sending it again is safe."""
    import sqlite3

    from hubi.bank.store import full_reason

    full = full_reason(exc)
    if full:
        room = (
            "free disk space, or raise the database's max_bytes"
            if isinstance(exc, sqlite3.Error)
            else "free disk space on the database server"
        )
        return ApiError(
            503,
            "store-full",
            f"the bank's database is full ({full}): nothing was stored; send it again once "
            f"there is room ({room})",
        )
    # one line: libpq's texts run over several ("...unexpectedly\n\tThis probably means...")
    detail = " ".join(detail.split())
    if note:
        detail = f"{detail.rstrip('.')}; {MAYBE_STORED}"
    return ApiError(503, "store-unavailable", detail)


def _codec_api_error(exc: CodecError) -> ApiError:
    code = "unknown-kind" if type(exc).__name__ == "UnknownKind" else "bad-object"
    return ApiError(400, code, f"{type(exc).__name__}: {exc}")


def _check_upload(data: bytes, kinds: frozenset[int]) -> bytes:
    if not data:
        raise ApiError(400, "empty-body", "no object in the body")
    try:
        kind = codec.peek_kind(data)
    except CodecError as exc:
        raise _codec_api_error(exc) from None
    if kind not in kinds:
        raise ApiError(
            400,
            "unsupported-kind",
            f"a {codec.kind_name(kind)} cannot be uploaded here (accepted: "
            + ", ".join(codec.kind_name(k) for k in sorted(kinds))
            + ")",
        )
    return data


def create_app(node: Node) -> FastAPI:
    """The ASGI app of one bank node (primary or hot backup)."""
    m = node.metrics
    backend = node.backend

    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        node.stopped = False
        for fn in node.on_startup:
            r = fn()
            if r is not None:
                await r
        yield
        await shut_down(node)

    app = FastAPI(
        title=f"hubi bank node {node.bank}",
        version="1",
        description=(
            "Bank node of hubi account money: note upload (open to anyone), notices, books, "
            "audit, checkpoints and proofs, hot-backup records. Every /v1 request other than "
            "the note upload is signed (X-Hubi-* headers); see docs/bank-api.md."
        ),
        lifespan=lifespan,
    )

    # ----------------------------------------------------------------- error handlers
    def _reply(exc_status: int, code: str, message: str, fld: str | None) -> JSONResponse:
        m.errors.labels(code).inc()
        return JSONResponse(error_body(code, message, fld), status_code=exc_status)

    @app.exception_handler(AuthError)  # ApiError too: a subclass
    async def _api_error(request: Request, exc: AuthError) -> JSONResponse:
        return _reply(exc.status, exc.code, exc.message, exc.field)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {}
        loc = [str(x) for x in first.get("loc", ())]
        where = ".".join(loc[1:]) if len(loc) > 1 else ".".join(loc)
        msg = "; ".join(
            f"{'.'.join(str(x) for x in e.get('loc', ())[1:])}: {e.get('msg')}" for e in errs[:5]
        )
        return _reply(422, "bad-parameter", msg or "invalid request", where or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not-found", 405: "method-not-allowed", 413: "body-too-large"}
        code = codes.get(exc.status_code, "http-%d" % exc.status_code)
        return _reply(exc.status_code, code, str(exc.detail), None)

    @app.exception_handler(CodecError)
    async def _codec_error(request: Request, exc: CodecError) -> JSONResponse:
        e = _codec_api_error(exc)
        return _reply(e.status, e.code, e.message, None)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        from hubi.bank.store import down_errors

        if isinstance(exc, down_errors()):
            log.warning("store unavailable on %s %s: %s", request.method, request.url.path, exc)
            upload = request.method == "POST" and request.url.path == "/v1/notes"
            e = store_error(exc, f"database unavailable ({type(exc).__name__})", note=upload)
            return _reply(e.status, e.code, e.message, None)
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _reply(500, "internal", f"internal error ({type(exc).__name__})", None)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> Response:
        return Response(status_code=400)  # nobody is listening (or Guard answered 413)

    # -------------------------------------------------------------------- auth helper
    async def signed(
        request: Request,
        x_hubi_caller: Annotated[str | None, Header(description="caller identity")] = None,
        x_hubi_time: Annotated[str | None, Header(description="Unix seconds")] = None,
        x_hubi_nonce: Annotated[str | None, Header(description="16-64 chars, once")] = None,
        x_hubi_signature: Annotated[str | None, Header(description="hex r||s")] = None,
        x_hubi_template: Annotated[
            str | None, Header(description="caller's Template (hex, accounts)")
        ] = None,
    ) -> Caller:
        body = await request.body()
        headers = {
            k: v
            for k, v in (
                (auth.H_CALLER, x_hubi_caller),
                (auth.H_TIME, x_hubi_time),
                (auth.H_NONCE, x_hubi_nonce),
                (auth.H_SIG, x_hubi_signature),
                (auth.H_TEMPLATE, x_hubi_template),
            )
            if v is not None
        }
        qs = request.scope.get("query_string", b"").decode("latin-1")
        try:
            return await run_in_threadpool(
                node.authenticator.authenticate,
                request.method,
                request.scope["path"],  # percent-decoded, as the client signs it
                qs,
                headers,
                body,
            )
        except AuthError:
            raise
        except HubiError as exc:
            raise AuthError(401, "unknown-caller", str(exc)) from None

    SignedCaller = Annotated[Caller, Depends(signed)]

    # ------------------------------------------------------------------- operational
    @app.get("/health", response_model=HealthOut, tags=["node"])
    def health() -> HealthOut:
        """Liveness and a few figures; unsigned."""
        try:
            detail = backend.health()
            # a consortium member that stopped applying the log for good is up but not well
            status = "degraded" if (detail.get("consortium") or {}).get("halted") else "ok"
            if detail.get("checkpoint_error"):  # books on, but signs no head until restored
                status = "degraded"
            if detail.get("node_lock"):  # books nothing until its database lock is back
                status = "degraded"
            clock = (detail.get("consortium") or {}).get("clock") or {}
            if clock.get("this_bank_off"):  # its peers refuse its signed requests as stale
                status = "degraded"
        except Exception as exc:  # the node is up but its store is not: say so, do not 500
            log.warning("health: store check failed: %s", type(exc).__name__)
            detail = {"store": f"unavailable ({type(exc).__name__})"}
            status = "degraded"
        return HealthOut(
            status=status,
            bank=node.bank,
            role=node.role,
            uptime=round(time.monotonic() - node.started, 3),
            detail=detail,
        )

    @app.get(
        "/metrics",
        tags=["node"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
    )
    def metrics() -> Response:
        """Prometheus metrics: uploads by outcome, booking latency, requests, errors."""
        return Response(m.render(), media_type=CONTENT_TYPE_LATEST)

    def primary_only() -> None:
        if node.role != "primary":
            raise ApiError(404, "not-found", "a hot-backup node serves /v1/backup/records only")

    # the primary's routes: a hot backup answers them with 404 (saying what it serves), before
    # anything else, and does not describe them
    primary_route: dict[str, Any] = {
        "include_in_schema": node.role == "primary",
        "dependencies": [Depends(primary_only)],
    }

    # ------------------------------------------------------------------------ upload
    if node.role == "primary":

        @app.post(
            "/v1/notes",
            response_model=UploadOut,
            tags=["upload"],
            responses=error_responses(400, 409, 413, 415, 422, 503),
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        },
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "hex": {"type": "string"},
                                    "base64": {"type": "string"},
                                },
                                "additionalProperties": False,
                            }
                        },
                        "text/plain": {"schema": {"type": "string"}},
                    },
                }
            },
        )
        async def upload(request: Request) -> UploadOut:
            """Upload a note (or a Receipt): open to anyone, idempotent by note id.

            Body: the raw bytes (application/octet-stream), JSON {"hex": ...} or
            {"base64": ...}, or hex as text/plain. The reply names the outcome: booked,
            refused (with reason) or bounced (with the bank-signed Refusal), plus notices."""
            body = await request.body()
            try:
                data = _check_upload(
                    _decode_upload(body, request.headers.get("content-type", "")),
                    backend.UPLOAD_KINDS,
                )
                t0 = time.perf_counter()
                try:
                    out = await run_in_threadpool(backend.upload, data)
                except CodecError as exc:
                    raise _codec_api_error(exc) from None
                m.booking.observe(time.perf_counter() - t0)
            except ApiError:
                m.uploads.labels("invalid").inc()
                raise
            m.uploads.labels(out["outcome"]).inc()
            return UploadOut(**out)

    else:  # a merchant pointed at a backup by mistake is told what it reached, not "Not Found"

        @app.post("/v1/notes", include_in_schema=False)
        def upload_to_backup() -> None:
            primary_only()

    # ----------------------------------------------------------------- customers
    @app.get(
        "/v1/accounts/{account}/notices",
        response_model=NoticesOut,
        tags=["accounts"],
        responses=SIGNED_ERRORS,
        **primary_route,
    )
    def notices(
        caller: SignedCaller,
        account: Annotated[str, _account_path()],
        after: Annotated[int, Query(ge=0, le=MAX_NUMBER)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> NoticesOut:
        """Notices for an account (signed by that account, or by the bank itself)."""
        auth.require_account_access(caller, account, regulator=False)
        return NoticesOut(account=account, notices=backend.notices(account, after, limit))

    @app.get(
        "/v1/accounts/{account}/book",
        response_model=BookOut,
        tags=["accounts"],
        responses=SIGNED_ERRORS | error_responses(404),
        **primary_route,
    )
    def book(
        caller: SignedCaller,
        account: Annotated[str, _account_path()],
        start: Annotated[int, Query(alias="from", ge=1, le=MAX_NUMBER)] = 1,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1000,
    ) -> BookOut:
        """A page of an account's book: its owner, a regulator or the bank itself."""
        auth.require_account_access(caller, account, regulator=True)
        doc = backend.book(account, start, limit)
        if doc is None:
            raise ApiError(404, "not-found", f"no book for account {account}", "account")
        return BookOut(**doc)

    @app.get(
        "/v1/accounts/{account}",
        tags=["accounts"],
        responses=SIGNED_ERRORS | error_responses(404, 409),
        **primary_route,
    )
    def account_info(
        caller: SignedCaller, account: Annotated[str, _account_path()]
    ) -> dict[str, Any]:
        """An account: template, flags (double issuance), book length and balance (its owner,
        a regulator or the bank itself)."""
        auth.require_account_access(caller, account, regulator=True)
        info = backend.account_info(account)
        if info is None:
            raise ApiError(404, "not-found", f"no account {account} at bank {node.bank}", "account")
        return info

    @app.post(
        "/v1/accounts",
        tags=["accounts"],
        status_code=201,
        responses=SIGNED_ERRORS | error_responses(409),
        **primary_route,
    )
    def open_account(caller: SignedCaller, body: TemplateIn) -> dict[str, Any]:
        """Open an account from a Template this bank sealed (the bank itself only: operators)."""
        auth.require(caller, Role.SELF)
        try:
            raw = bytes.fromhex(body.template)
        except ValueError as exc:
            raise ApiError(400, "bad-hex", f"template: {exc}", "template") from None
        return backend.open_account(raw)

    # -------------------------------------------------------------------- regulators
    @app.get(
        "/v1/audit",
        tags=["audit"],
        responses=SIGNED_ERRORS | error_responses(404, 409),
        **primary_route,
    )
    def audit(
        caller: SignedCaller,
        book: Annotated[list[str] | None, Query(description="limit to these books")] = None,
        chain_only: bool = False,
    ) -> dict[str, Any]:
        """Run the audit over the register (or some books): findings by book and record."""
        auth.require(caller, Role.REGULATOR, Role.SELF)
        for name in book or ():
            if not _is_account(name):  # say so here: NUL would not even reach PostgreSQL
                raise ApiError(
                    422, "bad-parameter", f"book {name[:40]!r} is not an account id", "book"
                )
        names = list(dict.fromkeys(book or ()))  # a book named twice is walked once
        if len(names) > MAX_AUDIT_BOOKS:  # each is looked up: the whole register has no book=
            raise ApiError(
                422,
                "bad-parameter",
                f"{counted(len(names), 'book')} named: at most {MAX_AUDIT_BOOKS} (name none for all)",
                "book",
            )
        return backend.audit(names or None, chain_only)

    # ------------------------------------------------------------- checkpoints/proofs
    @app.get("/v1/checkpoints", tags=["proofs"], responses=SIGNED_ERRORS, **primary_route)
    def checkpoints(
        caller: SignedCaller,
        after: Annotated[int, Query(ge=0, le=MAX_NUMBER)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> dict[str, Any]:
        """Signed Merkle tree heads of the register (any signed caller)."""
        return {"checkpoints": backend.checkpoints(after, limit)}

    @app.post("/v1/checkpoints", tags=["proofs"], responses=SIGNED_ERRORS, **primary_route)
    def make_checkpoint(caller: SignedCaller) -> dict[str, Any]:
        """Sign a tree head over the whole register now (the bank itself only)."""
        auth.require(caller, Role.SELF)
        return backend.checkpoint_now()

    @app.get(
        "/v1/checkpoints/latest",
        tags=["proofs"],
        responses=SIGNED_ERRORS | error_responses(404),
        **primary_route,
    )
    def latest_checkpoint(caller: SignedCaller) -> dict[str, Any]:
        cp = backend.latest_checkpoint()
        if cp is None:
            raise ApiError(404, "not-found", "no checkpoint yet")
        return cp

    @app.get(
        "/v1/proofs/inclusion",
        tags=["proofs"],
        responses=SIGNED_ERRORS | error_responses(404),
        **primary_route,
    )
    def inclusion(
        caller: SignedCaller,
        book: Annotated[str, Query(pattern=ACCOUNT_PATTERN)],
        number: Annotated[int, Query(ge=1, le=MAX_NUMBER)],
        tree_size: Annotated[int | None, Query(ge=1, le=MAX_NUMBER)] = None,
    ) -> dict[str, Any]:
        """RFC 9162 inclusion proof of record (book, number) under a signed checkpoint (default:
        the newest one that covers it). The proof carries the record: a customer gets proofs of
        its own book only, a peer bank only of records whose note has a party at that bank."""
        if caller.role == Role.CUSTOMER:
            auth.require_account_access(caller, book, regulator=True)
        if caller.role == Role.PEER:  # decided on the stored record, before any proof: a
            # missing record is refused as one it may not see, and one it may see gets the
            # proof's own answers (404 before its checkpoint, 422 for a bad tree size)
            body = backend.record_body(book, number)
            auth.require_party_bank(caller, None if body is None else _note_parties(body))
        return backend.inclusion_proof(tree_size, book, number)

    @app.get(
        "/v1/proofs/consistency",
        tags=["proofs"],
        responses=SIGNED_ERRORS | error_responses(404),
        **primary_route,
    )
    def consistency(
        caller: SignedCaller,
        first: Annotated[int, Query(ge=1, le=MAX_NUMBER)],
        second: Annotated[int, Query(ge=1, le=MAX_NUMBER)],
    ) -> dict[str, Any]:
        """RFC 9162 consistency proof between two tree heads."""
        if first > second:
            raise ApiError(422, "bad-parameter", "first must not exceed second", "first")
        return backend.consistency_proof(first, second)

    # ------------------------------------------------------------ hot backup records
    @app.post(
        "/v1/backup/records",
        response_model=RecordsOut,
        tags=["backup"],
        responses=SIGNED_ERRORS,
    )
    def backup_records(caller: SignedCaller, body: RecordsIn) -> RecordsOut:
        """Named records with their signatures (the bank itself or a regulator)."""
        auth.require(caller, Role.SELF, Role.REGULATOR)
        names: list[tuple[str, int]] = []
        odd: list[dict[str, Any]] = []
        for i, item in enumerate(body.records):
            b, n = item.get("book"), item.get("number")
            if not (_is_text(b) and type(n) is int and 1 <= n <= MAX_NUMBER):
                raise ApiError(
                    422,
                    "bad-parameter",
                    f"records[{i}] must be {{'book': account id, 'number': 1 <= n <= 2^62}}",
                    f"records.{i}",
                )
            if _is_account(b):
                names.append((b, n))
            else:  # no book has such a name (a restore may still ask): missing, unlooked-up
                odd.append({"book": b, "number": n})
        found, missing = backend.records(names) if names else ([], [])
        return RecordsOut(records=found, missing=missing + odd)

    @app.get(
        "/v1/replication/log",
        tags=["backup"],
        responses=SIGNED_ERRORS,
        **primary_route,
    )
    def replication_log(
        caller: SignedCaller,
        start: Annotated[int, Query(alias="from", ge=0, le=MAX_NUMBER)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 500,
    ) -> dict[str, Any]:
        """Register entries from sequence number `from` on, with their records, in booking
        order (the bank's own hot backup pulls these)."""
        auth.require(caller, Role.SELF)
        return backend.log(start, limit)

    for extend in node.extensions:
        extend(app)
    app.state.node = node
    app.add_middleware(Guard, max_body=node.max_body, metrics=m)
    return app


def _is_text(v: Any) -> bool:
    """A str that can be stored and sent back: lone surrogates cannot be encoded as UTF-8."""
    if not isinstance(v, str):
        return False
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_account(name: str) -> bool:
    return _ACCOUNT_RE.fullmatch(name) is not None


def _account_path():  # type: ignore[no-untyped-def]
    from fastapi import Path as PathParam

    return PathParam(pattern=ACCOUNT_PATTERN, description="account id, e.g. BKA-000000000042")
