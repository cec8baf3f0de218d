"""An S3 bucket as a blob store (reflector.md §3.3 `S3Store`; origin-cluster.md §1).

Any S3-compatible server works (AWS S3, Wasabi, SeaweedFS, MinIO, Ceph RGW). The object key
is the hash, or `hash[:n]/hash` with `s3_sharding = n` (reflector.go Modern). Unlike
reflector.go, every call has timeouts and a bounded number of retries (`S3RetryPolicy`), every
GET is checked against its SHA-384 before anyone sees it, and `check()` turns a missing bucket,
a refused key or an unreachable endpoint into one sentence at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiobotocore.session import get_session
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from prism.blob import MAX_BLOB_SIZE, validate_hash
from prism.store.base import BlobNotFound, BlobRef, StoreError, Timer
from prism.store.stats import StoreSnapshot
from prism.store.trace import BlobTrace
from prism.store.upstream import read_body, verify_received

log = logging.getLogger("prism.store")

DEFAULT_ACL = "public-read"


class S3ConfigError(ValueError):
    """An S3 config value is malformed; the message names the key."""


class S3Unavailable(StoreError):
    """The bucket cannot be used: missing, credentials refused, or the endpoint unreachable."""


@dataclass(frozen=True, slots=True)
class S3Settings:
    """Where the bucket is and how to talk to it (config keys of reflector.md §1.2 plus prism's)."""

    access_key: str
    secret_key: str
    bucket: str
    region: str = ""
    endpoint: str = ""
    """Empty: AWS."""
    path_style: bool = False
    sharding: int = 0
    """Key prefix length: `hash[:n]/hash`; 0 is reflector.go Classic's plain hash."""
    acl: str = DEFAULT_ACL
    """Canned ACL of every PUT; empty for none."""
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    pool_size: int = 64

    @classmethod
    def from_config(cls, config: Any) -> S3Settings:
        """From a `prism.config.Config` (or anything with its S3 attributes)."""
        if not config.bucket_name:
            raise S3ConfigError("bucket_name is missing from the config")
        style = config.s3_path_style.strip().lower()
        if style not in ("", "true", "false", "1", "0"):
            raise S3ConfigError(f"s3_path_style must be true or false, got {config.s3_path_style!r}")
        path_style = bool(config.s3_endpoint) if style == "" else style in ("true", "1")
        sharding_text = config.s3_sharding.strip() or "0"
        if not sharding_text.isdigit() or int(sharding_text) > 96:
            raise S3ConfigError(f"s3_sharding must be a number 0..96, got {config.s3_sharding!r}")
        endpoint = config.s3_endpoint
        if endpoint and not endpoint.startswith(("http://", "https://")):
            raise S3ConfigError(f"s3_endpoint must be an http:// or https:// URL, got {endpoint!r}")
        acl = config.s3_acl.strip()
        return cls(
            access_key=config.aws_id,
            secret_key=config.aws_secret,
            bucket=config.bucket_name,
            region=config.bucket_region,
            endpoint=endpoint,
            path_style=path_style,
            sharding=int(sharding_text),
            acl="" if acl == "none" else acl,
        )

    def key(self, blob_hash: str) -> str:
        return f"{blob_hash[: self.sharding]}/{blob_hash}" if self.sharding else blob_hash

    @property
    def where(self) -> str:
        return f"bucket {self.bucket!r} at {self.endpoint or 'AWS S3'}"


# -- sans-IO policy ------------------------------------------------------------------------------

_TRANSIENT_CODES = frozenset(
    {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "RequestTimeTooSkewed"}
)
_REFUSED_CODES = frozenset(
    {"AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "ExpiredToken"}
)


def is_transient(code: str, status: int) -> bool:
    """Whether an S3 error answer is worth another attempt (throttling, 5xx)."""
    return status >= 500 or status == 429 or code in _TRANSIENT_CODES


@dataclass(frozen=True, slots=True)
class S3RetryPolicy:
    """Bounded retries with exponential backoff: `delay(n)` before attempt n+1, or None to give up.

    The default budget (about 11 s of pauses) outlasts a restart of an S3 server.
    """

    attempts: int = 10
    first_delay: float = 0.1
    max_delay: float = 2.0

    def delay(self, failed_attempts: int) -> float | None:
        if failed_attempts >= self.attempts:
            return None
        return float(min(self.first_delay * 2 ** (failed_attempts - 1), self.max_delay))


class _Transient(Exception):
    """One attempt failed in a way another attempt may not."""


# -- the store ----------------------------------------------------------------------------------


class S3Store:
    """HEAD for `has` (404: absent), GET (verified) for `get`, PUT with the canned ACL, DELETE.

    One aiobotocore client (one connection pool) per store, made on first use.
    """

    def __init__(self, settings: S3Settings, name: str = "s3", retry: S3RetryPolicy | None = None) -> None:
        self.settings = settings
        self.name = name
        self.retry = retry or S3RetryPolicy()
        self.bytes_in = 0
        """Bytes of blobs fetched (reflector_s3_in_bytes)."""
        self.bytes_out = 0
        """Bytes of blobs sent, counted even when the PUT fails, as reflector.go (reflector_s3_out_bytes)."""
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._lock = asyncio.Lock()

    def snapshot(self) -> StoreSnapshot:
        return StoreSnapshot(self.name, bytes_in=self.bytes_in, bytes_out=self.bytes_out)

    async def client(self) -> Any:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    self._client = await self._stack.enter_async_context(self._make_client())
        return self._client

    def _make_client(self) -> Any:
        s = self.settings
        config = BotoConfig(
            connect_timeout=s.connect_timeout,
            read_timeout=s.read_timeout,
            retries={"total_max_attempts": 1},  # S3RetryPolicy retries whole operations
            max_pool_connections=s.pool_size,
            s3={"addressing_style": "path" if s.path_style else "auto"},
            # Every GET is checked against its SHA-384; a second checksum only costs CPU.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        return get_session().create_client(
            "s3",
            region_name=s.region or "us-east-1",
            endpoint_url=s.endpoint or None,
            aws_access_key_id=s.access_key,
            aws_secret_access_key=s.secret_key,
            config=config,
        )

    async def check(self) -> None:
        """Raise S3Unavailable with one sentence unless the bucket answers with these credentials."""
        s = self.settings
        try:
            await self._attempt("check", lambda c: c.head_bucket(Bucket=s.bucket), "")
        except _Transient as e:
            raise S3Unavailable(f"cannot reach S3 at {s.endpoint or 'AWS'}: {e}") from None
        except S3Unavailable:
            raise
        except StoreError as e:
            raise S3Unavailable(f"S3 {s.where} cannot be used: {e}") from None

    async def has(self, blob_hash: str) -> bool:
        validate_hash(blob_hash)
        key = self.settings.key(blob_hash)
        try:
            await self._call("HEAD", lambda c: c.head_object(Bucket=self.settings.bucket, Key=key))
        except BlobNotFound:
            return False
        return True

    async def get(self, blob_hash: str) -> BlobRef:
        validate_hash(blob_hash)
        timer = Timer()
        key = self.settings.key(blob_hash)

        async def fetch(c: Any) -> bytes:
            r = await c.get_object(Bucket=self.settings.bucket, Key=key)
            async with r["Body"] as body:
                length = r.get("ContentLength")
                size = None if length is None else int(length)
                # aiobotocore 3 exposes the aiohttp response as `raw_stream`; 2.x bodies proxy it.
                content = getattr(body, "raw_stream", body).content
                return await read_body(content, size, MAX_BLOB_SIZE, f"S3 object {key}")

        data = await self._call("GET", fetch, blob_hash=blob_hash)
        await verify_received(blob_hash, data, f"S3 {self.settings.where}")
        self.bytes_in += len(data)
        return BlobRef.from_bytes(blob_hash, data, BlobTrace.new(timer.elapsed(), self.name))

    async def put(self, blob_hash: str, data: bytes) -> None:
        validate_hash(blob_hash)
        s = self.settings
        extra = {"ACL": s.acl} if s.acl else {}
        body = bytes(data)
        self.bytes_out += len(body)
        await self._call(
            "PUT", lambda c: c.put_object(Bucket=s.bucket, Key=s.key(blob_hash), Body=body, **extra)
        )

    async def put_sd(self, blob_hash: str, data: bytes) -> None:
        await self.put(blob_hash, data)

    async def delete(self, blob_hash: str) -> None:
        validate_hash(blob_hash)
        s = self.settings
        await self._call("DELETE", lambda c: c.delete_object(Bucket=s.bucket, Key=s.key(blob_hash)))

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None

    # -- one operation, retried ---------------------------------------------------------------

    async def _call(self, op: str, action: Any, *, blob_hash: str = "") -> Any:
        """Run `action(client)` with the retry policy; S3 errors become store errors."""
        failed = 0
        while True:
            try:
                return await self._attempt(op, action, blob_hash)
            except _Transient as e:
                failed += 1
                pause = self.retry.delay(failed)
                if pause is None:
                    raise StoreError(f"S3 {op} failed after {failed} attempts: {e}") from None
                log.debug("S3 %s attempt %d failed (%s); retrying in %.1fs", op, failed, e, pause)
                await asyncio.sleep(pause)

    async def _attempt(self, op: str, action: Any, blob_hash: str) -> Any:
        s = self.settings
        client = await self.client()
        try:
            async with asyncio.timeout(s.connect_timeout + s.read_timeout):
                return await action(client)
        except ClientError as e:
            raise self._client_error(op, e, blob_hash) from None
        except (BotoCoreError, aiohttp.ClientError, TimeoutError, OSError) as e:
            raise _Transient(_describe(e)) from None

    def _client_error(self, op: str, e: ClientError, blob_hash: str) -> Exception:
        s = self.settings
        err = e.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        if code == "NoSuchBucket" or (op == "check" and status == 404):
            return S3Unavailable(f"S3 bucket {s.bucket} does not exist at {s.endpoint or 'AWS S3'}")
        if code in ("NoSuchKey", "NotFound") or status == 404:
            return BlobNotFound(blob_hash)
        if code in _REFUSED_CODES or status == 403:
            return S3Unavailable(
                f"S3 {s.where} refused access ({code or status}): check aws_id and aws_secret"
            )
        if is_transient(code, status):
            return _Transient(f"{code or status}: {err.get('Message', '')}")
        return StoreError(f"S3 {op} failed: {code or status} {err.get('Message', '')}".strip())


def _describe(e: BaseException) -> str:
    return str(e) or type(e).__name__
