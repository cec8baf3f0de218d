"""Reflector protocol (TCP blob upload, port 5566): sans-IO codec, receiver and client.

Names are imported on first use (module `__getattr__`), so importing one submodule, or the
package for one name, does not load the others."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prism.lazy import lazy_getattr

if TYPE_CHECKING:
    from prism.reflector.client import BlobRefusedError, ReflectorClient, ReflectorError, UploadResult
    from prism.reflector.protocol import ReflectorProtocolError
    from prism.reflector.receiver import DEFAULT_PORT, ReflectorReceiver

_WHERE = {
    "BlobRefusedError": "prism.reflector.client",
    "ReflectorClient": "prism.reflector.client",
    "ReflectorError": "prism.reflector.client",
    "UploadResult": "prism.reflector.client",
    "ReflectorProtocolError": "prism.reflector.protocol",
    "DEFAULT_PORT": "prism.reflector.receiver",
    "ReflectorReceiver": "prism.reflector.receiver",
}


__getattr__ = lazy_getattr(__name__, _WHERE, globals())


__all__ = [
    "DEFAULT_PORT",
    "BlobRefusedError",
    "ReflectorClient",
    "ReflectorError",
    "ReflectorProtocolError",
    "ReflectorReceiver",
    "UploadResult",
]
