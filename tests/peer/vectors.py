"""Wire bytes of lbry-wire.md §6.1 / §6.4 and reflector.md §4.2 (the one-blob `hello.txt` stream)."""

SD_HASH = "ee87f57509159a2a8b52ef539e0d96da41f1f740cf18ea88b43a8ba5cc4d989b05babfdf960fee390dafcd5d5e08daac"
BLOB0_HASH = (
    "96f9722a1d2ccf0430419ef33da0ba6bff03ec8623b6e0ce602030810d8b85476110072eb64180bfd90ea09c80049524"
)
BLOB0 = bytes.fromhex("235c2aa210dec94688a29859b71049d7")
PLAINTEXT = b"Hello, LBRY!\n"

# §6.1: the sd blob, 536 bytes, one line.
SD_BYTES = (
    b'{"blobs": [{"blob_hash": "'
    + BLOB0_HASH.encode()
    + b'", "blob_num": 0, "iv": "101112131415161718191a1b1c1d1e1f",'
    b' "length": 16}, {"blob_num": 1, "iv": "202122232425262728292a2b2c2d2e2f", "length": 0}], "key": '
    b'"000102030405060708090a0b0c0d0e0f", "stream_hash": "061e2279be99dcd1abe197714661d74e270ca907a2d24a31f5ce1104ad'
    b'233b22cfa9cbded98f9def24dec3a3a6be1d42", "stream_name": "68656c6c6f2e747874", "stream_type": "lbryfile", '
    b'"suggested_file_name": "68656c6c6f2e747874"}'
)


def sdk_request(blob_hash: str) -> bytes:
    """§3.1/§6.4: lbry-sdk's client request (295 bytes for one hash)."""
    return (
        b'{"requested_blobs": ["' + blob_hash.encode() + b'"], "lbrycrd_address": true, '
        b'"blob_data_payment_rate": 0.0, "requested_blob": "' + blob_hash.encode() + b'"}'
    )


SDK_ADDRESS = "bQEaw42GXsgCAGio1nxFncJSyRmnztSCjP"
GO_ADDRESS = "bJxKvpD96kaJLriqVajZ7SaQTsWWyrGQct"


def sdk_found_header(blob_hash: str, length: int) -> bytes:
    """§3.2/§6.4: lbry-sdk's server header (368 bytes for the sd blob)."""
    return (
        b'{"incoming_blob": {"blob_hash": "'
        + blob_hash.encode()
        + b'", "length": '
        + str(length).encode()
        + b"}, "
        b'"blob_data_payment_rate": "RATE_ACCEPTED", "available_blobs": ["' + blob_hash.encode() + b'"], '
        b'"lbrycrd_address": "' + SDK_ADDRESS.encode() + b'"}'
    )


def sdk_missing_header() -> bytes:
    """§3.2: lbry-sdk's server answer for a blob it lacks (no incoming_blob, no bytes)."""
    return (
        b'{"blob_data_payment_rate": "RATE_ACCEPTED", "available_blobs": [], "lbrycrd_address": "'
        + SDK_ADDRESS.encode()
        + b'"}'
    )


def go_found_header(blob_hash: str, length: int) -> bytes:
    """reflector.md §4.2 / lbry-wire.md §6.4: reflector.go's header (358 bytes for the sd blob)."""
    return (
        b'{"lbrycrd_address":"'
        + GO_ADDRESS.encode()
        + b'","available_blobs":["'
        + blob_hash.encode()
        + b'"],'
        b'"blob_data_payment_rate":"RATE_ACCEPTED","incoming_blob":{"blob_hash":"'
        + blob_hash.encode()
        + b'",'
        b'"length":' + str(length).encode() + b"}}"
    )


def go_missing_header() -> bytes:
    """reflector.md §4.2: reflector.go's answer to the four-key request for a blob it lacks."""
    return (
        b'{"lbrycrd_address":"' + GO_ADDRESS.encode() + b'","available_blobs":[],'
        b'"blob_data_payment_rate":"RATE_ACCEPTED",'
        b'"incoming_blob":{"error":"blob not found","blob_hash":"","length":0}}'
    )
