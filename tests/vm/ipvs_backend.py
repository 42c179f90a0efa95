"""A backend pod's server for the VM end-to-end tests: TCP and UDP, one asyncio process.

    python tests/vm/ipvs_backend.py NAME PORT...

On every port, TCP: for each line received, answers "NAME PEER_ADDR PEER_PORT\\n";
closes after the client does (so TIME_WAIT stays on the client side). UDP: answers
each datagram with the same line. Prints "ready" once every socket listens.
"""

from __future__ import annotations

import asyncio
import sys


def _line(name: str, peer: tuple[str, int]) -> bytes:
    return f"{name} {peer[0]} {peer[1]}\n".encode()


async def main(name: str, ports: list[int]) -> None:
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

    class Udp(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.transport.sendto(_line(name, addr), addr)  # type: ignore[attr-defined]

    servers = [await asyncio.start_server(handle, "0.0.0.0", p, backlog=1024) for p in ports]
    for p in ports:
        await loop.create_datagram_endpoint(Udp, local_addr=("0.0.0.0", p))
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], [int(p) for p in sys.argv[2:]]))
