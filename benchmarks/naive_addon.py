"""The benchmark's 'naive' variant: what most people write first.

Every request awaits an INCR on Redis in requestheaders before it may go upstream.
mitmdump -s benchmarks/naive_addon.py --set naive_redis_url=redis://...
"""

from __future__ import annotations

import redis.asyncio
from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader


class NaiveCounter:
    def __init__(self) -> None:
        self.redis: redis.asyncio.Redis | None = None

    def load(self, loader: Loader) -> None:
        loader.add_option("naive_redis_url", str, "redis://localhost:6379/0", "Redis URL.")

    def configure(self, updated: set[str]) -> None:
        if "naive_redis_url" in updated:
            self.redis = redis.asyncio.Redis.from_url(ctx.options.naive_redis_url)

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        assert self.redis is not None
        await self.redis.incr("counter")


addons = [NaiveCounter()]
