"""Test helpers: waiting for a condition without asserting on time."""

from __future__ import annotations

from collections.abc import Callable

import anyio


async def eventually(condition: Callable[[], bool], *, limit: float = 10.0, step: float = 0.001) -> None:
    """Wait until ``condition()`` holds; fail the test if it does not within ``limit`` seconds."""
    with anyio.fail_after(limit):
        while not condition():
            await anyio.sleep(step)
