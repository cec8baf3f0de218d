"""What the peer and HTTP blob servers share: a store served on a listening TCP socket."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

from prism.hostport import HostPort, bind_socket
from prism.stats import ServerStats
from prism.store.base import BlobStore

C = TypeVar("C", bound=asyncio.Protocol)


class TcpBlobServer(Generic[C]):
    """Serves `store` on `host`:`port` with connections of type C; subclasses add the protocol.

    A connection idle for `idle_timeout` seconds, or whose answer makes no progress for
    `send_timeout` seconds, is closed.
    """

    def __init__(
        self,
        store: BlobStore,
        host: str,
        port: int,
        *,
        protocol: str,
        idle_timeout: float,
        send_timeout: float,
    ) -> None:
        self.store = store
        self.host = host
        self.port = port
        """The port asked for (0: any), then the bound one once started."""
        self.idle_timeout = idle_timeout
        self.send_timeout = send_timeout
        self.stats = ServerStats(protocol)
        self.connections: set[C] = set()
        self._server: asyncio.Server | None = None

    async def _listen(self, connection: Callable[[], C]) -> None:
        """Bind and start accepting, each connection made by `connection()`."""
        loop = asyncio.get_running_loop()
        sock = bind_socket(self.host, self.port)
        try:
            self._server = await loop.create_server(connection, sock=sock, backlog=1024)
        except BaseException:
            sock.close()
            raise
        self.port = int(self._server.sockets[0].getsockname()[1])

    @property
    def address(self) -> HostPort:
        """Where it listens, bracketed for IPv6 in logs."""
        return HostPort(self.host, self.port)
