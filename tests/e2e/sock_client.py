"""A node process for tests/e2e/test_bpf_mode_sock.py: socket calls, results as JSON.

    python tests/e2e/sock_client.py '[["tcp", "198.18.128.10", 80], ...]'

Runs in the node's namespace and, started by the test, in the test's own cgroup
(where bpfgen's cgroup programs are attached). Every operation has a timeout;
one line of JSON out: a result per operation, an errno name where it failed.

    tcp ADDR PORT   connect, getpeername, one line, the backend's answer
    udp ADDR PORT   unconnected: sendto, recvfrom (the reply's source)
    udpc ADDR PORT  connected: connect, getpeername, send, recvfrom
"""

from __future__ import annotations

import errno
import json
import socket
import sys
from typing import Any

TIMEOUT = 5.0


def _answer(line: bytes) -> dict[str, Any]:
    name, peer, port = line.decode().split()
    return {"backend": name, "peer": peer, "peer_port": int(port)}


def tcp(addr: str, port: int) -> dict[str, Any]:
    with socket.create_connection((addr, port), timeout=TIMEOUT) as s:
        peername = s.getpeername()
        s.sendall(b"hello\n")
        out = _answer(s.makefile("rb").readline())
        s.shutdown(socket.SHUT_WR)
        s.recv(1)
    return out | {"getpeername": list(peername)}


def udp(addr: str, port: int) -> dict[str, Any]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(TIMEOUT)
        s.sendto(b"q", (addr, port))
        data, src = s.recvfrom(512)
    return _answer(data) | {"source": list(src)}


def udpc(addr: str, port: int) -> dict[str, Any]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(TIMEOUT)
        s.connect((addr, port))
        peername = s.getpeername()
        s.send(b"q")
        data, src = s.recvfrom(512)
    return _answer(data) | {"source": list(src), "getpeername": list(peername)}


OPS = {"tcp": tcp, "udp": udp, "udpc": udpc}


def main(ops: list[list[Any]]) -> list[dict[str, Any]]:
    out = []
    for op, addr, port in ops:
        try:
            out.append(OPS[op](addr, int(port)))
        except OSError as exc:
            code = exc.errno
            out.append({"error": errno.errorcode.get(code, str(exc)) if code else repr(exc)})
    return out


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))), flush=True)
