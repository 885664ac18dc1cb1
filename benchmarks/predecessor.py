"""The benchmark's 'predecessor': a Starlette + httpx + redis.asyncio proxy built the way the
blog post in shared/seed describes it (a yardstick, not product code).

    UPSTREAM=http://127.0.0.1:8000 REDIS_URL=redis://... uvicorn benchmarks.predecessor:app
"""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import redis.asyncio
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

COUNTER_KEY = "counter"
ALLOWED_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]

http_client = httpx.AsyncClient(base_url=os.environ["UPSTREAM"], timeout=None)
redis_client = redis.asyncio.Redis.from_url(os.environ["REDIS_URL"])
started = time.monotonic()


async def proxy(request: Request) -> Response:
    response, _ = await asyncio.gather(
        http_client.send(
            http_client.build_request(
                content=request.stream(),
                method=request.method,
                headers=dict(request.headers.raw),
                url=request.url.path,
            ),
            stream=True,
        ),
        redis_client.incr(COUNTER_KEY),
    )
    return StreamingResponse(
        response.aiter_raw(),
        headers=response.headers,
        status_code=response.status_code,
        background=BackgroundTask(response.aclose),
    )


async def status(_: Request) -> Response:
    counter = await redis_client.get(COUNTER_KEY)
    return JSONResponse({"counter": int(counter or 0), "uptime": int(time.monotonic() - started)})


app = Starlette(
    routes=[
        Route("/status", status),
        Route("/{path:path}", proxy, methods=ALLOWED_METHODS),
    ]
)
