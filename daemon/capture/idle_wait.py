"""How the capture loop waits when a batch came back empty (``CaptureLoop._consume_batch``).

With every partition paused for the buffer no event can come: the loop waits on the uploads
themselves, then only serves the consumer (rebalance callbacks, errors). Else the consumer
blocks: briefly while an upload has a segment queued behind it (after a burst) or a run waits
to be caught up, since the next step is then due the moment that upload ends; otherwise for as
long as nothing arrives (a step of the loop costs about 1 us a partition, 1 ms at 1,000)."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future
from typing import Any

from daemon.capture.partition import PartitionState

IDLE_WAIT_S = 0.1
"""How long an empty consume() blocks when nothing is uploading: new events end it at once."""
UPLOAD_WAIT_S = 0.005
"""How long it blocks while an upload has a segment queued behind it: the finished upload is
acted on (the partition's next segment dispatched, its offset committed) within milliseconds,
not at the end of an idle wait, which after a burst fell between every two uploads of a
partition."""


def idle_wait(states: Iterable[PartitionState], paused: bool, catching_up: bool
              ) -> tuple[list[Future[Any]], float]:
    """The uploads to wait on first (at most ``IDLE_WAIT_S``, the first to finish), and how
    long the consume() after that may block."""
    uploading = [ps for ps in states if ps.in_flight is not None]
    if uploading and paused:
        return [ps.in_flight for ps in uploading if ps.in_flight is not None], 0.0
    if uploading and (catching_up or any(len(ps.pending) > 1 for ps in uploading)):
        return [], UPLOAD_WAIT_S
    return [], IDLE_WAIT_S
