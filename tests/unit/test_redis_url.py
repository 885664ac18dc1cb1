"""What a counter_redis_url names, in process: the forms for a server, a Redis Cluster and
Sentinel, and the refusals, which name no password.

tests/e2e/test_redis_cluster.py and test_redis_sentinel.py count through real ones.
"""

from __future__ import annotations

import pytest

from counting_addon.store.client import RedisClient
from counting_addon.store.url import Topology, parse, redact

CLUSTER, SENTINEL, SERVER = Topology.CLUSTER, Topology.SENTINEL, Topology.SERVER


@pytest.mark.parametrize(
    ("url", "topology", "nodes", "master", "options"),
    [
        ("redis://localhost:6379/2", SERVER, (), "", {"db": 2, "port": 6379}),
        ("unix:///run/redis.sock", SERVER, (), "", {"path": "/run/redis.sock"}),
        ("redis+cluster://h1:7000", CLUSTER, (("h1", 7000),), "", {}),
        ("redis+cluster://h1", CLUSTER, (("h1", 6379),), "", {}),
        (
            "redis+cluster://app:p%40ss@10.0.0.1:7000,[::1]:7001,h3/0",
            CLUSTER,
            (("10.0.0.1", 7000), ("::1", 7001), ("h3", 6379)),
            "",
            {"username": "app", "password": "p@ss"},
        ),
        (
            "rediss+cluster://h1:7000?ssl_cert_reqs=none&socket_timeout=4",
            CLUSTER,
            (("h1", 7000),),
            "",
            {"ssl": True, "ssl_cert_reqs": "none", "socket_timeout": 4.0},
        ),
        (
            "redis+sentinel://:pw@s1,s2:26380/mymaster",
            SENTINEL,
            (("s1", 26379), ("s2", 26380)),
            "mymaster",
            {"password": "pw", "db": 0},
        ),
        (
            "rediss+sentinel://s1/my%20master/3?sentinel_password=a%26b",
            SENTINEL,
            (("s1", 26379),),
            "my master",
            {"db": 3, "ssl": True},
        ),
    ],
)
def test_the_forms_a_url_takes(
    url: str,
    topology: Topology,
    nodes: tuple[tuple[str, int], ...],
    master: str,
    options: dict[str, object],
) -> None:
    target = parse(url)
    assert (target.topology, target.nodes, target.master_name) == (topology, nodes, master)
    assert options.items() <= target.options.items()
    parse(url)


def test_the_sentinels_take_their_own_credentials_and_the_data_nodes_tls() -> None:
    target = parse(
        "rediss+sentinel://app:data@s1/m?sentinel_username=watch&sentinel_password=a%26b"
        "&ssl_cert_reqs=none"
    )
    assert target.sentinel_options == {
        "username": "watch",
        "password": "a&b",
        "ssl": True,
        "ssl_cert_reqs": "none",
    }
    assert (target.options["username"], target.options["password"]) == ("app", "data")
    assert "sentinel_password" not in target.options


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://h1:7000/1", "a Redis Cluster has only database 0"),
        ("redis+cluster://h1:7000?db=2", "a Redis Cluster has only database 0"),
        ("redis+cluster://", "'' is not host:port"),
        ("redis+cluster://h1:7000,,h2", "'' is not host:port"),
        ("redis+cluster://h1:port", "Port could not be cast"),
        ("redis+cluster://h1?sentinel_password=x", "only a sentinel URL takes it"),
        ("redis+cluster://h1?no_such_argument=1", "unexpected keyword argument"),
        ("redis+sentinel://s1", "name the master the sentinels watch"),
        ("redis+sentinel://s1/", "name the master the sentinels watch"),
        ("redis+sentinel://s1/m/x", "database 'x' is not a number"),
        ("redis+sentinel://s1/m?no_such_argument=1", "unexpected keyword argument"),
        ("sentinel://s1/m", "the scheme must be one of redis://, rediss://"),
        ("redis+cluster://:pa/ss@h1", "percent-encode '/', '?' and '#' in the password"),
    ],
)
def test_bad_forms_are_refused_saying_why(url: str, message: str) -> None:
    with pytest.raises(ValueError, match="is not a Redis URL") as refusal:
        parse(url)
    assert message in str(refusal.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://:Secret1@s1/m?sentinel_password=Secret2",
        "redis+sentinel://:Secret1@s1/m?socket_timeout=x&sentinel_password=Secret2",
        "redis+cluster://u:Secret1@h1/1?sentinel_password=Secret2",
    ],
)
def test_no_password_is_shown(url: str) -> None:
    shown = [redact(url)]
    try:
        parse(url)
    except ValueError as e:
        shown.append(str(e))
    for text in shown:
        assert "Secret1" not in text and "Secret2" not in text, text
        assert "***" in text


async def test_clients_are_made_without_connecting() -> None:
    """No I/O until the first command: made and closed with nothing listening."""
    for url in ("redis+cluster://127.0.0.1:1,127.0.0.1:2", "redis+sentinel://127.0.0.1:1/m"):
        client = RedisClient(parse(url))
        await client.aclose()
