"""pytest plugin: retries are instant in every test that runs the crawler in process.

The crawler's backoffs (0.5 s doubling, the registry's and Akua's alike) are
real waits; a test that injects 5xx answers would spend seconds asleep for
nothing it checks.  ``crawler.retry.instant_retries()`` makes every wait zero
and keeps every budget and decision (how many tries, which failures are
retried, when a ``Retry-After`` is too long), so the verdicts stay the same.
A child process started by a test (kill and signal runs) keeps real waits.

A test that needs the real waits is marked ``real_retry_waits``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _instant_retries(request: pytest.FixtureRequest) -> Iterator[None]:
    from crawler.retry import instant_retries  # here: the xdist controller runs no test

    if request.node.get_closest_marker("real_retry_waits") is not None:
        yield
        return
    with instant_retries():
        yield
