"""Split a manifest's targets across the pods of a Kubernetes Indexed Job.

Each target belongs to exactly one shard, chosen by a stable hash of its name: SHA-256, not
Python's ``hash()``, which changes between processes. The same manifest and shard count always
give the same split, whichever pod or machine computes it, and the shards together cover every
target exactly once.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from batchsync.manifest import Target

__all__ = ["Shard", "parse_shard", "shard_of"]

INDEX_VARIABLE = "JOB_COMPLETION_INDEX"


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based, as Kubernetes numbers completion indexes)."""

    index: int
    count: int

    def select(self, targets: Iterable[Target]) -> Iterator[Target]:
        """Yield the targets that belong to this shard, in manifest order."""
        for target in targets:
            if shard_of(target.name, self.count) == self.index:
                yield target

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(name: str, count: int) -> int:
    """Return the shard (0 to ``count`` - 1) that the target called ``name`` belongs to."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()

    return int.from_bytes(digest[:8], "big") % count


def parse_shard(text: str, environ: dict[str, str] | None = None) -> Shard:
    """Parse ``INDEX/COUNT``; an ``INDEX`` of ``auto`` or nothing reads ``JOB_COMPLETION_INDEX``.

    Raises:
        ValueError: with a message that gives the form to write instead.
    """
    environment = os.environ if environ is None else environ
    index_text, separator, count_text = text.partition("/")
    if not separator:
        msg = f'shard "{text}" must be INDEX/COUNT, such as 0/4, or auto/4 to read {INDEX_VARIABLE}'
        raise ValueError(msg)
    count = _integer(count_text, "COUNT")
    if index_text in ("", "auto"):
        if INDEX_VARIABLE not in environment:
            msg = f"shard index is auto but {INDEX_VARIABLE} is not set; give the index, such as 0/{count}"
            raise ValueError(msg)
        index_text = environment[INDEX_VARIABLE]
    index = _integer(index_text, "INDEX")
    if count < 1 or not 0 <= index < count:
        msg = f"shard {index}/{count} is out of range; INDEX must be 0 to COUNT - 1 and COUNT at least 1"
        raise ValueError(msg)

    return Shard(index, count)


def _integer(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        msg = f'shard {name} "{text}" is not an integer'
        raise ValueError(msg) from None
