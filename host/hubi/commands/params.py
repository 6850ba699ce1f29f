"""Command-line values checked where they are typed: a usage error names the option at once,
instead of a request that fails later (or is retried as if the network were down)."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click

# What RFC 3986 lets a URL hold unescaped (letters, digits, -._~, :/?#[]@, !$&'()*+,;= and %).
# Anything else (a space, '"', '<', '|', '\\', ...) is taken by urlsplit, then either mangled by
# the HTTP client or refused by the server: the option names it instead. Other than ASCII, any
# printable character may stand (a host or a path in another script is encoded when sent).
_URL_ASCII = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]")
_HOST_ASCII = re.compile(r"[A-Za-z0-9\-._~]")
_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
F = TypeVar("F", bound=Callable[..., Any])


def _url_fault(url: str) -> str | None:
    """What is wrong with `url` as a node's URL, in a few words; None if nothing."""
    bad = next((c for c in url if not c.isprintable() or c.isspace()), None)
    if bad is not None:  # a control character would also reach the terminal in every message
        return f"it holds {bad!r}" + ("; write a space as %20" if bad == " " else "")
    if "@" in url.partition("://")[2]:  # before any check that would quote a part of it
        return (
            "it holds a user name or password before '@'; hubi nodes take signed requests,"
            " not HTTP log-ins: leave it out"
        )
    parts = urlsplit(url)  # ValueError on a bad '[...]' host
    if parts.scheme not in ("http", "https"):
        return None
    if not parts.hostname:
        return "it has no host"
    bad = next((c for c in url if c.isascii() and not _URL_ASCII.fullmatch(c)), None)
    if bad is not None:
        return (
            f"it holds {bad!r}, which a URL must not hold unescaped (write it as %{ord(bad):02X})"
        )
    hostport = parts.netloc.rpartition("@")[2]
    checked = url
    if hostport.startswith("["):  # an IPv6 zone id ("[fe80::1%2]") is no %XX escape: the
        # client hands the host to getaddrinfo as written, and "%252" would name interface 252
        at = len(url.partition("//")[0]) + 2 + len(parts.netloc) - len(hostport)
        checked = url[:at] + url[at + hostport.index("]") + 1 :]
    if _ESCAPE.search(checked):
        return "it holds a '%' that is not a %XX escape (write '%' itself as %25)"
    if hostport.startswith("["):
        rest = hostport[hostport.index("]") + 1 :]
    else:
        host = hostport.partition(":")[0]
        bad = next((c for c in host if c.isascii() and not _HOST_ASCII.fullmatch(c)), None)
        if bad is not None:
            return f"its host {host!r} holds {bad!r}"
        rest = hostport[len(host) :]
    if rest and rest[0] != ":":
        return f"{rest!r} follows its host"
    if rest == ":":
        return "its port is empty (give one after ':', or no ':')"
    if rest and not (rest[1:].isascii() and rest[1:].isdigit() and 0 < int(rest[1:]) < 65536):
        return f"its port {rest[1:]!r} is not a number 1-65535"
    return None


def check_url(value: str, what: str) -> str:
    """An http(s) URL with a host (and a port in 1-65535, if any), every character one a URL may
    hold, else a usage error naming what is wrong."""
    url = value.strip()
    try:
        fault = _url_fault(url)
        ok = fault is None and urlsplit(url).scheme in ("http", "https")
    except ValueError as exc:  # e.g. "http://[::1" or "http://[zz]/"
        ok, fault = False, str(exc)
    if not ok:
        why = f": {fault}" if fault else ""
        raise click.BadParameter(
            f"{_masked(url)!r} is not an http:// or https:// URL (a host, and a port 1-65535 if"
            f" any){why}",
            param_hint=what,
        )
    return url


def _masked(url: str) -> str:
    """url with all before its last '@' (after '://') shown as '***': a user name and password,
    however written (a raw '/', '?' or '#' in a password ends the authority early)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


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


# A year: far past any wait a person means, and far inside what the clocks take. A timeout of
# 1e12 s passed as finite, then every wait on it (a socket's, a thread's, a sleep) was an
# OverflowError traceback ("timestamp out of range for platform time_t") mid-command.
MAX_SECONDS = 365 * 86400


class Seconds(click.FloatRange):
    """A finite number of seconds in range, at most MAX_SECONDS (FloatRange alone lets nan
    through)."""

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None):
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        if seconds > MAX_SECONDS:
            self.fail(f"{value!r} is more than {MAX_SECONDS} seconds (a year)", param, ctx)
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


def typed_text(value: str) -> str | None:
    """An argument as the person typed it, if that was UTF-8: under LANG=C with PYTHONUTF8=0
    Python decodes no byte past ASCII, so "café" from a UTF-8 terminal arrives as lone
    surrogates (U+DC80-U+DCFF, one per byte), and is read again from those bytes here. None
    if the bytes typed are not UTF-8 (a Latin-1 terminal): the caller names the locale."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        pass
    try:
        return os.fsencode(value).decode("utf-8")
    except UnicodeError:
        return None


HTTP_URL = HttpUrl()
EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)  # a file that is there
CONSORTIUM_NAME = ConsortiumName()
SECONDS = Seconds(min=0.0)  # a delay: 0 (no wait) or more
POSITIVE_SECONDS = Seconds(min=0.0, min_open=True)  # a timeout: more than 0
MAX_AMOUNT = (1 << 63) - 1  # minor units: a balance is a signed 64-bit number


def env_option(*decls: str, envvar: str, **kw: Any) -> Callable[[F], F]:
    """An option that may come from the environment variable `envvar`, named in --help."""
    return click.option(*decls, envvar=envvar, show_envvar=True, **kw)


def home_option(help: str, *, required: bool = False) -> Callable[[F], F]:
    """--home / $HUBI_HOME: a hubi home, an existing folder (the bank and audit commands)."""
    return env_option(
        "--home",
        envvar="HUBI_HOME",
        required=required,
        type=click.Path(file_okay=False, exists=True, path_type=Path),
        help=help,
    )


def db_option(help: str, *, required: bool = False) -> Callable[[F], F]:
    """--db / $HUBI_DB: a bank database's URL."""
    return env_option("--db", envvar="HUBI_DB", required=required, help=help)
