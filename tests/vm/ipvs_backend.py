"""A backend pod's server for the VM end-to-end tests: TCP and UDP, one asyncio process.

    python tests/vm/ipvs_backend.py NAME PORT[:close]...

On every port, TCP: for each line received, answers "NAME PEER_ADDR PEER_PORT\\n";
closes after the client does (so TIME_WAIT stays on the client side). A port written
`PORT:close` sends its first answer with the FIN in the same segment instead: the
server closes first, so the backend holds TIME_WAIT for that 4-tuple
(tests/e2e/test_load_defaults.py). UDP:
answers each datagram with the same line. Prints "ready" once every socket listens.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Awaitable, Callable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _line(name: str, peer: tuple[str, int]) -> bytes:
    return f"{name} {peer[0]} {peer[1]}\n".encode()


async def main(name: str, ports: list[str]) -> None:
    loop = asyncio.get_running_loop()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            while await reader.readline():
                writer.write(_line(name, peer))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def close_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One answer with the FIN in its segment (corked until the shutdown), so the
        client reads the answer only after the server has closed; then the client's FIN."""
        peer = writer.get_extra_info("peername")
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        try:
            if await reader.readline():
                writer.write(_line(name, peer))
                writer.write_eof()
                await asyncio.wait_for(reader.read(), 30)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()

    class Udp(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.transport.sendto(_line(name, addr), addr)  # type: ignore[attr-defined]

    servers = []
    for spec in ports:
        port, _, mode = spec.partition(":")
        if mode not in ("", "close"):
            raise SystemExit(f"ipvs_backend: bad port {spec!r} (PORT or PORT:close)")
        handler: Handler = close_first if mode == "close" else handle
        servers.append(await asyncio.start_server(handler, "0.0.0.0", int(port), backlog=1024))
        await loop.create_datagram_endpoint(Udp, local_addr=("0.0.0.0", int(port)))
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
