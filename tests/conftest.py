"""Shared fixtures: a fresh compile cache per test session, runtimes on trio and asyncio."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from wasmhive.runtime import Runtime, RuntimeConfig

# Shared 2-core machines are noisy: no per-example deadline, no "too slow" health check.
settings.register_profile("wasmhive", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("wasmhive")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compile-cache")


@pytest.fixture
def config(cache_dir: Path) -> RuntimeConfig:
    return RuntimeConfig(cache_dir=str(cache_dir))


@pytest.fixture
async def rt(config: RuntimeConfig) -> AsyncIterator[Runtime]:
    """A running Runtime (for tests marked trio or anyio)."""
    async with Runtime(config) as runtime:
        yield runtime
