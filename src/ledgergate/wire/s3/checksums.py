"""The checksums S3 carries in ``x-amz-checksum-*`` headers and trailers, and Content-MD5.

Owns the incremental digest of each algorithm S3 names and its wire form: base64 of the
big-endian digest (4 bytes for the CRC32s, 8 for CRC64NVME, the hash itself for SHA-1 and
SHA-256), exactly as botocore's checksum classes produce it. The primitives are vetted
ones: zlib's CRC-32, AWS's C runtime (``awscrt``) for CRC32C and CRC64NVME, hashlib for
the rest. Must not decide whether a checksum is required or compare it with a declared
value (the body relay does). Pure: no I/O, clock or logging.
"""

from __future__ import annotations

import base64
import hashlib
import zlib

from awscrt import checksums as _crt  # type: ignore[import-untyped]

__all__ = ["ALGORITHMS", "Checksum", "md5_b64"]

# The x-amz-checksum-<algorithm> names S3 accepts for an upload (the S3 API's
# ChecksumAlgorithm, lower-cased as in the header names).
ALGORITHMS = ("crc32", "crc32c", "crc64nvme", "sha1", "sha256")


class Checksum:
    """One running ``x-amz-checksum-<algorithm>``: ``update(data)`` then ``b64digest()``.

    ``algorithm`` is matched without regard to case (``CRC32`` as in
    ``x-amz-sdk-checksum-algorithm`` or ``crc32`` as in the header name); an algorithm
    S3 does not name raises ValueError.
    """

    __slots__ = ("_crc", "_hash", "algorithm")

    def __init__(self, algorithm: str) -> None:
        alg = algorithm.lower()
        if alg not in ALGORITHMS:
            raise ValueError(f"unknown checksum algorithm {algorithm!r}")
        self.algorithm = alg
        self._crc = 0
        self._hash = hashlib.new(alg) if alg in ("sha1", "sha256") else None

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if self._hash is not None:
            self._hash.update(data)
        elif self.algorithm == "crc32":
            self._crc = zlib.crc32(data, self._crc)
        elif self.algorithm == "crc32c":
            self._crc = int(_crt.crc32c(data, self._crc))
        else:
            self._crc = int(_crt.crc64nvme(data, self._crc))

    def digest(self) -> bytes:
        if self._hash is not None:
            return self._hash.digest()
        size = 8 if self.algorithm == "crc64nvme" else 4
        return self._crc.to_bytes(size, "big")

    def b64digest(self) -> str:
        """The header value: base64 of the big-endian digest."""
        return base64.b64encode(self.digest()).decode("ascii")


def md5_b64(data: bytes | bytearray | memoryview) -> str:
    """The Content-MD5 value of ``data``: base64 of its MD5 digest (RFC 1864)."""
    digest = hashlib.md5(data, usedforsecurity=False).digest()
    return base64.b64encode(digest).decode("ascii")
