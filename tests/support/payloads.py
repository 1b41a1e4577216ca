"""Deterministic pseudo-random bodies that both the origin and the tests can regenerate.

One 1 MiB block comes from ``random.Random(seed)``; chunk ``i`` is that block
rotated by a chunk-specific offset, so every chunk differs (a dropped, repeated
or reordered chunk changes the hash) while generating 100 MB costs only memcpy.
Both sides must use the same ``CHUNK_SIZE``; they do, by importing it from here.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator

#: Size of the base block and of every generated chunk but the last.
CHUNK_SIZE = 1 << 20

#: The plain text the origin serves gzip-compressed at ``/_o/gzip``.
GZIP_TEXT = ("localrelay gzip passthrough check\n" * 200).encode()

#: Rotation step between consecutive chunks (prime, so offsets do not repeat soon).
_ROTATION_STEP = 7919

_blocks: dict[int, bytes] = {}


def _block(seed: int) -> bytes:
    block = _blocks.get(seed)
    if block is None:
        block = _blocks[seed] = random.Random(seed).randbytes(CHUNK_SIZE)
    return block


def chunks(seed: int, size: int) -> Iterator[bytes]:
    """``size`` pseudo-random bytes for ``seed``, in chunks of at most CHUNK_SIZE."""
    block = _block(seed)
    index = 0
    remaining = size
    while remaining > 0:
        offset = (index * _ROTATION_STEP) % CHUNK_SIZE
        chunk = block[offset:] + block[:offset]
        n = min(CHUNK_SIZE, remaining)
        yield chunk[:n]
        remaining -= n
        index += 1


def payload(seed: int, size: int) -> bytes:
    """The whole body at once (for small sizes)."""
    return b"".join(chunks(seed, size))


def sha256_hex(seed: int, size: int) -> str:
    """SHA-256 of ``chunks(seed, size)``."""
    digest = hashlib.sha256()
    for chunk in chunks(seed, size):
        digest.update(chunk)
    return digest.hexdigest()
