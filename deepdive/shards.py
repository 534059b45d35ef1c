"""Splitting the pages into N shards, so that N machines (a CI matrix) check them together.

The split depends only on committed files: the page names and the run time each
capture records (meta "seconds", rounded, at least 1). So every machine that checks out
the same commit computes the same shards, whatever its speed, kernel or hash seed.
Pages are dealt longest first, each to the shard with the least recorded time so far
(ties: the lower shard), which keeps the shards' recorded totals close.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence, TypeVar

from deepdive import capture as captures
from deepdive.model import DeepDiveError

T = TypeVar("T")
SHAPE = re.compile(r"(\d+)/(\d+)")


def parse(text: str) -> tuple[int, int]:
    """"I/N" -> (I, N), 1 <= I <= N. Raises DeepDiveError with one line otherwise."""
    m = SHAPE.fullmatch(text.strip())
    index, count = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    if not m or count < 1 or not 1 <= index <= count:
        raise DeepDiveError(f"--shard {text!r} is not I/N with 1 <= I <= N (for example 1/3)")
    return index, count


def recorded_seconds(name: str) -> float:
    """The run time the committed capture of `name` records; 1 without one."""
    try:
        return float(captures.load(name)["meta"].get("seconds", 1))
    except (DeepDiveError, TypeError, ValueError):  # no capture yet, or a malformed one: lab.check says so
        return 1.0


def split(items: Sequence[T], count: int, name: Callable[[T], str],
          weight: Callable[[str], float] = recorded_seconds) -> list[list[T]]:
    """`items` dealt into `count` lists (each in the order of `items`), longest first."""
    loads = [0.0] * count
    chosen: dict[str, int] = {}
    for key in sorted((name(i) for i in items), key=lambda n: (-weight(n), n)):
        shard = min(range(count), key=lambda s: (loads[s], s))
        chosen[key] = shard
        loads[shard] += weight(key)
    return [[i for i in items if chosen[name(i)] == s] for s in range(count)]


def select(items: Sequence[T], shard: str, name: Callable[[T], str]) -> list[T]:
    """The items of shard "I/N" (see split)."""
    index, count = parse(shard)
    return split(items, count, name)[index - 1]
