"""A bank node's consortium settings (HOME/banks/<BANK>/consortium.json) took etcd and peer URLs
with a user name and password in them, which the node then sent and printed; the URL options
refuse them already. The settings file now refuses them too, never showing the password."""

from __future__ import annotations

import json

import pytest

from hubi.consortium.errors import ConsortiumError
from hubi.consortium.service import NodeConfig


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("etcd", ["http://root:hunter2@127.0.0.1:2379"]),
        ("peers", {"BKB": "http://bkb:hunter2@127.0.0.1:8701"}),
        ("peers", {"BKB": "https://:hunter2@[::1]:8701/"}),
        # with another fault too: the checks that quote the URL came first and showed it
        ("etcd", ["http://root:hunter2@127.0.0.1:99999"]),
        ("peers", {"BKB": "ftp://bkb:hunter2@127.0.0.1:8701"}),
        ("peers", {"BKB": "http://bkb:hunter2@[::1"}),
        ("peers", {"BKB": "http://bkb:hunt/er2@127.0.0.1:8701"}),  # '/' in the password
    ],
)
def test_userinfo_in_a_settings_url_is_refused_unshown(field: str, value: object) -> None:
    with pytest.raises(ConsortiumError) as caught:
        NodeConfig.from_json(json.dumps({field: value}), "consortium.json")
    said = str(caught.value)
    assert "user name or password" in said and "hunter2" not in said, said
    assert said.startswith("consortium.json: "), said


def test_plain_urls_are_still_taken() -> None:
    cfg = NodeConfig.from_json(
        json.dumps({"etcd": ["http://127.0.0.1:2379"], "peers": {"BKB": "http://[::1]:8701"}}),
        "consortium.json",
    )
    assert cfg.peers == {"BKB": "http://[::1]:8701"}
