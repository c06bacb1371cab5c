"""moto's DynamoDB with DynamoDB's per-item atomicity, for tests that read while jobs run.

moto applies an UpdateItem in place, one SET action after the other, with no lock, and
builds a GetItem response from the live item: a read from another thread can see
`phase = ERROR` before `error_summary` (and two racing conditional UpdateItems can both
pass their condition). DynamoDB applies an UpdateItem atomically, and a ConsistentRead
GetItem sees all of it or none of it; the job stores rely on exactly that.
atomic_requests() runs moto's DynamoDB requests one at a time, from parsing to the
serialised response, so a test checks our ConditionExpressions and write grouping
rather than moto's threading.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from moto.dynamodb.responses import DynamoHandler


@contextmanager
def atomic_requests() -> Iterator[None]:
    """While active, each DynamoDB request in this process runs alone (in-process
    mock_aws and ThreadedMotoServer alike: both dispatch to DynamoHandler.call_action)."""
    lock = threading.RLock()  # re-entrant: a request may trigger another in-thread
    original = DynamoHandler.__dict__["call_action"]

    def call_action(self: DynamoHandler) -> Any:
        with lock:
            return original(self)

    DynamoHandler.call_action = call_action  # type: ignore[method-assign]
    try:
        yield
    finally:
        DynamoHandler.call_action = original  # type: ignore[method-assign]
