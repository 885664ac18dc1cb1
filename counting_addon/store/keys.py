"""The names of the Redis keys the product writes beside the counter.

Every one shares the counter key's Redis Cluster hash slot, so that one script can touch them
all there too: a key with a hash tag (`{...}`, non-empty) is used as the prefix as it is,
any other key is wrapped in braces, which makes the whole of it the tag. The counter key
itself keeps its name.
"""

from __future__ import annotations


def hash_tag(key: str) -> str | None:
    """The part of `key` Redis Cluster hashes, when it is not the whole key: between the first
    `{` and the first `}` after it, if that is not empty."""
    start = key.find("{")
    if start == -1:
        return None
    end = key.find("}", start + 1)
    if end == -1 or end == start + 1:
        return None
    return key[start + 1 : end]


def parse_key(key: str) -> str:
    """A counter key: non-empty, printable, and one whose Cluster slot the keys beside it can
    share (braces can't wrap a `}`)."""
    if not key or not key.isprintable():
        raise ValueError(f"{key!r} must be a non-empty printable string")
    if hash_tag(key) is None and "}" in key:
        raise ValueError(
            f"{key!r} has a '}}' but no hash tag, so the keys beside it could not share its "
            "Redis Cluster slot: remove the '}' or give the key a tag, e.g. '{counter}'"
        )
    return key


def _prefix(key: str) -> str:
    return key if hash_tag(key) is not None else f"{{{key}}}"


def responses_key(key: str) -> str:
    """The hash of responses by class, fields `1xx`..`5xx`, beside counter `key`."""
    return f"{_prefix(key)}:responses"


def writer_key(key: str, writer: str) -> str:
    """The last batch number applied for one writer (one counter in one process)."""
    return f"{_prefix(key)}:writer:{writer}"


def series_key(key: str, labels: str) -> str:
    """The hash of requests by series for one counter_by list (`route,method`, say), fields the
    label values as a JSON array, beside counter `key`: lists of other labels never mix."""
    return f"{_prefix(key)}:by:{labels}"


def series_lists_key(key: str) -> str:
    """The set of the series hashes written beside counter `key`, which a reset deletes."""
    return f"{_prefix(key)}:by"


def bytes_key(key: str) -> str:
    """The hash of body bytes, fields `request` and `response`, beside counter `key`."""
    return f"{_prefix(key)}:bytes"


def window_key(key: str, tag: str, bucket: int) -> str:
    """One bucket of requests over time beside counter `key` (windows.py): `tag` names its
    length (s, m, h), `bucket` is the number of such lengths since the epoch."""
    return f"{_prefix(key)}:{tag}:{bucket}"
