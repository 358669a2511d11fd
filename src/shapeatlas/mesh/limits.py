"""Bounds on what a mesh file may make a reader allocate.

A mesh file is untrusted input: a 1 MB file of zlib blocks can inflate to gigabytes, and a header
can declare a billion vertices in a file of a few bytes. Every reader checks a declared count
against the bytes actually present before it allocates for it, and the bytes it decompresses
against `MAX_DECODED_BYTES`, so a hostile file is refused quickly with one clear line.
"""

from __future__ import annotations

#: Most bytes of array data one mesh file may decode to (decompressed and base64-decoded data
#: together). A 5-million-vertex triangle mesh in float64 needs about 360 MB.
MAX_DECODED_BYTES = 512 * 1024 * 1024
#: Largest mesh file read at all (a 5-million-vertex ASCII mesh is a few hundred MB).
MAX_MESH_FILE_BYTES = 2 * 1024**3


class DecodeBudget:
    """Counts the bytes a reader decodes from one file against `MAX_DECODED_BYTES`."""

    def __init__(self, limit: int = MAX_DECODED_BYTES):
        self.limit = int(limit)
        self.used = 0

    @property
    def remaining(self) -> int:
        return self.limit - self.used

    def take(self, n_bytes: int, *, what: str) -> None:
        """Reserve `n_bytes` for `what`; raise ValueError past the limit (nothing allocated)."""
        if n_bytes < 0:
            raise ValueError(f"{what}: negative size {n_bytes}")
        if n_bytes > self.remaining:
            raise ValueError(
                f"{what} would decode to {self.used + n_bytes:,} bytes in all, over the "
                f"{self.limit:,}-byte limit for one mesh file"
            )
        self.used += n_bytes


def check_declared(count: int, *, min_bytes_each: float, available: int, what: str) -> None:
    """Refuse a declared element count that the file's remaining bytes cannot hold.

    count: how many elements the header declares; min_bytes_each: the fewest bytes one element
    can take in this encoding; available: bytes left in the file. Raises ValueError.
    """
    if count < 0:
        raise ValueError(f"the header declares a negative number of {what} ({count})")
    if count * min_bytes_each > available:
        raise ValueError(
            f"the header declares {count:,} {what}, more than the {available:,} bytes that "
            f"follow can hold"
        )
