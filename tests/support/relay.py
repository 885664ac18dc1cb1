"""A TCP relay on loopback between the proxy and Redis that can lose a write's reply.

It forwards bytes both ways. Armed with `lose_next_write_reply()`, it holds back the next
reply to a write (to an EVALSHA of the Lua script: the counter's value), then either drops it
and closes the client's connection (`then="drop"`), or waits for Redis to die and drops it
then (`then="hold"`): Redis has applied the write, the proxy never hears of it.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Literal


class LoopbackRelay:
    """A TCP server on 127.0.0.1 whose every connection `_serve` relays to `target_port`, on an
    event loop of its own in a thread (the tests around it are synchronous)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def start(self, port: int = 0) -> None:
        """Listen on 127.0.0.1:`port` (0: any free one, then in `self.port`)."""
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", port), self._loop
        ).result(10)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        # Else it is closed, with a ResourceWarning, whenever the garbage collector gets to it:
        # inside a test that checks for warnings, say.
        self._loop.close()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class Relay(LoopbackRelay):
    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self.lost_replies = 0
        self.reply_held = threading.Event()
        self._armed: Literal["drop", "hold"] | None = None

    def lose_next_write_reply(self, then: Literal["drop", "hold"]) -> None:
        self.reply_held.clear()
        self._armed = then

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            redis_r, redis_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()
            return
        # Whether the command last sent on this connection is a write (one at a time per
        # connection: the counter never pipelines).
        write_sent = [False]
        up = asyncio.create_task(self._pump(client_r, redis_w, write_sent))
        try:
            await self._replies(redis_r, client_w, write_sent)
        finally:
            up.cancel()
            client_w.close()
            redis_w.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, write_sent: list[bool]
    ) -> None:
        while data := await reader.read(65536):
            write_sent[0] = b"\r\nEVALSHA\r\n" in data[:32].upper()
            writer.write(data)
            await writer.drain()
        writer.close()

    async def _replies(
        self, redis_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, write_sent: list[bool]
    ) -> None:
        while data := await redis_r.read(65536):
            # Not an error (NOSCRIPT asks for the script to be loaded, and the write resent).
            if self._armed and write_sent[0] and not data.startswith(b"-"):
                then, self._armed = self._armed, None
                self.lost_replies += 1
                self.reply_held.set()
                if then == "hold":
                    # Until Redis goes away: then the held reply is gone with the connection.
                    while await redis_r.read(65536):
                        pass
                return
            client_w.write(data)
            await client_w.drain()
