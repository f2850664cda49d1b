"""Worker processes for bulk CPU work, results taken in order while this process writes.

Used by ingest (batches prepared: parsed, resolved, priced) and ``local generate`` (days of
synthetic rows drawn): the writes stay in the calling process, in order.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

__all__ = ["ordered_map"]

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int,
    initializer: Callable[..., None],
    initargs: tuple[Any, ...],
    ahead: int,
) -> Generator[R, None, None]:
    """``fn`` of each item, computed in ``workers`` spawned processes, yielded in item order,
    with at most ``ahead`` results waiting; closing the iterator cancels what is pending."""
    context = multiprocessing.get_context("spawn")  # no fork: safe with threads in the parent
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=initializer, initargs=initargs
    ) as pool:
        pending: deque[Future[R]] = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                while len(pending) > ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
