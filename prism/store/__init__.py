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
    StoreWrapper,
    WrappingStore,
    find_capability,
    walk_chain,
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
    "StoreWrapper",
    "WrappingStore",
    "find_capability",
    "walk_chain",
]
