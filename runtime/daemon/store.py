"""The daemon's embedded registry: function versions, aliases and module blobs.

A :class:`FunctionStore` lives in a data directory::

    <data_dir>/registry.sqlite3        versions, aliases, per-name version counters
    <data_dir>/modules/<d[:2]>/<d>     module bytes, named by their sha256 digest ``d``

The registry is SQLite (stdlib :mod:`sqlite3`) in WAL mode with
``synchronous=NORMAL``: a committed change survives the daemon being killed.
Every mutating method is one transaction.  Module bytes are stored once per
content (deduplicated across versions and functions), written atomically, and
checked against their digest when read back; a blob is removed when the last
version that refers to it is deleted.

Version numbers of a function only ever grow: a new version is numbered one
past the highest ever created under that name, even after deletes and after the
whole function was deleted and deployed again.  The ``latest`` alias follows the
newest version.  An alias maps versions to positive weights (``{2: 90, 3: 10}``
splits traffic 90/10; a single version is ``{v: 100}``).

The API is synchronous and its calls are short; a lock makes it safe to call
from more than one thread, but it is meant for one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import msgspec

from wasmhive.actors.errors import InvalidConfig, UnknownFunction, WasmhiveError

__all__ = [
    "KINDS",
    "LATEST",
    "SCHEMA_VERSION",
    "FunctionStore",
    "StoreError",
    "VersionInUse",
    "VersionRecord",
]

#: The alias that always points at a function's newest version.
LATEST: Final = "latest"
#: The module kinds a version may have.
KINDS: Final = frozenset({"wasm", "js"})
#: The registry schema this code reads and writes (``PRAGMA user_version``).
SCHEMA_VERSION: Final = 1

_REGISTRY_FILE = "registry.sqlite3"
_MODULES_DIR = "modules"
_ALIAS_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_MAX_WEIGHT = 1_000_000
_TMP_SUFFIX = ".tmp"

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS counters (
        name TEXT PRIMARY KEY,
        last_version INTEGER NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS versions (
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        digest TEXT NOT NULL,
        kind TEXT NOT NULL,
        size INTEGER NOT NULL,
        options TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (name, version)
    )
    """,
    "CREATE INDEX IF NOT EXISTS versions_by_digest ON versions (digest)",
    """
    CREATE TABLE IF NOT EXISTS aliases (
        name TEXT NOT NULL,
        alias TEXT NOT NULL,
        weights TEXT NOT NULL,
        PRIMARY KEY (name, alias)
    )
    """,
)

_VERSION_COLUMNS = "name, version, digest, kind, size, options, created_at"


class StoreError(WasmhiveError):
    """The registry or a module blob cannot be used: not a database, missing or corrupted data, I/O errors."""


class VersionInUse(WasmhiveError):
    """A version cannot be deleted: an alias other than ``latest`` still gives it a weight.

    ``version`` is the version and ``aliases`` the names of the aliases that use it.
    """

    @property
    def version(self) -> int:
        return int(self.details.get("version", 0))

    @property
    def aliases(self) -> list[str]:
        return [str(alias) for alias in self.details.get("aliases", [])]


class VersionRecord(msgspec.Struct, frozen=True):
    """One stored version of a function."""

    #: The function's name.
    name: str
    #: The version number, from 1, never reused for the same name.
    version: int
    #: The sha256 hex digest of the module bytes (the blob's name).
    digest: str
    #: The module kind: ``"wasm"`` or ``"js"``.
    kind: str
    #: The module's size in bytes.
    size: int
    #: The deploy options, JSON-able.
    options: dict[str, Any]
    #: When the version was created (``time.time()``).
    created_at: float


def _record(row: tuple[Any, ...]) -> VersionRecord:
    name, version, digest, kind, size, options, created_at = row
    return VersionRecord(
        name=str(name),
        version=int(version),
        digest=str(digest),
        kind=str(kind),
        size=int(size),
        options=json.loads(options),
        created_at=float(created_at),
    )


def _encode_weights(weights: dict[int, int]) -> str:
    return json.dumps({str(version): weight for version, weight in sorted(weights.items())})


def _decode_weights(text: str) -> dict[int, int]:
    decoded: dict[str, int] = json.loads(text)
    return {int(version): int(weight) for version, weight in sorted(decoded.items(), key=lambda item: int(item[0]))}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class FunctionStore:
    """The daemon's registry of function versions and aliases, with content-addressed module blobs.

    Opening a store creates ``data_dir`` and its contents if needed; opening the
    same directory again gives back everything committed before, including after
    the process was killed.  A registry file that is not a SQLite database, or
    was written by a newer wasmhive, raises :class:`StoreError`.

    Errors: :class:`UnknownFunction` for a missing function, version or alias,
    :class:`InvalidConfig` for bad arguments, :class:`VersionInUse` when a
    version still has traffic, and :class:`StoreError` for storage failures.
    Use :meth:`close` (or ``with``) when done.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.registry_path = self.data_dir / _REGISTRY_FILE
        self.modules_dir = self.data_dir / _MODULES_DIR
        self._lock = threading.RLock()
        try:
            self.modules_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the data directory {self.data_dir}: {exc}") from exc
        self._remove_stale_temp_files()
        self._db: sqlite3.Connection | None = None
        try:
            db = sqlite3.connect(self.registry_path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the registry {self.registry_path}: {exc}") from exc
        try:
            self._open_schema(db)
        except BaseException:
            db.close()
            raise
        self._db = db

    def _open_schema(self, db: sqlite3.Connection) -> None:
        try:
            (found,) = db.execute("PRAGMA user_version").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"the registry {self.registry_path} is not a SQLite database ({exc}); "
                "move it away or point the daemon at another data directory"
            ) from exc
        if found > SCHEMA_VERSION:
            raise StoreError(
                f"the registry {self.registry_path} has schema version {found}, "
                f"newer than this wasmhive's ({SCHEMA_VERSION}); upgrade wasmhive"
            )
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            with db:
                db.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot set up the registry {self.registry_path}: {exc}") from exc

    def _remove_stale_temp_files(self) -> None:
        """Remove the temporary files of blob writes a crash interrupted."""
        for stale in self.modules_dir.glob(f"*/.*{_TMP_SUFFIX}"):
            with contextlib.suppress(OSError):
                stale.unlink()

    def close(self) -> None:
        """Close the registry; idempotent.  Any later call raises :class:`StoreError`."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> FunctionStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FunctionStore({str(self.data_dir)!r})"

    # -- plumbing ---------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"the store at {self.data_dir} is closed")
        return self._db

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._connection()
            try:
                yield db
            except sqlite3.Error as exc:
                raise StoreError(f"registry read failed: {exc}") from exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed on success, rolled back on any exception."""
        with self._lock:
            db = self._connection()
            try:
                with db:
                    db.execute("BEGIN IMMEDIATE")
                    yield db
            except sqlite3.Error as exc:
                raise StoreError(f"registry write failed: {exc}") from exc

    def _blob_path(self, digest: str) -> Path:
        if not isinstance(digest, str) or _DIGEST.fullmatch(digest) is None:
            raise StoreError(f"{digest!r} is not a module digest (64 lowercase hex digits)", digest=str(digest))
        return self.modules_dir / digest[:2] / digest

    def _get_version(self, db: sqlite3.Connection, name: str, version: int) -> VersionRecord:
        row = db.execute(
            f"SELECT {_VERSION_COLUMNS} FROM versions WHERE name = ? AND version = ?", (name, version)
        ).fetchone()
        if row is None:
            if self._has_versions(db, name):
                raise UnknownFunction(f"no version {version}", function=name, version=version)
            raise UnknownFunction(f"no function named {name!r}", function=name, version=version)
        return _record(row)

    @staticmethod
    def _has_versions(db: sqlite3.Connection, name: str) -> bool:
        return db.execute("SELECT 1 FROM versions WHERE name = ? LIMIT 1", (name,)).fetchone() is not None

    @staticmethod
    def _aliases(db: sqlite3.Connection, name: str) -> dict[str, dict[int, int]]:
        rows = db.execute("SELECT alias, weights FROM aliases WHERE name = ? ORDER BY alias", (name,))
        return {str(alias): _decode_weights(weights) for alias, weights in rows}

    @staticmethod
    def _write_alias(db: sqlite3.Connection, name: str, alias: str, weights: dict[int, int]) -> None:
        db.execute(
            "INSERT INTO aliases (name, alias, weights) VALUES (?, ?, ?) "
            "ON CONFLICT (name, alias) DO UPDATE SET weights = excluded.weights",
            (name, alias, _encode_weights(weights)),
        )

    def _collect_blobs(self, digests: set[str]) -> None:
        """Remove the blobs of ``digests`` that no version refers to any more (after the commit)."""
        with self._read() as db:
            for digest in sorted(digests):
                if db.execute("SELECT 1 FROM versions WHERE digest = ? LIMIT 1", (digest,)).fetchone() is None:
                    with contextlib.suppress(OSError):
                        self._blob_path(digest).unlink(missing_ok=True)

    # -- blobs ------------------------------------------------------------------

    def put_module(self, data: bytes) -> str:
        """Store module bytes and return their sha256 hex digest.

        The blob is written to a temporary file, fsynced and renamed into place,
        so a crash never leaves a partial blob under its digest.  Storing the
        same bytes again is a no-op (a corrupted copy is replaced).
        """
        data = bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            self._connection()
            path = self._blob_path(digest)
            try:
                if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == digest:
                    return digest
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{digest}.", suffix=_TMP_SUFFIX)
                try:
                    with os.fdopen(fd, "wb") as tmp:
                        tmp.write(data)
                        tmp.flush()
                        os.fsync(tmp.fileno())
                    os.replace(tmp_name, path)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp_name)
                    raise
                _fsync_dir(path.parent)
            except OSError as exc:
                raise StoreError(f"cannot write module blob {digest}: {exc}", digest=digest) from exc
        return digest

    def read_module(self, digest: str) -> bytes:
        """The module bytes stored under ``digest``, checked against it.

        A missing, unreadable or corrupted blob raises :class:`StoreError` naming the digest.
        """
        with self._lock:
            self._connection()
            path = self._blob_path(digest)
            try:
                data = path.read_bytes()
            except FileNotFoundError as exc:
                raise StoreError(f"module blob {digest} is missing ({path})", digest=digest) from exc
            except OSError as exc:
                raise StoreError(f"cannot read module blob {digest}: {exc}", digest=digest) from exc
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise StoreError(
                f"module blob {digest} is corrupted: its content hashes to {actual} ({path})", digest=digest
            )
        return data

    # -- versions ---------------------------------------------------------------

    def add_version(self, name: str, *, kind: str, digest: str, size: int, options: dict[str, Any]) -> VersionRecord:
        """Record a new version of ``name`` and point ``latest`` at it.

        The version number is one past the highest ever created for ``name``.
        The module blob must already be stored (:meth:`put_module`), else
        :class:`StoreError`; ``kind`` must be one of :data:`KINDS` and
        ``options`` JSON-able, else :class:`InvalidConfig`.
        """
        if kind not in KINDS:
            raise InvalidConfig(f"kind must be one of {sorted(KINDS)}, not {kind!r}", function=name)
        if not _is_int(size) or size < 0:
            raise InvalidConfig(f"size must be a non-negative int, not {size!r}", function=name)
        if not isinstance(options, dict):
            raise InvalidConfig(f"options must be a dict, not {type(options).__name__}", function=name)
        try:
            options_json = json.dumps(options, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidConfig(f"options are not JSON-able: {exc}", function=name) from exc
        path = self._blob_path(digest)
        with self._transaction() as db:
            if not path.is_file():
                raise StoreError(f"module blob {digest} is not stored; put_module it first", digest=digest)
            row = db.execute("SELECT last_version FROM counters WHERE name = ?", (name,)).fetchone()
            version = 1 if row is None else int(row[0]) + 1
            db.execute(
                "INSERT INTO counters (name, last_version) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET last_version = excluded.last_version",
                (name, version),
            )
            created_at = time.time()
            db.execute(
                f"INSERT INTO versions ({_VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, version, digest, kind, size, options_json, created_at),
            )
            self._write_alias(db, name, LATEST, {version: 100})
        return VersionRecord(
            name=name,
            version=version,
            digest=digest,
            kind=kind,
            size=size,
            options=json.loads(options_json),
            created_at=created_at,
        )

    def next_version(self, name: str) -> int:
        """The number the next :meth:`add_version` of ``name`` will get."""
        with self._read() as db:
            row = db.execute("SELECT last_version FROM counters WHERE name = ?", (name,)).fetchone()
            return 1 + (int(row[0]) if row is not None else 0)

    def functions(self) -> list[str]:
        """The names of the functions with at least one version, sorted."""
        with self._read() as db:
            return [str(name) for (name,) in db.execute("SELECT DISTINCT name FROM versions ORDER BY name")]

    def versions(self, name: str) -> list[VersionRecord]:
        """The versions of ``name`` in ascending order; ``[]`` for an unknown function."""
        with self._read() as db:
            rows = db.execute(f"SELECT {_VERSION_COLUMNS} FROM versions WHERE name = ? ORDER BY version", (name,))
            return [_record(row) for row in rows]

    def version(self, name: str, version: int) -> VersionRecord:
        """One version of ``name``; :class:`UnknownFunction` if there is no such version."""
        with self._read() as db:
            return self._get_version(db, name, version)

    def all_versions(self) -> list[VersionRecord]:
        """Every stored version of every function, by name then version (to restore them on start-up)."""
        with self._read() as db:
            rows = db.execute(f"SELECT {_VERSION_COLUMNS} FROM versions ORDER BY name, version")
            return [_record(row) for row in rows]

    def delete_version(self, name: str, version: int) -> VersionRecord:
        """Delete one version of ``name`` and return it.

        Refused with :class:`VersionInUse` while an alias other than ``latest``
        gives the version a weight.  If ``latest`` pointed at it, ``latest``
        moves to the highest remaining version, or is dropped when none remain.
        The module blob goes when no version of any function refers to it.
        """
        with self._transaction() as db:
            record = self._get_version(db, name, version)
            aliases = self._aliases(db, name)
            users = [alias for alias, weights in aliases.items() if alias != LATEST and version in weights]
            if users:
                raise VersionInUse(
                    f"version {version} is still used by alias(es) {', '.join(users)}; point them elsewhere first",
                    function=name,
                    version=version,
                    aliases=users,
                )
            db.execute("DELETE FROM versions WHERE name = ? AND version = ?", (name, version))
            if version in aliases.get(LATEST, {}):
                (highest,) = db.execute("SELECT MAX(version) FROM versions WHERE name = ?", (name,)).fetchone()
                if highest is None:
                    db.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", (name, LATEST))
                else:
                    self._write_alias(db, name, LATEST, {int(highest): 100})
        self._collect_blobs({record.digest})
        return record

    def delete_function(self, name: str) -> list[VersionRecord]:
        """Delete every version and alias of ``name``; returns the deleted versions.

        :class:`UnknownFunction` if ``name`` has no versions.  The version
        counter is kept, so a later deploy of the same name continues the
        numbering.  Blobs no other version refers to are removed.
        """
        with self._transaction() as db:
            rows = db.execute(f"SELECT {_VERSION_COLUMNS} FROM versions WHERE name = ? ORDER BY version", (name,))
            records = [_record(row) for row in rows]
            if not records:
                raise UnknownFunction(f"no function named {name!r}", function=name)
            db.execute("DELETE FROM versions WHERE name = ?", (name,))
            db.execute("DELETE FROM aliases WHERE name = ?", (name,))
        self._collect_blobs({record.digest for record in records})
        return records

    # -- aliases ----------------------------------------------------------------

    def set_alias(self, name: str, alias: str, weights: dict[int, int]) -> dict[int, int]:
        """Create or replace ``alias`` of ``name``; returns the stored weights (by version).

        ``alias`` must match ``[A-Za-z][A-Za-z0-9_-]{0,31}``, ``weights`` map
        existing versions to ints from 1 to 1,000,000 (:class:`InvalidConfig`
        otherwise; :class:`UnknownFunction` for an unknown function or
        version).  ``latest`` may be set too (e.g. to roll back); the next
        :meth:`add_version` points it at the new version again.
        """
        if not isinstance(alias, str) or _ALIAS_NAME.fullmatch(alias) is None:
            raise InvalidConfig(
                f"alias {alias!r} is not valid: it must start with a letter and have at most 32 letters, "
                "digits, '_' or '-'",
                function=name,
            )
        if not isinstance(weights, dict) or not weights:
            raise InvalidConfig(f"alias {alias!r} needs at least one version with a weight", function=name)
        for version, weight in weights.items():
            if not _is_int(version) or version < 1:
                raise InvalidConfig(
                    f"alias {alias!r}: version {version!r} is not a positive int version number", function=name
                )
            if not _is_int(weight) or not 1 <= weight <= _MAX_WEIGHT:
                raise InvalidConfig(
                    f"alias {alias!r}: the weight of version {version} must be an int from 1 to {_MAX_WEIGHT:,}, "
                    f"not {weight!r}",
                    function=name,
                )
        stored = dict(sorted(weights.items()))
        with self._transaction() as db:
            existing = {
                int(version) for (version,) in db.execute("SELECT version FROM versions WHERE name = ?", (name,))
            }
            if not existing:
                raise UnknownFunction(f"no function named {name!r}", function=name)
            missing = sorted(set(stored) - existing)
            if missing:
                raise UnknownFunction(
                    f"alias {alias!r}: no version {', '.join(map(str, missing))}", function=name, versions=missing
                )
            self._write_alias(db, name, alias, stored)
        return stored

    def alias(self, name: str, alias: str) -> dict[int, int]:
        """The weights of ``alias`` of ``name``; :class:`UnknownFunction` if there is no such alias."""
        with self._read() as db:
            row = db.execute("SELECT weights FROM aliases WHERE name = ? AND alias = ?", (name, alias)).fetchone()
            if row is None:
                if not self._has_versions(db, name):
                    raise UnknownFunction(f"no function named {name!r} (looking up alias {alias!r})", function=name)
                raise UnknownFunction(f"no alias {alias!r}", function=name, alias=alias)
            return _decode_weights(row[0])

    def aliases(self, name: str) -> dict[str, dict[int, int]]:
        """Every alias of ``name`` with its weights, by alias name; ``{}`` for an unknown function."""
        with self._read() as db:
            return self._aliases(db, name)

    def delete_alias(self, name: str, alias: str) -> None:
        """Delete ``alias`` of ``name``.

        ``latest`` cannot be deleted (:class:`InvalidConfig`); a missing alias
        raises :class:`UnknownFunction`.
        """
        if alias == LATEST:
            raise InvalidConfig(f"alias {LATEST!r} cannot be deleted: it follows the newest version", function=name)
        with self._transaction() as db:
            deleted = db.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", (name, alias)).rowcount
            if deleted == 0:
                if not self._has_versions(db, name):
                    raise UnknownFunction(f"no function named {name!r} (deleting alias {alias!r})", function=name)
                raise UnknownFunction(f"no alias {alias!r}", function=name, alias=alias)
