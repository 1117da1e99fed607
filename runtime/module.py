"""Reading a module's bytes and checking it against guest ABI v1."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import wasmtime

from wasmhive.actors import abi
from wasmhive.actors.errors import InvalidModule

__all__ = ["ModuleInfo", "inspect_module", "read_module_source"]

ModuleSource = bytes | bytearray | memoryview | str | os.PathLike[str]

_WASM_MAGIC = b"\0asm"


def read_module_source(function: str, source: ModuleSource) -> bytes:
    """The wasm binary for ``source``: bytes of wasm or WAT text, or a path to either."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidModule(f"cannot read module file {str(path)!r}: {exc.strerror}", function=function) from None
    else:
        data = bytes(source)
    if data.startswith(_WASM_MAGIC):
        return data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or not text.strip():
        raise InvalidModule(
            "not a WebAssembly module: expected wasm bytes (starting with \\0asm) or WAT text",
            function=function,
        )
    try:
        return bytes(wasmtime.wat2wasm(text))
    except wasmtime.WasmtimeError as exc:
        raise InvalidModule(
            f"not a WebAssembly module: the bytes are neither wasm (starting with \\0asm) nor valid WAT text "
            f"({_first_line(exc)})",
            function=function,
        ) from None


def has_start_function(wasm: bytes) -> bool:
    """Whether a wasm binary has a start section: guest code that runs at instantiation."""
    position = 8  # magic and version
    while position < len(wasm):
        section = wasm[position]
        position += 1
        size = shift = 0
        while True:  # unsigned LEB128
            byte = wasm[position]
            position += 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        if section == 8:
            return True
        position += size
    return False


@dataclass(frozen=True)
class ModuleInfo:
    """What the runtime needs to know about a validated module."""

    host_imports: frozenset[str]
    uses_wasi: bool
    #: A WASI command: exports ``_start`` (and not ``wh_handle``); runs once per call.
    command: bool
    has_initialize: bool
    has_init: bool
    initial_memory: int


def _sig(ty: wasmtime.FuncType) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(str(p) for p in ty.params), tuple(str(r) for r in ty.results)


def _fmt(sig: tuple[tuple[str, ...], tuple[str, ...]]) -> str:
    params, results = sig
    return f"({', '.join(params)}) -> ({', '.join(results)})"


def inspect_module(function: str, module: wasmtime.Module) -> ModuleInfo:
    """Check that ``module`` speaks ABI v1; raise :class:`InvalidModule` saying what to fix."""
    exports = {e.name: e.type for e in module.exports}
    if "wh_handle" not in exports and "_start" in exports:
        return _inspect_command(function, module, exports)
    memory = exports.get("memory")
    if not isinstance(memory, wasmtime.MemoryType):
        raise InvalidModule(
            "the module must export its linear memory as \"memory\" (ABI v1, see docs/abi.md)", function=function
        )
    for name, want in abi.REQUIRED_EXPORTS.items():
        ty = exports.get(name)
        if ty is None:
            raise InvalidModule(
                f"the module must export {name}{_fmt(want)} (ABI v1, see docs/abi.md)", function=function
            )
        if not isinstance(ty, wasmtime.FuncType) or _sig(ty) != want:
            got = _fmt(_sig(ty)) if isinstance(ty, wasmtime.FuncType) else "not a function"
            raise InvalidModule(f"export {name} must be {_fmt(want)}, found {got}", function=function)
    optional: dict[str, bool] = {}
    for name, want in abi.OPTIONAL_EXPORTS.items():
        ty = exports.get(name)
        if ty is not None and (not isinstance(ty, wasmtime.FuncType) or _sig(ty) != want):
            raise InvalidModule(f"export {name}, if present, must be {_fmt(want)}", function=function)
        optional[name] = ty is not None

    host_imports: set[str] = set()
    uses_wasi = False
    for imp in module.imports:
        if imp.module == abi.IMPORT_MODULE:
            wanted = abi.HOST_IMPORTS.get(imp.name or "")
            if wanted is None:
                known = ", ".join(sorted(abi.HOST_IMPORTS))
                raise InvalidModule(
                    f"imports wasmhive.{imp.name}, which ABI v1 does not define (known: {known})", function=function
                )
            if not isinstance(imp.type, wasmtime.FuncType) or _sig(imp.type) != wanted:
                raise InvalidModule(f"import wasmhive.{imp.name} must be {_fmt(wanted)}", function=function)
            host_imports.add(imp.name or "")
        elif imp.module == abi.WASI_MODULE:
            uses_wasi = True
        else:
            raise InvalidModule(
                f"imports {imp.module}.{imp.name}; a module may import only from "
                f"\"{abi.IMPORT_MODULE}\" and \"{abi.WASI_MODULE}\"",
                function=function,
            )
    return ModuleInfo(
        host_imports=frozenset(host_imports),
        uses_wasi=uses_wasi,
        has_initialize=optional["_initialize"],
        has_init=optional["wh_init"],
        initial_memory=memory.limits.min * 65536,
        command=False,
    )


def _inspect_command(function: str, module: wasmtime.Module, exports: Mapping[str, object]) -> ModuleInfo:
    start = exports["_start"]
    if not isinstance(start, wasmtime.FuncType) or _sig(start) != ((), ()):
        raise InvalidModule("a WASI command's _start must be () -> ()", function=function)
    for imp in module.imports:
        if imp.module != abi.WASI_MODULE:
            raise InvalidModule(
                f"imports {imp.module}.{imp.name}; a WASI command (a module with _start) may import only "
                f"from \"{abi.WASI_MODULE}\" (use ABI v1 exports to reach the wasmhive host calls)",
                function=function,
            )
    memory = exports.get("memory")
    return ModuleInfo(
        host_imports=frozenset(),
        uses_wasi=True,
        has_initialize=False,
        has_init=False,
        initial_memory=memory.limits.min * 65536 if isinstance(memory, wasmtime.MemoryType) else 0,
        command=True,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
