"""Redis URLs: the default, checking one before use, and keeping its password out of sight."""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio

DEFAULT_URL = "redis://localhost:6379/0"
# Files a rediss:// URL may name; a missing one would only show as a failed connection.
TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_ca_path")


def default_url() -> str:
    """The URL used when counter_redis_url is not set: REDIS_URL, else DEFAULT_URL."""
    return os.environ.get("REDIS_URL", DEFAULT_URL)


def uses_tls(url: str) -> bool:
    return url.startswith("rediss://")


def _split_password(url: str) -> tuple[str, str, str] | None:
    """(what precedes the password, the password as typed, what follows it), if there is one.

    Read off the raw text: a password may hold '/', '?' or '#' unencoded, which ends the host
    part for urlsplit and would leave the password in plain sight.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    userinfo, at, host = rest.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not (at and colon and password):
        return None
    return f"{scheme}{sep}{user}:", password, f"@{host}"


def redact(url: str) -> str:
    """The URL with any password replaced, fit for logs and error messages."""
    parts = _split_password(url)
    return url if parts is None else f"{parts[0]}***{parts[2]}"


def scrub(text: str, url: str) -> str:
    """`text` (an error about `url`) with the URL's password, as typed or decoded, replaced."""
    parts = _split_password(url)
    if parts is not None:
        for form in sorted({parts[1], unquote(parts[1])}, key=len, reverse=True):
            text = text.replace(form, "***")
    return text


def check_url(url: str) -> None:
    """Raise ValueError, naming no password, if redis-py can't use `url`.

    Does no network I/O: it runs in configure(), on the event loop.
    """
    secret = _split_password(url)
    if secret is not None and any(c in secret[1] for c in "/?#"):
        # Or the URL parser ends the host there and quotes bits of the password in its errors.
        raise ValueError(
            f"{redact(url)} is not a Redis URL: percent-encode '/', '?' and '#' in the password "
            "(%2F, %3F, %23)"
        )
    try:
        options = redis.connection.parse_url(url)
        parts = urlsplit(url)
        # redis-py silently ignores a database that is not a number.
        if parts.scheme != "unix" and not parts.path.strip("/").isdigit() and parts.path.strip("/"):
            raise ValueError(f"database {parts.path.strip('/')!r} is not a number")
        # A misspelt query argument only fails when a connection is made: make one, unconnected.
        for client in (redis.Redis, redis.asyncio.Redis):
            client.from_url(url).connection_pool.make_connection()
        for name in TLS_FILES:
            if options.get(name) and not os.path.exists(options[name]):
                raise ValueError(f"{name}: no such file {options[name]!r}")
    except Exception as e:  # redis-py raises whatever a query argument of the wrong type causes
        raise ValueError(f"{redact(url)} is not a Redis URL: {scrub(str(e), url)}") from None
