"""Blob stores: one `BlobStore` protocol, leaf stores, and wrappers that compose them."""

from prism.store.base import (
    BlobNotFound,
    BlobRef,
    BlobStore,
    Blocklister,
    Lister,
    NeededBlobChecker,
    ReadOnlyStore,
    ReadOnlyStoreError,
    StoreError,
    WrappingStore,
    find_capability,
)
from prism.store.disk import DiskStore
from prism.store.memory import MemoryStore
from prism.store.trace import BlobTrace, Stack

__all__ = [
    "BlobNotFound",
    "BlobRef",
    "BlobStore",
    "BlobTrace",
    "Blocklister",
    "DiskStore",
    "Lister",
    "MemoryStore",
    "NeededBlobChecker",
    "ReadOnlyStore",
    "ReadOnlyStoreError",
    "Stack",
    "StoreError",
    "WrappingStore",
    "find_capability",
]
