"""Command-line values checked where they are typed: a usage error names the option at once,
instead of a request that fails later (or is retried as if the network were down)."""

from __future__ import annotations

import math
from pathlib import Path
from urllib.parse import urlsplit

import click


def check_url(value: str, what: str) -> str:
    """An http(s) URL with a host (and a port in 1-65535, if any), else a usage error."""
    url = value.strip()
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        # urlsplit takes a space in the host and port 0; neither reaches a server. A control
        # character anywhere (an ESC in the path) would also reach the terminal in every message
        # that names the URL.
        ok = (
            ok
            and parts.port != 0
            and all(c.isprintable() for c in url)
            and not any(c.isspace() for c in parts.netloc)
        )
    except ValueError:  # e.g. "http://[::1" or a port of 99999 (parts.port raises)
        ok = False
    if not ok:
        raise click.BadParameter(
            f"{url!r} is not an http:// or https:// URL (a host, and a port 1-65535 if any)",
            param_hint=what,
        )
    return url


def in_existing_folder(
    _ctx: click.Context, param: click.Parameter, value: Path | None
) -> Path | None:
    """click callback for a file a command writes once it runs (a ready file, a port file): its
    folder must exist, so that a typo is named before anything starts, not in a traceback after."""
    if value is not None and not value.parent.is_dir():
        raise click.BadParameter(f"there is no folder {value.parent} to write {value.name} in")
    return value


class HttpUrl(click.ParamType):
    """click type for a node URL: `type=HTTP_URL`."""

    name = "URL"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None):
        if not isinstance(value, str):
            self.fail(f"{value!r} is not a URL", param, ctx)
        what = f"'{param.opts[0]}'" if param is not None and param.opts else "URL"
        return check_url(value, what)


class Seconds(click.FloatRange):
    """A finite number of seconds in range (FloatRange alone lets nan through)."""

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None):
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return seconds


class ConsortiumName(click.ParamType):
    """click type for a consortium's name (``hubi_core.consortium.check_name``)."""

    name = "NAME"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None):
        from hubi_core.consortium import check_name
        from hubi_core.errors import BadValue

        try:
            return check_name(value)
        except BadValue as exc:
            self.fail(str(exc), param, ctx)


HTTP_URL = HttpUrl()
CONSORTIUM_NAME = ConsortiumName()
SECONDS = Seconds(min=0.0)  # a delay: 0 (no wait) or more
POSITIVE_SECONDS = Seconds(min=0.0, min_open=True)  # a timeout: more than 0
MAX_AMOUNT = (1 << 63) - 1  # minor units: a balance is a signed 64-bit number
