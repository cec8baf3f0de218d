"""Blob stores: one `BlobStore` protocol, leaf stores, and wrappers that compose them.

Names are imported on first use (module `__getattr__`), so importing one submodule, or the
package for one name, does not load the others."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prism.lazy import lazy_getattr

if TYPE_CHECKING:
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

_WHERE = {
    "BlobNotFound": "prism.store.base",
    "BlobRef": "prism.store.base",
    "BlobStore": "prism.store.base",
    "Blocklister": "prism.store.base",
    "Lister": "prism.store.base",
    "NeededBlobChecker": "prism.store.base",
    "ReadOnlyStore": "prism.store.base",
    "ReadOnlyStoreError": "prism.store.base",
    "StoreError": "prism.store.base",
    "StoreWrapper": "prism.store.base",
    "WrappingStore": "prism.store.base",
    "find_capability": "prism.store.base",
    "walk_chain": "prism.store.base",
    "DiskStore": "prism.store.disk",
    "MemoryStore": "prism.store.memory",
    "BlobTrace": "prism.store.trace",
    "Stack": "prism.store.trace",
}


__getattr__ = lazy_getattr(__name__, _WHERE, globals())


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
