"""A crypto library failure is not a damaged book. libcrypto failing in the batch signer ("out
of memory", EC_POINT_mul failing) raised ChainError, which the node answers as 409
book-damaged, sending the operator to audit and restore a sound book. It is now
``records.CryptoFailure``, a 503 to retry, and the same note is booked once the failure is gone.

libcrypto cannot be made to fail on demand, so these tests replace one libcrypto function (or
cryptography's AES-GCM) with one that fails the way the real one would: returning 0 / NULL, or
raising MemoryError. Everything else is the real engine on a real SQLite database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hubi.bank import records as rec
from hubi.bank.api import ApiError
from hubi.bank.backend import EngineBackend
from hubi.bank.engine import BankEngine
from hubi_core import codec
from tests.test_bank_support import make_bank
from tests.world import World, make_world

pytestmark = pytest.mark.xdist_group("bank-crypto-failure")

A, B = "BKA-alice", "BKA-bob"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[World, EngineBackend]]:
    w = make_world()
    url = f"sqlite:///{tmp_path / 'bank.db'}"
    make_bank(url, w, accounts=(A, B), fund=1_000).close()
    backend = EngineBackend(BankEngine(url, w.banks["BKA"], w.trust))
    try:
        yield w, backend
    finally:
        backend.close()


def _libcrypto() -> Any:
    bm = rec._basemul()
    assert bm is not None, (
        "no system libcrypto found: the batch signer these tests fail is not used"
    )
    return bm.lib


@pytest.mark.parametrize(
    "name, failed, said",
    [
        ("EC_POINT_mul", 0, "libcrypto: EC_POINT_mul failed"),
        ("BN_CTX_new", None, "libcrypto: out of memory"),  # the booking thread's first use
    ],
)
def test_a_libcrypto_failure_while_booking_is_a_503_and_the_note_books_after(
    node: tuple[World, EngineBackend],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    failed: Any,
    said: str,
) -> None:
    w, backend = node
    lib = _libcrypto()
    note = codec.encode(w.note(A, B, 25, serial=1))
    monkeypatch.setattr(lib, name, lambda *args: failed)
    with pytest.raises(ApiError) as err:
        backend.upload(note)
    assert (err.value.status, err.value.code) == (503, "crypto-unavailable"), err.value
    assert said in err.value.message and "not damaged" in err.value.message
    monkeypatch.undo()  # the failure is gone: the same note is booked, the books are sound
    out = backend.upload(note)
    assert out["outcome"] == "booked" and not out["duplicate"], out
    assert backend.account_info(A)["balance"] == 975


def test_out_of_memory_opening_a_balance_is_a_503_not_book_damaged(
    node: tuple[World, EngineBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    """AES-GCM raising MemoryError while a coded balance is opened was AuthFailed (the blob
    'does not open'), 409 book-damaged as well."""
    _, backend = node

    class NoMemory:
        def __init__(self, key: bytes):
            pass

        def decrypt(self, *args: Any) -> bytes:
            raise MemoryError

    monkeypatch.setattr(rec, "AESGCM", NoMemory)
    with pytest.raises(ApiError) as err:
        backend.account_info(A)
    assert (err.value.status, err.value.code) == (503, "crypto-unavailable"), err.value
    monkeypatch.undo()
    assert backend.account_info(A)["balance"] == 1_000
