"""Functions, versions and aliases on top of one :class:`~wasmhive.runtime.Runtime`.

Every version of a function is its own runtime deployment, named
``<name>.<version>`` (daemon function names have no dots), so versions run
side by side and an alias can split traffic between them.  The registry
(:class:`~wasmhive.runtime.daemon.store.FunctionStore`) is the source of
truth; on start-up :meth:`FunctionService.restore` deploys every recorded
version again, compiled modules coming from the compile cache.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import random
import re
from collections.abc import AsyncIterator, Iterator
from itertools import accumulate
from pathlib import Path
from typing import Any

import anyio
import msgspec

from wasmhive.actors.errors import InvalidConfig, UnknownFunction, WasmhiveError
from wasmhive.runtime.runtime import Runtime

from .config import ConfigError, DaemonConfig, FunctionOptions
from .errors import Starting, VersionUnavailable
from .metrics import VersionStats
from .store import FunctionStore, VersionRecord
from .trace import ExecutionTrace

__all__ = ["FunctionService", "Route", "runtime_name"]

logger = logging.getLogger("wasmhive.daemon")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,47}\Z")
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}\Z")
LATEST = "latest"


def runtime_name(name: str, version: int) -> str:
    """The runtime deployment that serves ``version`` of function ``name``."""
    return f"{name}.{version}"


class Route(msgspec.Struct, frozen=True):
    """Where calls to one target (``name``, ``name@alias``, ``name@3``) go."""

    name: str
    versions: tuple[int, ...]
    #: Cumulative weights (same length as versions); empty for a single version.
    cumulative: tuple[int, ...] = ()

    def pick(self, rand: random.Random) -> int:
        """A version, chosen by weight."""
        if not self.cumulative:
            return self.versions[0]
        point = rand.random() * self.cumulative[-1]
        return self.versions[bisect.bisect_right(self.cumulative, point)]


class FunctionService:
    """Deploy, resolve, call and remove function versions; keeps the registry and the runtime in step."""

    def __init__(self, runtime: Runtime, store: FunctionStore, config: DaemonConfig) -> None:
        self.runtime = runtime
        self.store = store
        self.config = config
        self._routes: dict[str, Route] = {}
        self._versions: dict[str, tuple[str, int]] = {}  # runtime name -> (name, version)
        self._lock = anyio.Lock()  # one registry change at a time
        self._random = random.Random()
        trace = config.server.trace_executions
        self._trace = ExecutionTrace(Path(trace)) if trace else None
        #: Versions that failed to come back at start-up (runtime name -> error).
        self.broken: dict[str, str] = {}
        self.ready = False

    # --- start-up -----------------------------------------------------------------------

    async def restore(self) -> None:
        """Deploy every recorded version again (from the compile cache), then the bundled functions."""
        for record in self.store.all_versions():
            try:
                await self._start(record)
            except WasmhiveError as exc:  # one bad version must not keep the others down
                self.broken[runtime_name(record.name, record.version)] = str(exc)
                logger.error("could not restore %s@%d: %s", record.name, record.version, exc)
        for i, bundled in enumerate(self.config.deploy):
            kind = bundled.options.kind or ("js" if bundled.path.endswith(".js") else "wasm")
            try:
                data = await anyio.Path(bundled.path).read_bytes()
                record = await self.deploy(bundled.name, data, kind=kind, options=bundled.options, unchanged_ok=True)
            except OSError as exc:
                raise ConfigError(f"deploy[{i}].path: cannot read {bundled.path}: {exc.strerror}") from None
            except WasmhiveError as exc:  # the config names a module that does not deploy
                raise ConfigError(f"deploy[{i}] ({bundled.name!r}, {bundled.path}): {exc.message}") from None
            for alias in bundled.aliases:
                current = self.store.aliases(bundled.name).get(alias)
                if current is None:
                    await self.set_alias(bundled.name, alias, {record.version: 100})
        self.ready = True

    # --- registry changes ------------------------------------------------------------------

    async def deploy(
        self,
        name: str,
        module: bytes,
        *,
        kind: str,
        options: FunctionOptions | None = None,
        unchanged_ok: bool = False,
    ) -> VersionRecord:
        """Create the next version of ``name`` from module bytes (wasm, WAT) or JavaScript source.

        With ``unchanged_ok``, a module and options identical to those of an
        existing version give that version back (aliases untouched) instead of
        a new one: how bundled functions survive restarts without new versions.
        """
        check_name(name)
        if kind not in ("wasm", "js"):
            raise InvalidConfig(f"kind must be 'wasm' or 'js', not {kind!r}", function=name)
        given = options or FunctionOptions()
        recorded = msgspec.structs.replace(given, kind=None).to_json()
        effective = self.config.options_for(name, given)
        async with self._lock:
            if unchanged_ok:
                same = self._same_version(name, module, kind, recorded)
                if same is not None:
                    return same
            version = self.store.next_version(name)
            target = runtime_name(name, version)
            await self.runtime.deploy(target, module, kind=kind, **_runtime_options(effective))
            try:
                # Hashing, fsync and the commit take milliseconds for a big module: off the loop.
                record = await anyio.to_thread.run_sync(self._record_version, name, module, kind, recorded)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self.runtime.undeploy(target)
                raise
            assert record.version == version, (record.version, version)
            self._started(target, name, version)
            return record

    def _record_version(self, name: str, module: bytes, kind: str, options: dict[str, Any]) -> VersionRecord:
        """Store the module and record the version (on a worker thread; the store has its own lock)."""
        digest = self.store.put_module(module)
        return self.store.add_version(name, kind=kind, digest=digest, size=len(module), options=options)

    def _same_version(self, name: str, module: bytes, kind: str, options: dict[str, Any]) -> VersionRecord | None:
        """A running version with this module, kind and options, if there is one (the newest)."""
        digest = hashlib.sha256(module).hexdigest()
        for record in reversed(self.store.versions(name)):
            if record.digest == digest and record.kind == kind and record.options == options:
                if runtime_name(name, record.version) in self._versions:
                    return record
        return None

    async def _start(self, record: VersionRecord) -> None:
        """Deploy a recorded version into the runtime."""
        name = runtime_name(record.name, record.version)
        module = self.store.read_module(record.digest)
        given = FunctionOptions.from_json(record.options, where=f"{name} options")
        effective = self.config.options_for(record.name, given)
        await self.runtime.deploy(name, module, kind=record.kind, **_runtime_options(effective))
        self._started(name, record.name, record.version)

    def _started(self, target: str, name: str, version: int) -> None:
        self._versions[target] = (name, version)
        self._routes.clear()
        if self._trace is not None:
            self.runtime.deployment(target).set_call_hook(self._trace.hook(name, version))

    def close(self) -> None:
        """Release what the service holds outside the runtime (the execution trace)."""
        if self._trace is not None:
            self._trace.close()

    async def set_alias(self, name: str, alias: str, weights: dict[int, int]) -> dict[int, int]:
        """Point ``alias`` at one version or at weighted versions (rollback: point it back)."""
        check_name(name)
        if not _ALIAS.match(alias):
            raise InvalidConfig(
                f"alias {alias!r} must be 1-32 letters, digits, '_' or '-', starting with a letter", function=name
            )
        async with self._lock:
            result = self.store.set_alias(name, alias, weights)
            self._routes.clear()
            return result

    async def delete_alias(self, name: str, alias: str) -> None:
        """Remove an alias (``latest`` cannot be removed)."""
        async with self._lock:
            self.store.delete_alias(name, alias)
            self._routes.clear()

    async def delete_version(self, name: str, version: int) -> VersionRecord:
        """Remove one version (refused while an alias other than ``latest`` points at it)."""
        async with self._lock:
            record = self.store.delete_version(name, version)
            self._routes.clear()
            await self._stop(runtime_name(name, version))
            return record

    async def delete_function(self, name: str) -> list[VersionRecord]:
        """Remove every version and alias of a function."""
        async with self._lock:
            records = self.store.delete_function(name)
            self._routes.clear()
            for record in records:
                await self._stop(runtime_name(record.name, record.version))
            return records

    async def _stop(self, target: str) -> None:
        self._versions.pop(target, None)
        self.broken.pop(target, None)
        if target in self.runtime.functions():
            await self.runtime.undeploy(target)

    # --- calling ---------------------------------------------------------------------------

    def resolve(self, target: str) -> tuple[str, int]:
        """``name``, ``name@alias`` or ``name@version`` -> (name, version) to call now.

        Raises :class:`Starting` (503) until :meth:`restore` is done.
        """
        route = self._routes.get(target)
        if route is None:
            if not self.ready:
                raise Starting("the daemon is starting: its functions are being restored", function=target)
            route = self._route(target)
            if len(self._routes) < 10_000:
                self._routes[target] = route
        return route.name, route.pick(self._random)

    def _route(self, target: str) -> Route:
        name, _, selector = target.partition("@")
        if not _NAME.match(name):
            raise UnknownFunction(f"no function named {name!r}", function=name)
        selector = selector or LATEST
        if selector.isascii() and selector.isdigit() and len(selector) <= 18:
            version = int(selector)
            if runtime_name(name, version) not in self._versions and runtime_name(name, version) not in self.broken:
                raise UnknownFunction(f"function {name!r} has no version {version}", function=name)
            return Route(name, (version,))
        aliases = self.store.aliases(name)
        if not aliases:
            raise UnknownFunction(f"no function named {name!r}", function=name)
        weights = aliases.get(selector)
        if weights is None:
            known = ", ".join(sorted(aliases))
            raise UnknownFunction(f"function {name!r} has no alias {selector!r} (aliases: {known})", function=name)
        versions = tuple(sorted(weights))
        if len(versions) == 1:
            return Route(name, versions)
        return Route(name, versions, tuple(accumulate(weights[v] for v in versions)))

    async def invoke(self, name: str, version: int, payload: bytes, *, key: str | None = None) -> bytes:
        """Call one version (see :meth:`resolve`)."""
        return await self.runtime.invoke(self._deployed(name, version), payload, key=key)

    def stream(self, name: str, version: int, payload: bytes, *, key: str | None = None) -> AsyncIterator[bytes]:
        """Stream one version's chunks, then its reply."""
        return self.runtime.stream(self._deployed(name, version), payload, key=key)

    def _deployed(self, name: str, version: int) -> str:
        target = runtime_name(name, version)
        if target in self.broken:
            raise VersionUnavailable(f"{name}@{version} could not be started: {self.broken[target]}", function=name)
        return target

    # --- observing ---------------------------------------------------------------------------

    def describe(self, name: str) -> dict[str, Any]:
        """A function's versions and aliases, as JSON-able data."""
        versions = self.store.versions(name)
        if not versions:
            raise UnknownFunction(f"no function named {name!r}", function=name)
        return {
            "name": name,
            "versions": [self._version_info(r) for r in versions],
            "aliases": {alias: _weights_json(w) for alias, w in sorted(self.store.aliases(name).items())},
        }

    def _version_info(self, record: VersionRecord) -> dict[str, Any]:
        info: dict[str, Any] = msgspec.to_builtins(record)
        target = runtime_name(record.name, record.version)
        info["status"] = "broken" if target in self.broken else "running" if target in self._versions else "stopped"
        if target in self.broken:
            info["error"] = self.broken[target]
        return info

    def list(self) -> list[dict[str, Any]]:
        """Every function: its versions and aliases."""
        result = []
        for name in self.store.functions():
            versions = [r.version for r in self.store.versions(name)]
            aliases = {alias: _weights_json(w) for alias, w in sorted(self.store.aliases(name).items())}
            result.append({"name": name, "versions": versions, "aliases": aliases})
        return result

    def version_stats(self) -> Iterator[VersionStats]:
        """Runtime counters of every running version (for /metrics)."""
        functions = self.runtime.stats().functions
        for target, stats in functions.items():
            owner = self._versions.get(target)
            if owner is not None:
                yield VersionStats(owner[0], owner[1], stats)


def check_name(name: str) -> None:
    """Function names: 1-48 letters, digits, '_' or '-', starting with a letter or digit."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidConfig(
            f"function name {name!r} must be 1-48 letters, digits, '_' or '-', starting with a letter or digit"
        )


def _runtime_options(options: FunctionOptions) -> dict[str, Any]:
    kwargs = options.deploy_kwargs()
    kwargs.pop("kind", None)
    return kwargs


def _weights_json(weights: dict[int, int]) -> dict[str, int]:
    return {str(v): w for v, w in sorted(weights.items())}
