"""Fixtures shared by the suite-1 tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

try:  # pytest 9's structured ids; before it, xdist's own marking works and this is not needed
    from _pytest.nodeid import NodeId
except ImportError:  # pragma: no cover - pytest 8
    NodeId = None  # type: ignore[assignment,misc]

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


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """pytest-xdist 3.8 puts a test's xdist_group on ``item._nodeid``, which pytest 9 no longer
    reads (``nodeid`` comes from ``item._id``): ``--dist loadgroup`` ignored every group and
    spread a module's tests (and its module fixtures) over the workers. On a worker of such a
    run, put the group on the id as xdist means to; its scheduler keeps a group on one worker."""
    if NodeId is None or not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        names = {
            str(m.args[0] if m.args else m.kwargs.get("name", "default"))
            for m in item.iter_markers("xdist_group")
        }
        if names and "@" not in item.nodeid:  # (a fixed xdist has put it there already)
            item._id = NodeId.parse("%s@%s" % (item.nodeid, "_".join(sorted(names))))
