"""checksums.py: the x-amz-checksum-* digests and Content-MD5, held to botocore's own
checksum classes (what boto3 sends) and to the published check values of each CRC."""

from __future__ import annotations

import base64
import hashlib
import random

import pytest
from botocore import httpchecksum
from botocore.utils import calculate_md5
from hypothesis import given
from hypothesis import strategies as st

from ledgergate.wire.s3.checksums import ALGORITHMS, Checksum, md5_b64

ORACLES = {
    "crc32": httpchecksum.Crc32Checksum,
    "crc32c": httpchecksum.CrtCrc32cChecksum,
    "crc64nvme": httpchecksum.CrtCrc64NvmeChecksum,
    "sha1": httpchecksum.Sha1Checksum,
    "sha256": httpchecksum.Sha256Checksum,
}
# The catalogued check value of each algorithm: its digest of b"123456789".
CHECK = {
    "crc32": "cbf43926",
    "crc32c": "e3069283",
    "crc64nvme": "ae8b14860a799888",
    "sha1": hashlib.sha1(b"123456789").hexdigest(),
    "sha256": hashlib.sha256(b"123456789").hexdigest(),
}


def test_the_algorithms_are_the_ones_s3_names() -> None:
    assert set(ALGORITHMS) == set(ORACLES) == set(CHECK)


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_check_value(alg: str) -> None:
    c = Checksum(alg)
    c.update(b"123456789")
    assert c.digest().hex() == CHECK[alg]
    assert c.b64digest() == base64.b64encode(bytes.fromhex(CHECK[alg])).decode()


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_empty_input_matches_botocore(alg: str) -> None:
    assert Checksum(alg).b64digest() == ORACLES[alg]().b64digest()


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_random_data_in_random_pieces_matches_botocore(alg: str) -> None:
    rng = random.Random(alg)
    for _ in range(20):
        data = rng.randbytes(rng.randrange(0, 200_000))
        ours, oracle = Checksum(alg), ORACLES[alg]()
        pos = 0
        while pos < len(data):
            step = rng.randrange(1, 70_000)
            piece = data[pos : pos + step]
            # bytes, bytearray and memoryview all feed the same digest
            ours.update(rng.choice((bytes, bytearray, memoryview))(piece))
            oracle.update(piece)
            pos += step
        assert ours.b64digest() == oracle.b64digest()
        whole = Checksum(alg)
        whole.update(data)
        assert whole.b64digest() == oracle.b64digest()


@given(alg=st.sampled_from(ALGORITHMS), pieces=st.lists(st.binary(max_size=300), max_size=8))
def test_incremental_equals_whole(alg: str, pieces: list[bytes]) -> None:
    inc, oracle = Checksum(alg), ORACLES[alg]()
    for p in pieces:
        inc.update(p)
        oracle.update(p)
    assert inc.b64digest() == oracle.b64digest()


def test_digest_sizes_are_the_wire_sizes() -> None:
    sizes = {alg: len(Checksum(alg).digest()) for alg in ALGORITHMS}
    assert sizes == {"crc32": 4, "crc32c": 4, "crc64nvme": 8, "sha1": 20, "sha256": 32}


def test_algorithm_names_are_case_insensitive() -> None:
    c = Checksum("CRC32C")
    assert c.algorithm == "crc32c"
    c.update(b"123456789")
    assert c.digest().hex() == CHECK["crc32c"]


@pytest.mark.parametrize("name", ["md5", "crc64", "xxhash64", "", "sha512", "crc32 "])
def test_unknown_algorithm_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="unknown checksum algorithm"):
        Checksum(name)


@pytest.mark.parametrize("data", [b"", b"hello", bytes(range(256)) * 40])
def test_md5_b64_matches_botocore(data: bytes) -> None:
    assert md5_b64(data) == calculate_md5(data)
    assert md5_b64(b"") == "1B2M2Y8AsgTpgAmY7PhCfg=="
