"""A TCP relay on loopback that delays what a server sends: put between a replica and its
primary, the replication stream reaches the replica `delay` seconds late, so a primary killed
meanwhile takes acknowledged writes with it, as a real failover can.

Bytes toward the server pass at once; bytes from the server are each released `delay` s after
they arrived, in order. When the server's side closes (it died), what is still held is dropped
and both sides are closed, as bytes in flight are lost in a real crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from tests.support.debian_redis import HOST
from tests.support.relay import LoopbackRelay


class DelayRelay(LoopbackRelay):
    def __init__(self, target_port: int, delay: float) -> None:
        super().__init__(target_port)
        self.delay = delay

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(HOST, self.target_port)
        except OSError:
            client_w.close()
            return
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        tasks = [
            asyncio.create_task(self._forward(client_r, server_w)),
            asyncio.create_task(self._hold(server_r, held)),
            asyncio.create_task(self._release(held, client_w)),
        ]
        try:
            # Whichever side ends first ends the connection; held bytes are dropped.
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for writer in (client_w, server_w):
                writer.close()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

    async def _hold(
        self, reader: asyncio.StreamReader, held: asyncio.Queue[tuple[float, bytes]]
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                held.put_nowait((time.monotonic() + self.delay, data))

    async def _release(
        self, held: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(OSError):
            while True:
                due, data = await held.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(data)
                await writer.drain()
