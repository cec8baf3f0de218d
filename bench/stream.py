"""Stream encode/decode throughput against the limit: bare AES-128-CBC plus SHA-384 over the same bytes.

Usage: python bench/stream.py [--mb 200] [--repeat 5]
Prints MB/s for the limit and for prism's encoder and decoder, then the ratios on the last lines.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import sys
import tempfile
import time

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prism.blob import MAX_BLOB_SIZE, MAX_CHUNK_SIZE
from prism.stream import SdBlob, StreamDecoder, StreamEncoder


def best_alternating(fns: list, repeat: int) -> list[float]:
    """Best time of each function over `repeat` rounds that run them in turn.

    Alternating keeps drift (page-cache writeback of earlier rounds, other load) from landing on
    one side only: the decode rounds write 200 MB each, and the writeback they leave behind slows
    whichever rounds come next.
    """
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t)
    return [min(ts) for ts in times]


def limit_encrypt(path: str) -> None:
    """Read, AES-CBC encrypt and SHA-384 each chunk: the work no encoder can avoid."""
    key, iv = os.urandom(16), os.urandom(16)
    buf, out = bytearray(MAX_BLOB_SIZE + 16), bytearray(MAX_BLOB_SIZE + 16)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(memoryview(buf)[:MAX_CHUNK_SIZE]):
            total = (n // 16 + 1) * 16
            enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
            w = enc.update_into(memoryview(buf)[:total], out)
            enc.finalize()
            hashlib.sha384(memoryview(out)[:w]).digest()


def limit_decrypt(blob_paths: list[str], key: bytes, ivs: list[bytes], out_path: str) -> None:
    """Read each blob, SHA-384 it, AES-CBC decrypt it and write the plaintext."""
    buf, out = bytearray(MAX_BLOB_SIZE + 16), bytearray(MAX_BLOB_SIZE + 16)
    with open(out_path, "wb") as dst:
        for p, iv in zip(blob_paths, ivs, strict=True):
            with open(p, "rb", buffering=0) as f:
                n = f.readinto(buf)
            hashlib.sha384(memoryview(buf)[:n]).digest()
            dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
            w = dec.update_into(memoryview(buf)[:n], out)
            dec.finalize()
            dst.write(memoryview(out)[: w - out[w - 1]])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    size = args.mb * 1_000_000
    with tempfile.TemporaryDirectory(prefix="prism-bench-stream-") as tmp:
        src = os.path.join(tmp, "source.bin")
        with open(src, "wb") as f:
            block = os.urandom(1 << 20)
            for i in range(0, size, len(block)):
                f.write(block[: min(len(block), size - i)])
        # Encode once for real so the decode runs read actual blob files.
        blob_dir = os.path.join(tmp, "blobs")
        os.mkdir(blob_dir)
        enc = StreamEncoder("source.bin")
        with open(src, "rb", buffering=0) as f:
            for b in enc.encode(f):
                with open(os.path.join(blob_dir, b.hash), "wb") as out:
                    out.write(b.data)
        sd = SdBlob.parse(enc.sd_bytes)
        paths = [os.path.join(blob_dir, i.blob_hash) for i in sd.content_blobs]
        ivs = [i.iv_bytes for i in sd.content_blobs]
        out_path = os.path.join(tmp, "decoded.bin")

        def prism_encode() -> None:
            e = StreamEncoder("source.bin")
            with open(src, "rb", buffering=0) as f:
                for _ in e.encode(f):
                    pass
            _ = e.sd_hash, e.source_hash

        def prism_decode() -> None:
            dec = StreamDecoder(sd)
            # Two blobs are in flight in `decode`: each read goes to the buffer not in use.
            bufs = (bytearray(MAX_BLOB_SIZE), bytearray(MAX_BLOB_SIZE))
            turn = itertools.count()

            def read(info):
                buf = bufs[next(turn) % 2]
                with open(os.path.join(blob_dir, info.blob_hash), "rb", buffering=0) as f:
                    n = f.readinto(buf)
                return memoryview(buf)[:n]

            with open(out_path, "wb") as out:
                dec.decode(read, out)

        mb = size / 1e6
        t_lim_e, t_enc = best_alternating([lambda: limit_encrypt(src), prism_encode], args.repeat)
        t_lim_d, t_dec = best_alternating(
            [lambda: limit_decrypt(paths, sd.key_bytes, ivs, out_path), prism_decode], args.repeat
        )
        print(f"file: {args.mb} MB, best of {args.repeat} alternating rounds")
        print(f"{'':28}{'MB/s':>10}")
        print(f"{'limit: AES-CBC+sha384 (enc)':28}{mb / t_lim_e:>10.1f}")
        print(f"{'prism encode (+source hash)':28}{mb / t_enc:>10.1f}")
        print(f"{'limit: sha384+AES-CBC (dec)':28}{mb / t_lim_d:>10.1f}")
        print(f"{'prism decode (verified)':28}{mb / t_dec:>10.1f}")
        print(f"stream_encode_ratio={t_lim_e / t_enc:.3f}")
        print(f"stream_decode_ratio={t_lim_d / t_dec:.3f}")


if __name__ == "__main__":
    main()
