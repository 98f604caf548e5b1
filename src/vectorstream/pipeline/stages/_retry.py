"""Store calls of the plan and commit stages, retried within the run's ``RetryPolicy``.

Record writes have their own retrying writer (``stores.retry.write_with_retry``, which also
bisects rejected batches); every other call the stages make (manifest reads and writes, id
queries, deletes) goes through here, so a store that blinks never fails a run.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from ...errors import StoreUnavailableError
from ...stores.retry import TRANSIENT, RetryPolicy

log = logging.getLogger("vectorstream.pipeline.retry")

T = TypeVar("T")


def call_with_retry(
    policy: RetryPolicy,
    what: str,
    fn: Callable[[], T],
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
) -> T:
    """Call ``fn``, retrying transient store failures within ``policy``'s bounds."""
    rng = rng or random.Random()
    started = clock()
    failures = 0
    while True:
        try:
            return fn()
        except TRANSIENT as exc:
            failures += 1
            delay = policy.backoff(failures - 1, rng)
            elapsed = clock() - started
            if failures >= policy.max_attempts or elapsed + delay > policy.deadline:
                raise StoreUnavailableError(
                    f"the store still fails to {what} after {failures} attempts in "
                    f"{elapsed:.1f} s ({exc}); what was committed is consistent: run again to "
                    f"finish the job"
                ) from exc
            log.info("could not %s (%s); retry %d in %.2f s", what, exc, failures, delay)
            sleep(delay)


__all__ = ["call_with_retry"]
