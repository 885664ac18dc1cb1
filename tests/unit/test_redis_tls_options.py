"""The counter_redis_url check on rediss:// URLs, in process: no redis-server, no proxy.

tests/e2e/test_redis_tls.py counts through a TLS redis-server with such URLs.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from counting_addon.store.url import parse
from tests.support.tls import Certificates, tls_url


def test_option_check_accepts_rediss_urls(certs: Certificates, tmp_path: Path) -> None:
    """The counter_redis_url check accepts rediss:// URLs with the TLS query arguments that
    redis-py understands, with or without a database in the path, and refuses one naming a
    CA file that does not exist."""
    ca = str(certs.ca)
    (tmp_path / "with space.pem").write_bytes(certs.ca.read_bytes())
    spaced = quote(str(tmp_path / "with space.pem"), safe="")
    for url in [
        tls_url(6380, certs.ca),
        f"rediss://127.0.0.1:6380?ssl_ca_certs={ca}",
        f"rediss://127.0.0.1:6380/?ssl_ca_certs={ca}&db=2",
        f"rediss://:pw@localhost:6380/3?ssl_ca_certs={ca}&ssl_cert_reqs=required",
        "rediss://user:pw@127.0.0.1/0?ssl_cert_reqs=none&ssl_check_hostname=false",
        f"rediss://127.0.0.1:6380/0?ssl_ca_certs={spaced}&ssl_min_version=3",
    ]:
        parse(url)
    with pytest.raises(ValueError, match="ssl_ca_certs: no such file"):
        parse(f"rediss://127.0.0.1:6380/0?ssl_ca_certs={tmp_path / 'missing.pem'}")
