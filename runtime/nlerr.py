"""pyroute2's failures as RuntimeOpError: `with netlink("add dummy device x"): ...`.

pyroute2 raises NetlinkError (not an OSError) carrying the kernel's errno in `.code`.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

from pyroute2.netlink.exceptions import NetlinkError

from .errors import RuntimeOpError


@contextmanager
def netlink(op: str) -> Iterator[None]:
    try:
        yield
    except NetlinkError as exc:
        raise RuntimeOpError(op, int(exc.code or errno.EIO)) from exc
    except OSError as exc:
        raise RuntimeOpError(op, exc.errno or errno.EIO) from exc
