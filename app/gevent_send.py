"""gevent's sendall, one plain send first.

gevent's socket.sendall asks the kernel for the socket's send buffer size (a getsockopt) on every
call, to size the chunks of a large write. Nearly every write of a gateway is small and goes out in
one send: a stream's chunk to the client, a Redis command, the upstream request. Under a stream
that getsockopt and the chunking around it were 13% of a gevent worker's CPU. This sendall tries
one send (the socket's own send, so TLS sockets stay TLS) and leaves what did not fit to gevent's.
"""

from __future__ import annotations

from typing import Any

_INSTALLED = "_relaygate_one_send_first"


def install() -> None:
    """Put the sendall below on gevent's socket class (and so on its TLS sockets). Idempotent."""
    import gevent.socket

    cls = gevent.socket.socket
    if getattr(cls.sendall, _INSTALLED, False):
        return
    original = cls.sendall

    def sendall(self: Any, data: Any, flags: int = 0) -> None:
        if data.__class__ is bytes and data:
            sent = self.send(data, flags)
            if sent == len(data):
                return None
            data = memoryview(data)[sent:]
        return original(self, data, flags)

    setattr(sendall, _INSTALLED, True)
    cls.sendall = sendall
