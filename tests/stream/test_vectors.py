"""Test vectors of lbry-wire.md §6.1–§6.2 and reflector.md §2.2–§2.4, reproduced exactly."""

import hashlib
import io

import pytest

from prism.blob import sha384_hex
from prism.stream import BlobCipher, BlobInfo, Layout, SdBlob, StreamDecoder, StreamEncoder, encode_bytes
from prism.stream.sd import compute_stream_hash

KEY = bytes(range(16))

HELLO_SD = (
    b'{"blobs": [{"blob_hash": "96f9722a1d2ccf0430419ef33da0ba6bff03ec8623b6e0ce602030810d8b85476110072eb64180bfd90ea09c8'
    b'0049524", "blob_num": 0, "iv": "101112131415161718191a1b1c1d1e1f", "length": 16}, {"blob_num": 1, "iv": "20212223'
    b'2425262728292a2b2c2d2e2f", "length": 0}], "key": "000102030405060708090a0b0c0d0e0f", "stream_hash": "061e2279be99d'
    b'cd1abe197714661d74e270ca907a2d24a31f5ce1104ad233b22cfa9cbded98f9def24dec3a3a6be1d42", "stream_name": "68656c6c6f2'
    b'e747874", "stream_type": "lbryfile", "suggested_file_name": "68656c6c6f2e747874"}'
)
HELLO_SD_HASH = (
    "ee87f57509159a2a8b52ef539e0d96da41f1f740cf18ea88b43a8ba5cc4d989b05babfdf960fee390dafcd5d5e08daac"
)
HELLO_LEGACY_SD_HASH = (
    "9a47fe5b85a2f8522f3cc85c0a3dc6184e9a249ff3dee06c0f2d2657cf25ea421815236fb2ac9102ef6fcb224d5e59f0"
)


def hello_encoder(layout: Layout = Layout.SORTED) -> tuple[list[tuple[str, bytes]], StreamEncoder]:
    return encode_bytes(
        b"Hello, LBRY!\n",
        "hello.txt",
        key=KEY,
        ivs=[bytes(range(16, 32)), bytes(range(32, 48))],
        layout=layout,
    )


def test_one_blob_stream_sorted_layout() -> None:
    blobs, enc = hello_encoder()
    assert blobs == [
        (
            "96f9722a1d2ccf0430419ef33da0ba6bff03ec8623b6e0ce602030810d8b85476110072eb64180bfd90ea09c80049524",
            bytes.fromhex("235c2aa210dec94688a29859b71049d7"),
        )
    ]
    assert enc.sd_blob.stream_hash == (
        "061e2279be99dcd1abe197714661d74e270ca907a2d24a31f5ce1104ad233b22cfa9cbded98f9def24dec3a3a6be1d42"
    )
    assert enc.sd_bytes == HELLO_SD and len(HELLO_SD) == 536
    assert enc.sd_hash == HELLO_SD_HASH
    assert enc.source_hash == hashlib.sha384(b"Hello, LBRY!\n").hexdigest()


def test_one_blob_stream_legacy_layout() -> None:
    _, enc = hello_encoder(Layout.LEGACY)
    assert enc.sd_hash == HELLO_LEGACY_SD_HASH
    assert enc.sd_bytes.startswith(
        b'{"stream_name": "68656c6c6f2e747874", "blobs": [{"length": 16, "blob_num": 0, '
    )
    assert SdBlob.parse(enc.sd_bytes) == SdBlob.parse(HELLO_SD)


def boundary_ivs() -> list[bytes]:
    return [(i + 1).to_bytes(16, "big") for i in range(8)]


BOUNDARY_CASES = [
    (
        "pattern.bin",
        bytes(j % 256 for j in range(4_194_402)),
        [2097152, 2097152, 112],
        [
            "336bcddade926bd64ff21a1fbd14ebd27508b5d107252e062e2204e9d6930edf8e201f3dfc9a11664df11028afc0aa49",
            "a494e9103da07abd6d59e30ac558ea13adff60f4746ec5070ace6bfdaf10c3870a5b4d03d4b9d721f6056f7e7f96f72d",
            "015229e904f8761b970e28f4f2220492db85b27736b9d6e146586a27b6933509b7912353be534f086efb26367adb5da5",
        ],
        927,
        "6a23cd4050681ac482cb1a7a1f1c8a2f4da073445e0294751fca6305772658174c1cfbd7799f5697b9ea896ad13805f2",
        "b6d2f61083914f8c41dcb117d7e959622489c46fd78443edcbe0b7a72830edcf38af9d2693f32f4947d00c55268709f5",
        "6feb25570f6f0d0853d6bb553219e56d82c0403ce0366d26c9dadce95b5b126c51f625bdaaa402a5cb6ef4ea3c7ec970",
    ),
    (
        "exact.bin",
        bytes(j % 251 for j in range(2_097_151)),
        [2097152],
        ["2502232e0772216ffdd9e7fdafb3c3b3f9866d27095ea4b3698e1b32cce1989f969e01dfa33ea357eb3a7aaab406ef4a"],
        541,
        "6c5cda5a56d503efe03034726269a7b76fe716745b2d2a7ef25312ba4441a8d61a40a826fb43bac390a57d834670e682",
        "f3f11fd699a56ee54318e3d948ef00b07d22e5779c90485e16ea53df192920b3dd64fc2ed1e8dab03a21422aa1a91623",
        "f471d28ae9ca627295cf4d57d0c36be7a8ee746cdbaff61d948dd64aa6d8845b02f53ac495b50120545a131c0338a4d5",
    ),
    (
        "empty.bin",
        b"",
        [],
        [],
        350,
        "6d31a99aac32ebdcff245851ccf479d6cb8c8dce11b020eba098f171b2ec70e9046af80a58a33f8910b5fc66b1241acd",
        "d4b56e3f1e46f6a5402a94ffb5e52c93b98651e9e632422b2fedd91e10f148c0ac6d81935e2da998a3f0849258021a87",
        "c0e9d06a2f624cf514100a9f3723498d53e08ac2143971acb884c2f49252bd60a1548f8abf63923b638c42a6d77e380c",
    ),
]


@pytest.mark.parametrize(
    ("name", "data", "lengths", "hashes", "sd_len", "sd_hash", "legacy_sd_hash", "stream_hash"),
    BOUNDARY_CASES,
    ids=[c[0] for c in BOUNDARY_CASES],
)
def test_blob_boundaries(name, data, lengths, hashes, sd_len, sd_hash, legacy_sd_hash, stream_hash) -> None:
    for layout, want_sd_hash in ((Layout.SORTED, sd_hash), (Layout.LEGACY, legacy_sd_hash)):
        blobs, enc = encode_bytes(data, name, key=KEY, ivs=boundary_ivs(), layout=layout)
        assert [len(b) for _, b in blobs] == lengths
        assert [h for h, _ in blobs] == hashes
        assert [sha384_hex(b) for _, b in blobs] == hashes
        assert len(enc.sd_bytes) == sd_len
        assert enc.sd_hash == want_sd_hash
        assert enc.sd_blob.stream_hash == stream_hash
        sd = SdBlob.parse(enc.sd_bytes)
        assert sd.stream_hash == stream_hash and sd.file_name == name
        out = io.BytesIO()
        by_hash = dict(blobs)
        StreamDecoder(sd).decode(lambda info, blobs_by_hash=by_hash: blobs_by_hash[info.blob_hash], out)
        assert out.getvalue() == data


def test_reflector_go_vectors() -> None:
    # reflector.md §2.2: a single AES-CBC vector.
    cipher = BlobCipher(bytes.fromhex("efad181bb91c18e93a57178559a42f21"))
    buf = bytearray(b"abcdefg" + bytes(16))
    ct = cipher.encrypt_padded(bytes.fromhex("032cb97fa5292b3109a67239f7c626aa"), buf, 7)
    assert bytes(ct).hex() == "33adfa34104bf90f0cc1d033104c0cdb"
    # reflector.md §2.4: the null blob-info and the null stream.
    null = BlobInfo(0, 0, "00" * 16)
    assert null.digest().hex() == (
        "cda3ab14d0de147d2380637c644afbadff072b12353d1acaf79af718d39bff501e47c47e926a2680d477f5fbb9f3b5ce"
    )
    assert compute_stream_hash("", "00" * 16, "", (null,)) == (
        "4d9a9ce3d72af9f171c4233738e08440937cf906eb506a5d573c0e5500c58500b0a6cbaedc9be2c863750859c01d9954"
    )
    info = BlobInfo(
        24,
        1761808,
        "30303030303030303030303030303235",
        "f774e1adb8b1fc18b037015844c2469e2166006fcd739e1befca81ccd3df537dfe61041904187e1b88e7636c1848baca",
    )
    assert info.digest().hex() == (
        "2c8cb2893668ef3ad30bda5b3361c0736d746d82fb16155d1510c4d2c5e4481d49ee747f155b2f1156849d422f13a7be"
    )


def test_parse_any_key_order_and_spacing_hash_over_received_bytes() -> None:
    import json

    obj = json.loads(HELLO_SD)
    compact = json.dumps(obj, separators=(",", ":")).encode()
    reversed_keys = json.dumps(dict(reversed(list(obj.items()))), indent=2).encode()
    for variant in (HELLO_SD, compact, reversed_keys):
        sd = SdBlob.parse(variant)
        assert sd == SdBlob.parse(HELLO_SD)
        assert sha384_hex(variant) != HELLO_SD_HASH or variant == HELLO_SD


def test_reencode_from_sd_reuses_bytes() -> None:
    data = bytes(j % 256 for j in range(3_000_000))
    blobs, enc = encode_bytes(data, "movie.mp4", layout=Layout.LEGACY)
    again = StreamEncoder.from_sd_bytes(enc.sd_bytes)
    blobs2 = [(b.hash, bytes(b.data)) for b in again.encode(io.BytesIO(data))]
    assert blobs2 == blobs
    assert again.sd_bytes == enc.sd_bytes and again.sd_hash == enc.sd_hash


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 4096, 2097151])
def test_encrypting_into_a_given_buffer_gives_the_same_ciphertext(n: int) -> None:
    cipher = BlobCipher(bytes(range(16)))
    iv = bytes(range(16, 32))
    plain = bytes(i % 251 for i in range(n))
    own = bytes(cipher.encrypt_padded(iv, bytearray(plain + bytes(16)), n))
    out = bytearray(len(own))  # exactly the ciphertext's size: no slack block needed
    into = cipher.encrypt_padded(iv, bytearray(plain + bytes(16)), n, memoryview(out))
    assert bytes(into) == bytes(out) == own
    with pytest.raises(ValueError, match="too small"):
        cipher.encrypt_padded(iv, bytearray(plain + bytes(16)), n, memoryview(out)[:-1])
