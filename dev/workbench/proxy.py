"""A TCP proxy on 127.0.0.1 that can make a Kafka broker slow or unreachable.

The chaos soak puts one in front of the target broker: the broker advertises the proxy's
port (the sandbox's `proxied` listener), so clients that learn the cluster's metadata keep
going through it. The proxy passes bytes through, or

- delays them: every chunk is held for a while in each direction (latency, not a
  bandwidth limit: chunks keep flowing, each one late);
- stalls: it stops reading and forwarding, but keeps every connection open, as a hung
  broker or a black-holed network does (clients wait for their request timeouts);
- cuts: it closes every connection and refuses new ones until it is healed.

It runs an asyncio loop in a thread of its own; its methods may be called from any thread.
"""

from __future__ import annotations

import asyncio
import threading
import time

from cluster.loopback import LOOPBACK

CHUNK = 64 * 1024


class Proxy:
    """Listens on 127.0.0.1:`port` and forwards every connection to 127.0.0.1:`upstream`."""

    def __init__(self, port: int, upstream: int):
        self.port, self.upstream = port, upstream
        self.mode = "pass"
        self._latency = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"proxy-{port}",
                                        daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._flowing: asyncio.Event | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    def start(self) -> None:
        self._thread.start()
        self._call(self._start())

    def stop(self) -> None:
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def delay(self, seconds: float) -> None:
        """Hold every chunk `seconds` before passing it on, in both directions."""
        self._call(self._set("delay", seconds))

    def stall(self) -> None:
        """Stop moving bytes; connections stay open."""
        self._call(self._set("stall", 0.0))

    def cut(self) -> None:
        """Close every connection and refuse new ones."""
        self._call(self._set("cut", 0.0))

    def heal(self) -> None:
        """Pass bytes through again, without delay; listen again after a cut."""
        self._call(self._set("pass", 0.0))

    def connections(self) -> int:
        return len(self._connections) // 2  # each connection has a client and a broker side

    # -- in the loop's thread --------------------------------------------------------

    def _call(self, coroutine) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        await self._listen()

    async def _listen(self) -> None:
        # reuse_address (asyncio's default here) lets it listen again right after a cut.
        self._server = await asyncio.start_server(self._serve, LOOPBACK, self.port)

    async def _set(self, mode: str, latency: float) -> None:
        previous, self.mode, self._latency = self.mode, mode, latency
        if mode == "stall":
            self._flowing.clear()
        else:
            self._flowing.set()
        if mode == "cut":
            await self._close()
        elif previous == "cut":
            await self._listen()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._connections):
            writer.transport.abort()  # a reset, as when a broker's host goes away
        self._connections.clear()

    async def _shutdown(self) -> None:
        await self._close()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self, client_reader: asyncio.StreamReader,
                     client_writer: asyncio.StreamWriter) -> None:
        try:
            broker_reader, broker_writer = await asyncio.open_connection(LOOPBACK, self.upstream)
        except OSError:  # the broker is down: the client sees its connection closed
            client_writer.transport.abort()
            return
        ends = (client_writer, broker_writer)
        if self.mode == "cut":  # cut while this connection was being set up
            for writer in ends:
                writer.transport.abort()
            return
        self._connections.update(ends)
        try:
            await asyncio.gather(self._pump(client_reader, broker_writer),
                                 self._pump(broker_reader, client_writer))
        finally:
            for writer in ends:
                self._connections.discard(writer)
                writer.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction of a connection; a queue keeps the delay from throttling it."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            data = b"x"
            while data:
                await self._flowing.wait()
                try:
                    data = await reader.read(CHUNK)
                except (ConnectionError, OSError):
                    data = b""  # the end of the connection, passed on like an EOF
                await queue.put((time.monotonic() + self._latency, data))

        async def write() -> None:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                await self._flowing.wait()
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        reading = asyncio.ensure_future(read())
        try:
            await write()
        except (ConnectionError, OSError):
            pass
        finally:
            reading.cancel()
