"""Reflector protocol (TCP blob upload, port 5566): sans-IO codec, receiver and client."""

from prism.reflector.client import BlobRefusedError, ReflectorClient, ReflectorError, UploadResult
from prism.reflector.protocol import ReflectorProtocolError
from prism.reflector.receiver import DEFAULT_PORT, ReflectorReceiver

__all__ = [
    "DEFAULT_PORT",
    "BlobRefusedError",
    "ReflectorClient",
    "ReflectorError",
    "ReflectorProtocolError",
    "ReflectorReceiver",
    "UploadResult",
]
