"""Fixtures shared by the suite-1 tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.backends import BACKENDS, using
from tests.http_fakes import fake_bank  # noqa: F401  (a fixture for every test)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test once per back end, which is in use while it runs."""
    with using(request.param) as name:
        yield name


@pytest.fixture
def pure() -> Iterator[None]:
    with using("pure"):
        yield
