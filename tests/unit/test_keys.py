"""The Redis keys beside the counter share its Redis Cluster hash slot."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from counting_addon.store.keys import hash_tag, parse_key, responses_key, writer_key


@pytest.mark.parametrize(
    ("key", "responses"),
    [
        ("counter", "{counter}:responses"),
        ("api:requests", "{api:requests}:responses"),
        ("{api}:requests", "{api}:requests:responses"),
        ("a{b}c", "a{b}c:responses"),
        ("a{b", "{a{b}:responses"),  # no closing brace: no tag, the whole key is hashed
        ("{", "{{}:responses"),
    ],
)
def test_every_key_shares_the_counters_slot(key: str, responses: str) -> None:
    assert responses_key(key) == responses
    slot = key_slot(key.encode())
    assert key_slot(responses_key(key).encode()) == slot
    assert key_slot(writer_key(key, "0123abcd").encode()) == slot
    assert writer_key(key, "0123abcd").endswith(":writer:0123abcd")


@pytest.mark.parametrize(
    ("key", "tag"),
    [
        ("counter", None),
        ("{x}y", "x"),
        ("y{x}", "x"),
        ("{}x", None),
        ("{}{x}", None),
        ("a{b", None),
    ],
)
def test_hash_tag_follows_redis_cluster(key: str, tag: str | None) -> None:
    assert hash_tag(key) == tag


@pytest.mark.parametrize("key", ["a}b", "{}x}", "}"])
def test_a_key_no_other_can_share_a_slot_with_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="hash tag"):
        parse_key(key)


@pytest.mark.parametrize("key", ["counter", "{a}b}", "a{b"])
def test_other_keys_are_accepted(key: str) -> None:
    parse_key(key)
