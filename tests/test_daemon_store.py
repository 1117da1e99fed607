"""The daemon's embedded registry: versions, aliases, module blobs, persistence."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wasmhive.actors.errors import InvalidConfig, UnknownFunction, error_from_info
from wasmhive.runtime.daemon.store import LATEST, FunctionStore, StoreError, VersionInUse, VersionRecord

WASM_A = b"\x00asm\x01\x00\x00\x00module-a"
WASM_B = b"\x00asm\x01\x00\x00\x00module-b"
JS_C = b"export default function handler() {}"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FunctionStore]:
    s = FunctionStore(tmp_path / "data")
    try:
        yield s
    finally:
        s.close()


def deploy(store: FunctionStore, name: str, data: bytes = WASM_A, **options: object) -> VersionRecord:
    digest = store.put_module(data)
    kind = "js" if data.startswith(b"export") else "wasm"
    return store.add_version(name, kind=kind, digest=digest, size=len(data), options=dict(options))


def blob_files(store: FunctionStore) -> list[Path]:
    return sorted(p for p in store.modules_dir.rglob("*") if p.is_file())


# -- layout and blobs --------------------------------------------------------------


def test_creates_data_dir_registry_and_schema(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "data"
    with FunctionStore(data_dir) as s:
        assert s.data_dir == data_dir
    assert (data_dir / "registry.sqlite3").is_file()
    assert (data_dir / "modules").is_dir()
    db = sqlite3.connect(data_dir / "registry.sqlite3")
    try:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"counters", "versions", "aliases"} <= tables
    finally:
        db.close()


def test_put_module_is_content_addressed(store: FunctionStore) -> None:
    digest = store.put_module(WASM_A)
    assert digest == hashlib.sha256(WASM_A).hexdigest()
    path = store.modules_dir / digest[:2] / digest
    assert path.read_bytes() == WASM_A
    assert blob_files(store) == [path]  # no temporary file left behind
    assert store.read_module(digest) == WASM_A


def test_put_module_is_idempotent(store: FunctionStore) -> None:
    first = store.put_module(WASM_A)
    path = store.modules_dir / first[:2] / first
    inode = path.stat().st_ino
    assert store.put_module(bytearray(WASM_A)) == first
    assert path.stat().st_ino == inode  # not rewritten
    assert store.put_module(WASM_B) != first
    assert len(blob_files(store)) == 2


def test_put_module_replaces_a_corrupted_copy(store: FunctionStore) -> None:
    digest = store.put_module(WASM_A)
    path = store.modules_dir / digest[:2] / digest
    path.write_bytes(b"garbage")
    assert store.put_module(WASM_A) == digest
    assert store.read_module(digest) == WASM_A


def test_read_module_missing_names_the_digest(store: FunctionStore) -> None:
    digest = hashlib.sha256(b"never stored").hexdigest()
    with pytest.raises(StoreError, match=f"{digest} is missing"):
        store.read_module(digest)


def test_read_module_detects_corruption(store: FunctionStore) -> None:
    digest = store.put_module(WASM_A)
    path = store.modules_dir / digest[:2] / digest
    path.write_bytes(WASM_A[:-1] + b"X")
    with pytest.raises(StoreError, match=f"{digest} is corrupted") as info:
        store.read_module(digest)
    assert info.value.details["digest"] == digest


@pytest.mark.parametrize("digest", ["../../registry.sqlite3", "ABCDEF" * 10 + "ABCD", "abc", ""])
def test_read_module_rejects_non_digests(store: FunctionStore, digest: str) -> None:
    with pytest.raises(StoreError, match="is not a module digest"):
        store.read_module(digest)


def test_stale_temp_files_are_removed_on_open(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with FunctionStore(data_dir) as s:
        digest = s.put_module(WASM_A)
    stale = data_dir / "modules" / digest[:2] / f".{digest}.abc123.tmp"
    stale.write_bytes(b"half written")
    with FunctionStore(data_dir) as s:
        assert not stale.exists()
        assert s.read_module(digest) == WASM_A


# -- versions ------------------------------------------------------------------------


def test_add_version_numbers_and_points_latest(store: FunctionStore) -> None:
    before = time.time()
    v1 = deploy(store, "echo", WASM_A, timeout=1.5, secrets=["K"])
    after = time.time()
    assert v1 == VersionRecord(
        name="echo",
        version=1,
        digest=hashlib.sha256(WASM_A).hexdigest(),
        kind="wasm",
        size=len(WASM_A),
        options={"secrets": ["K"], "timeout": 1.5},
        created_at=v1.created_at,
    )
    assert before <= v1.created_at <= after
    assert store.alias("echo", LATEST) == {1: 100}
    v2 = deploy(store, "echo", JS_C)
    assert (v2.version, v2.kind) == (2, "js")
    assert store.alias("echo", LATEST) == {2: 100}
    assert [r.version for r in store.versions("echo")] == [1, 2]
    assert store.version("echo", 1) == v1
    assert store.version("echo", 2) == v2


def test_version_numbers_are_per_function(store: FunctionStore) -> None:
    assert deploy(store, "a").version == 1
    assert deploy(store, "b").version == 1
    assert deploy(store, "a").version == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "python"}, "kind must be one of"),
        ({"options": {"bad": object()}}, "not JSON-able"),
        ({"options": {"nan": float("nan")}}, "not JSON-able"),
        ({"options": ["not", "a", "dict"]}, "options must be a dict"),
        ({"size": -1}, "size must be a non-negative int"),
    ],
)
def test_add_version_rejects_bad_arguments(store: FunctionStore, kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"kind": "wasm", "digest": store.put_module(WASM_A), "size": 10, "options": {}}
    args.update(kwargs)
    with pytest.raises(InvalidConfig, match=message):
        store.add_version("f", **args)  # type: ignore[arg-type]
    assert store.functions() == []


def test_add_version_needs_the_blob(store: FunctionStore) -> None:
    digest = hashlib.sha256(b"not stored").hexdigest()
    with pytest.raises(StoreError, match=f"{digest} is not stored"):
        store.add_version("f", kind="wasm", digest=digest, size=3, options={})
    with pytest.raises(StoreError, match="is not a module digest"):
        store.add_version("f", kind="wasm", digest="../x", size=3, options={})
    assert store.functions() == []
    assert store.aliases("f") == {}
    # a failed add does not use up a version number
    assert deploy(store, "f").version == 1


def test_functions_versions_all_versions(store: FunctionStore) -> None:
    assert store.functions() == []
    assert store.versions("nope") == []
    deploy(store, "zeta")
    deploy(store, "alpha", WASM_B)
    deploy(store, "zeta", JS_C)
    assert store.functions() == ["alpha", "zeta"]
    assert [(r.name, r.version) for r in store.all_versions()] == [("alpha", 1), ("zeta", 1), ("zeta", 2)]
    assert [r.kind for r in store.versions("zeta")] == ["wasm", "js"]


def test_version_unknown(store: FunctionStore) -> None:
    with pytest.raises(UnknownFunction, match="no function named 'ghost'") as info:
        store.version("ghost", 1)
    assert info.value.function == "ghost"
    deploy(store, "f")
    with pytest.raises(UnknownFunction, match="no version 7") as info:
        store.version("f", 7)
    assert info.value.function == "f"
    assert info.value.details["version"] == 7


def test_version_numbers_never_reused_after_delete_version(store: FunctionStore) -> None:
    deploy(store, "f")
    deploy(store, "f")
    store.delete_version("f", 2)
    assert deploy(store, "f").version == 3
    assert [r.version for r in store.versions("f")] == [1, 3]


def test_version_numbers_never_reused_after_delete_function(store: FunctionStore) -> None:
    deploy(store, "f")
    deploy(store, "f")
    deploy(store, "f")
    store.delete_function("f")
    assert store.functions() == []
    again = deploy(store, "f")
    assert again.version == 4
    assert store.alias("f", LATEST) == {4: 100}


def test_delete_version_moves_latest(store: FunctionStore) -> None:
    for _ in range(3):
        deploy(store, "f")
    removed = store.delete_version("f", 3)
    assert removed.version == 3
    assert store.alias("f", LATEST) == {2: 100}
    store.delete_version("f", 1)  # latest does not point at it: unchanged
    assert store.alias("f", LATEST) == {2: 100}
    store.delete_version("f", 2)  # the last one: latest goes
    assert store.aliases("f") == {}
    assert store.functions() == []
    with pytest.raises(UnknownFunction):
        store.alias("f", LATEST)


def test_delete_version_moves_a_split_latest(store: FunctionStore) -> None:
    for _ in range(3):
        deploy(store, "f")
    store.set_alias("f", LATEST, {1: 50, 2: 50})
    store.delete_version("f", 1)
    assert store.alias("f", LATEST) == {3: 100}


def test_delete_version_in_use(store: FunctionStore) -> None:
    for _ in range(3):
        deploy(store, "f")
    store.set_alias("f", "stable", {2: 100})
    store.set_alias("f", "canary", {2: 90, 3: 10})
    with pytest.raises(VersionInUse, match="canary, stable") as info:
        store.delete_version("f", 2)
    assert info.value.function == "f"
    assert info.value.version == 2
    assert info.value.aliases == ["canary", "stable"]
    again = error_from_info(info.value.to_info())
    assert isinstance(again, VersionInUse) and again.aliases == ["canary", "stable"]
    assert [r.version for r in store.versions("f")] == [1, 2, 3]  # nothing deleted
    # latest alone does not block; version 3 is used by canary
    with pytest.raises(VersionInUse, match="canary"):
        store.delete_version("f", 3)
    store.set_alias("f", "canary", {2: 100})
    store.delete_version("f", 3)
    assert store.alias("f", LATEST) == {2: 100}


def test_delete_version_unknown(store: FunctionStore) -> None:
    with pytest.raises(UnknownFunction, match="no function named"):
        store.delete_version("f", 1)
    deploy(store, "f")
    with pytest.raises(UnknownFunction, match="no version 2"):
        store.delete_version("f", 2)
    assert [r.version for r in store.versions("f")] == [1]


def test_delete_function(store: FunctionStore) -> None:
    v1 = deploy(store, "f")
    v2 = deploy(store, "f", WASM_B)
    deploy(store, "g")
    store.set_alias("f", "stable", {1: 100})
    assert store.delete_function("f") == [v1, v2]  # aliases do not block it
    assert store.versions("f") == []
    assert store.aliases("f") == {}
    assert store.functions() == ["g"]
    with pytest.raises(UnknownFunction, match="no function named 'f'"):
        store.delete_function("f")


# -- blob garbage collection ---------------------------------------------------------


def test_blob_dedup_and_gc_on_delete_version(store: FunctionStore) -> None:
    a1 = deploy(store, "f", WASM_A)
    a2 = deploy(store, "f", WASM_A)
    b = deploy(store, "f", WASM_B)
    assert a1.digest == a2.digest != b.digest
    assert len(blob_files(store)) == 2
    store.delete_version("f", 1)
    assert store.read_module(a1.digest) == WASM_A  # still used by version 2
    store.delete_version("f", 2)
    with pytest.raises(StoreError, match="is missing"):
        store.read_module(a1.digest)
    assert store.read_module(b.digest) == WASM_B
    assert [p.name for p in blob_files(store)] == [b.digest]


def test_blob_gc_across_functions(store: FunctionStore) -> None:
    digest = deploy(store, "f", WASM_A).digest
    deploy(store, "g", WASM_A)
    deploy(store, "g", WASM_B)
    store.delete_function("f")
    assert store.read_module(digest) == WASM_A  # g still uses it
    store.delete_function("g")
    assert blob_files(store) == []


def test_refused_delete_keeps_the_blob(store: FunctionStore) -> None:
    record = deploy(store, "f")
    deploy(store, "f", WASM_B)
    store.set_alias("f", "old", {1: 100})
    with pytest.raises(VersionInUse):
        store.delete_version("f", 1)
    assert store.read_module(record.digest) == WASM_A


# -- aliases -------------------------------------------------------------------------


def test_set_alias_alias_aliases(store: FunctionStore) -> None:
    for _ in range(3):
        deploy(store, "f")
    assert store.set_alias("f", "canary", {3: 10, 2: 90}) == {2: 90, 3: 10}
    assert store.alias("f", "canary") == {2: 90, 3: 10}
    assert list(store.alias("f", "canary")) == [2, 3]
    assert store.set_alias("f", "stable", {1: 100}) == {1: 100}
    assert store.aliases("f") == {"canary": {2: 90, 3: 10}, LATEST: {3: 100}, "stable": {1: 100}}
    store.set_alias("f", "stable", {2: 1})  # replace
    assert store.alias("f", "stable") == {2: 1}
    assert store.aliases("nope") == {}


def test_set_alias_latest_then_add_version(store: FunctionStore) -> None:
    deploy(store, "f")
    deploy(store, "f")
    store.set_alias("f", LATEST, {1: 100})  # roll back
    assert store.alias("f", LATEST) == {1: 100}
    deploy(store, "f")
    assert store.alias("f", LATEST) == {3: 100}


@pytest.mark.parametrize("alias", ["", "1abc", "_x", "-x", "a" * 33, "has space", "dot.ted", "latest\n", "ünï"])
def test_set_alias_rejects_bad_names(store: FunctionStore, alias: str) -> None:
    deploy(store, "f")
    with pytest.raises(InvalidConfig, match="is not valid"):
        store.set_alias("f", alias, {1: 100})
    assert store.aliases("f") == {LATEST: {1: 100}}


@pytest.mark.parametrize("alias", ["a", "A" * 32, "prod-eu_1", "Z9"])
def test_set_alias_accepts_good_names(store: FunctionStore, alias: str) -> None:
    deploy(store, "f")
    assert store.set_alias("f", alias, {1: 100}) == {1: 100}
    assert store.alias("f", alias) == {1: 100}


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({}, "at least one version"),
        ({1: 0}, "must be an int from 1 to 1,000,000"),
        ({1: -5}, "must be an int from 1 to 1,000,000"),
        ({1: 1_000_001}, "must be an int from 1 to 1,000,000"),
        ({1: 1.5}, "must be an int"),
        ({1: True}, "must be an int"),
        ({1: 100, 2: 0}, "version 2 must be an int"),
        ({"1": 100}, "not a positive int version number"),
        ({0: 100}, "not a positive int version number"),
        ({True: 100}, "not a positive int version number"),
    ],
)
def test_set_alias_rejects_bad_weights(store: FunctionStore, weights: dict[object, object], message: str) -> None:
    deploy(store, "f")
    deploy(store, "f")
    with pytest.raises(InvalidConfig, match=message):
        store.set_alias("f", "canary", weights)  # type: ignore[arg-type]
    assert "canary" not in store.aliases("f")


def test_set_alias_weight_bounds(store: FunctionStore) -> None:
    deploy(store, "f")
    deploy(store, "f")
    assert store.set_alias("f", "edge", {1: 1, 2: 1_000_000}) == {1: 1, 2: 1_000_000}


def test_set_alias_unknown_function_or_version(store: FunctionStore) -> None:
    with pytest.raises(UnknownFunction, match="no function named 'ghost'"):
        store.set_alias("ghost", "stable", {1: 100})
    deploy(store, "f")
    store.set_alias("f", "stable", {1: 100})
    with pytest.raises(UnknownFunction, match="no version 4, 7") as info:
        store.set_alias("f", "stable", {1: 50, 7: 25, 4: 25})
    assert info.value.function == "f"
    assert store.alias("f", "stable") == {1: 100}  # unchanged


def test_alias_missing_names_it(store: FunctionStore) -> None:
    with pytest.raises(UnknownFunction, match=r"no function named 'f'.*'stable'"):
        store.alias("f", "stable")
    deploy(store, "f")
    with pytest.raises(UnknownFunction, match="no alias 'stable'") as info:
        store.alias("f", "stable")
    assert info.value.function == "f"


def test_delete_alias(store: FunctionStore) -> None:
    deploy(store, "f")
    store.set_alias("f", "stable", {1: 100})
    store.set_alias("f", "beta", {1: 100})
    store.delete_alias("f", "stable")
    assert store.aliases("f") == {"beta": {1: 100}, LATEST: {1: 100}}
    with pytest.raises(UnknownFunction, match="no alias 'stable'"):
        store.delete_alias("f", "stable")
    with pytest.raises(InvalidConfig, match="cannot be deleted"):
        store.delete_alias("f", LATEST)
    assert store.alias("f", LATEST) == {1: 100}
    with pytest.raises(UnknownFunction, match="no function named 'ghost'"):
        store.delete_alias("ghost", "beta")
    # with the alias gone, its version can be deleted
    store.delete_alias("f", "beta")
    store.delete_version("f", 1)
    assert store.functions() == []


# -- persistence and failures --------------------------------------------------------


def test_reopen_gives_everything_back(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with FunctionStore(data_dir) as s:
        deploy(s, "f", WASM_A, timeout=2)
        deploy(s, "f", WASM_B)
        deploy(s, "f", WASM_B)
        deploy(s, "g", JS_C, memory_limit=1 << 20)
        s.set_alias("f", "canary", {1: 90, 2: 10})
        s.delete_version("f", 3)
        s.delete_function("g")
        records = s.all_versions()
        aliases = s.aliases("f")
    with FunctionStore(data_dir) as s:
        assert s.all_versions() == records
        assert [(r.version, r.options) for r in records] == [(1, {"timeout": 2}), (2, {})]
        assert s.functions() == ["f"]
        assert s.aliases("f") == aliases == {"canary": {1: 90, 2: 10}, LATEST: {2: 100}}
        assert s.read_module(records[0].digest) == WASM_A
        assert s.read_module(records[1].digest) == WASM_B
        # the counters survive too
        assert deploy(s, "f").version == 4
        assert deploy(s, "g").version == 2


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_survives_sigkill(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from wasmhive.runtime.daemon.store import FunctionStore
        s = FunctionStore(Path({str(data_dir)!r}))
        d = s.put_module({WASM_A!r})
        s.add_version("f", kind="wasm", digest=d, size=3, options={{"k": "v"}})
        s.add_version("f", kind="wasm", digest=d, size=3, options={{}})
        s.set_alias("f", "stable", {{1: 100}})
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    with FunctionStore(data_dir) as s:
        assert [(r.version, r.options) for r in s.versions("f")] == [(1, {"k": "v"}), (2, {})]
        assert s.aliases("f") == {LATEST: {2: 100}, "stable": {1: 100}}
        assert s.read_module(hashlib.sha256(WASM_A).hexdigest()) == WASM_A


def test_not_a_sqlite_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "registry.sqlite3").write_bytes(b"this is not a database, just some text " * 100)
    with pytest.raises(StoreError, match="is not a SQLite database"):
        FunctionStore(data_dir)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    FunctionStore(data_dir).close()
    db = sqlite3.connect(data_dir / "registry.sqlite3")
    db.execute("PRAGMA user_version = 2")
    db.close()
    with pytest.raises(StoreError, match="schema version 2"):
        FunctionStore(data_dir)


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "data"
    target.write_text("x")
    with pytest.raises(StoreError, match="cannot create the data directory"):
        FunctionStore(target)


def test_closed_store(tmp_path: Path) -> None:
    s = FunctionStore(tmp_path / "data")
    digest = s.put_module(WASM_A)
    s.close()
    s.close()  # idempotent
    for call in (
        s.functions,
        lambda: s.versions("f"),
        lambda: s.read_module(digest),
        lambda: s.put_module(WASM_B),
        lambda: s.add_version("f", kind="wasm", digest=digest, size=1, options={}),
    ):
        with pytest.raises(StoreError, match="is closed"):
            call()


def test_two_stores_share_the_registry(tmp_path: Path) -> None:
    # the same data dir opened twice (e.g. a CLI next to the daemon) sees committed writes
    with FunctionStore(tmp_path / "data") as a, FunctionStore(tmp_path / "data") as b:
        deploy(a, "f")
        assert b.alias("f", LATEST) == {1: 100}
        assert deploy(b, "f").version == 2
        assert [r.version for r in a.versions("f")] == [1, 2]
    assert not [p for p in (tmp_path / "data").rglob("*.tmp")]
    assert os.listdir(tmp_path / "data" / "modules")
