"""Running CPython code on one of suite 1's back ends ("pure" or "openssl") and back."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from hubi_core import suite

BACKENDS = ["pure", "openssl"]


@contextmanager
def using(name: str) -> Iterator[str]:
    before = suite.backend()
    suite.use_backend(name)
    try:
        yield name
    finally:
        suite.use_backend(before)


def with_backend(name: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    with using(name):
        return fn(*args, **kw)
