"""Test helpers: waiting for a condition without asserting on time."""

from __future__ import annotations

from collections.abc import Callable

import anyio

from wasmhive.runtime import Runtime


async def settled(rt: Runtime, function: str) -> None:
    """Wait until every actor the function's pool keeps is live (restarts back off a little)."""
    await eventually(lambda: (s := rt.stats().functions[function]).instances == s.pool_size)


async def eventually(condition: Callable[[], bool], *, limit: float = 10.0, step: float = 0.001) -> None:
    """Wait until ``condition()`` holds; fail the test if it does not within ``limit`` seconds."""
    with anyio.fail_after(limit):
        while not condition():
            await anyio.sleep(step)
