"""Bodies for the transfer tests: the upstream's download pattern checked piece by piece,
uploads of distinct numbered chunks hashed on the way, the upstream's JSON echo."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator

import httpx

from tests.support.procfs import RssSampler
from tests.support.upstream import CHUNK, PATTERN

MiB = 1024 * 1024


def report(what: str, size: int, seconds: float, sampler: RssSampler) -> None:
    print(
        f"\n{what}: {size / MiB:.0f} MiB in {seconds:.2f}s = {size / MiB / seconds:.0f} MiB/s, "
        f"mitmdump RSS {sampler.baseline / MiB:.1f} MiB + peak growth "
        f"{sampler.growth / MiB:.1f} MiB ({sampler.samples} samples"
        f"{', VmHWM included' if sampler.hwm_reset else ''})"
    )


def check_pattern_download(response: httpx.Response, size: int) -> int:
    """Reads the /download body in CHUNK-sized pieces, each must be the upstream's pattern."""
    assert response.status_code == 200
    received = 0
    # Every piece starts at a multiple of CHUNK, itself a multiple of the 256-byte period.
    for piece in response.iter_raw(CHUNK):
        expected = PATTERN[: len(piece)]
        if piece != expected:
            at = next(i for i, (a, b) in enumerate(zip(piece, expected, strict=False)) if a != b)
            raise AssertionError(f"body differs at byte {received + at} of {size}")
        received += len(piece)
    return received


def numbered_chunks(count: int, size: int, digest: hashlib._Hash) -> Iterator[bytes]:
    """`count` distinct chunks (a dropped, repeated or reordered one changes the hash)."""
    base = random.Random(1234).randbytes(size)
    for i in range(count):
        chunk = i.to_bytes(8, "big") + base[8:]
        digest.update(chunk)
        yield chunk


def echo(response: httpx.Response) -> dict[str, object]:
    assert response.status_code == 200, response.text
    body: dict[str, object] = json.loads(response.content)
    return body
