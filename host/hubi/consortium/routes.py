"""The bank node's /v1/consortium/* routes (added by ``service.attach``).

No ``from __future__ import annotations`` here: FastAPI reads these signatures at run time.

    POST /v1/consortium/validate            peer bank: body = a note's bytes; reply = this
                                            bank's sealed Endorsement (hex), verdict, reason
    GET  /v1/consortium/status              applied revision, log hash, counts, positions
    GET  /v1/consortium/entries/{note_id}   what this bank applied for one note
    GET  /v1/consortium/reports?after=&limit=   what this bank found wrong
    GET  /v1/consortium/checkpoints?bank=&after=&limit=   checkpoints of every bank from the log

All are signed requests (hubi.bank.auth); validate needs the "peer bank" role (or the bank
itself), the others a peer, the bank itself or a regulator.
"""

import contextlib
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from starlette.concurrency import run_in_threadpool

from hubi.bank import auth
from hubi.bank.api import SIGNED_ERRORS, ApiError, error_responses
from hubi.bank.auth import Authenticator, Caller, Role
from hubi.consortium.errors import ConsortiumError
from hubi.consortium.node import ConsortiumNode
from hubi_core import codec
from hubi_core.errors import CodecError

__all__ = ["add_routes"]

READERS = (Role.PEER, Role.SELF, Role.REGULATOR)
UNAVAILABLE = error_responses(503)


@contextlib.contextmanager
def _state_errors() -> Iterator[None]:
    """The node's consortium state cannot be read (its file replaced or removed under the
    running node, or closed at shutdown): a 503 naming why, not a bare 500 internal error."""
    try:
        yield
    except ConsortiumError as exc:
        raise ApiError(503, "consortium-unavailable", str(exc)) from None


def add_routes(app: FastAPI, cnode: ConsortiumNode, authenticator: Authenticator) -> None:
    async def signed(request: Request) -> Caller:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        qs = request.scope.get("query_string", b"").decode("latin-1")
        return await run_in_threadpool(
            authenticator.authenticate, request.method, request.url.path, qs, headers, body
        )

    Signed = Annotated[Caller, Depends(signed)]

    @app.post(
        "/v1/consortium/validate",
        tags=["consortium"],
        responses=SIGNED_ERRORS | UNAVAILABLE,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            }
        },
    )
    async def consortium_validate(request: Request, caller: Signed) -> dict[str, Any]:
        """A peer bank asks this bank to validate an interbank note (body: the note's bytes);
        the answer is this bank's sealed Endorsement (endorse, or refuse with a reason)."""
        auth.require(caller, Role.PEER, Role.SELF)
        note = await request.body()
        if await request.is_disconnected():
            # the asking bank gave up (its timeout, or this node stalled): nobody will read
            # the answer, and a stalled node that caught up must not spend itself on old asks
            cnode.caller_gone(caller.identity)
            raise ApiError(503, "caller-gone", "the asking bank closed the connection")
        try:
            with _state_errors():
                endorsement = await run_in_threadpool(cnode.validate, note, caller.identity)
        except CodecError as exc:
            raise ApiError(400, "bad-object", f"{type(exc).__name__}: {exc}") from None
        obj = codec.decode(endorsement, codec.ENDORSEMENT)
        return {
            "endorsement": endorsement.hex(),
            "bank": cnode.bank,
            "verdict": obj["verdict"],
            "reason_code": obj.get("reason_code"),
            "reason": obj.get("reason"),
        }

    @app.get("/v1/consortium/status", tags=["consortium"], responses=SIGNED_ERRORS | UNAVAILABLE)
    def consortium_status(caller: Signed) -> dict[str, Any]:
        """Applied log revision, log hash, entry counts, interbank positions, reports."""
        auth.require(caller, *READERS)
        with _state_errors():
            out = cnode.status()
        return out

    @app.get(
        "/v1/consortium/entries/{note_id}",
        tags=["consortium"],
        responses=SIGNED_ERRORS | error_responses(404) | UNAVAILABLE,
    )
    def consortium_entry(caller: Signed, note_id: str) -> dict[str, Any]:
        """What this bank applied for one note id (state, endorsers, debit result)."""
        auth.require(caller, *READERS)
        try:
            nid = bytes.fromhex(note_id)
        except ValueError:
            raise ApiError(400, "bad-hex", "note id must be hex", "note_id") from None
        with _state_errors():
            row = cnode.state.entry(nid)
        if row is None:
            raise ApiError(404, "not-found", f"no log entry for note {note_id}", "note_id")
        return row.as_dict()

    @app.get("/v1/consortium/reports", tags=["consortium"], responses=SIGNED_ERRORS | UNAVAILABLE)
    def consortium_reports(
        caller: Signed,
        after: Annotated[int, Query(ge=0, le=2**62)] = 0,
        limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    ) -> dict[str, Any]:
        """What this bank found wrong in the log or in peers' answers."""
        auth.require(caller, *READERS)
        with _state_errors():
            rows = cnode.state.reports(after, limit)
        return {"reports": [r.as_dict() for r in rows]}

    @app.get(
        "/v1/consortium/checkpoints", tags=["consortium"], responses=SIGNED_ERRORS | UNAVAILABLE
    )
    def consortium_checkpoints(
        caller: Signed,
        bank: str | None = None,
        after: Annotated[int, Query(ge=0, le=2**62, description="log revision")] = 0,
        limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    ) -> dict[str, Any]:
        """Every bank's checkpoints (or one bank's) as applied from the log, in log order:
        those after log revision `after`, at most `limit` (page on with the last one's)."""
        auth.require(caller, *READERS)
        with _state_errors():
            found = cnode.state.checkpoints(bank, after, limit)
        return {"checkpoints": found}
