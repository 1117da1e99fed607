"""Build C guests to wasm with the ``ziglang`` package (zig's bundled clang).

Two kinds of guest come out of it:

* a **reactor** (the default): a wasmhive guest written with the C SDK,
  ``wasmhive.h`` (guest ABI v1, see docs/abi.md).  Built with
  ``-mexec-model=reactor``: it exports ``wh_alloc``, ``wh_handle`` and
  ``_initialize``, never ``_start``.
* a **command**: an ordinary C program with ``main()``, built with
  ``-mexec-model=command``.  wasmhive runs it once per call, with the payload
  as stdin and stdout streamed to the caller (see actors/command.py).

``build(..., command=None)`` tells them apart from the source: a file that
defines ``WASMHIVE_IMPLEMENTATION`` is a reactor; otherwise one that defines
``main(`` is a command; anything else is a reactor.

The ``wasmhive.h`` header ships inside the package (``include_dir()``), so
``#include "wasmhive.h"`` works from any directory.  From the shell::

    wasmhive build hello.c            # -> hello.wasm next to hello.c

The first build on a machine takes 20 to 60 s (zig builds wasi-libc once and
caches it in its global cache directory); later builds take well under a
second.

This module uses only the standard library, so guest/c/build.py can load it
by path when wasmhive is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "CFLAGS",
    "DEFAULT_STACK_SIZE",
    "OPTIMIZE_LEVELS",
    "BuildError",
    "CompilerNotFound",
    "available",
    "build",
    "default_output",
    "include_dir",
    "is_command",
]

#: Shadow stack size.  zig's default (16 MiB) would make every instance start
#: with over 16 MiB of memory; 1 MiB is plenty for guests that keep big buffers
#: in the arena or on the heap.
DEFAULT_STACK_SIZE = 1 << 20

#: Flags for every guest (the exec model is added per kind).
CFLAGS: tuple[str, ...] = (
    "-target",
    "wasm32-wasi",
    "-Wall",
    "-Wextra",
    "-Werror=implicit-function-declaration",
)

#: The accepted optimization levels, as clang flags.
OPTIMIZE_LEVELS: tuple[str, ...] = ("-O0", "-O1", "-O2", "-O3", "-Os", "-Oz")

_HERE = Path(__file__).resolve().parent
_COMMENT_OR_LITERAL = re.compile(r'/\*.*?\*/|//[^\n]*|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.DOTALL)
_MAIN = re.compile(r"(?<![\w.>])main\s*\(")
_SDK_IMPLEMENTATION = re.compile(r"^[ \t]*#[ \t]*define[ \t]+WASMHIVE_IMPLEMENTATION\b", re.MULTILINE)


class BuildError(RuntimeError):
    """The compiler failed (or could not run).  The message holds its output.

    ``source`` is the C file, ``output`` the compiler's stderr and stdout
    (empty if it did not run), ``returncode`` its exit status (None if it did
    not finish).
    """

    def __init__(self, message: str, *, source: Path | None = None, output: str = "", returncode: int | None = None):
        super().__init__(message)
        self.source = source
        self.output = output
        self.returncode = returncode


class CompilerNotFound(BuildError):
    """The ``ziglang`` package is not installed for this interpreter."""


def available() -> bool:
    """Whether the ``ziglang`` package is installed for this interpreter."""
    return importlib.util.find_spec("ziglang") is not None


def include_dir() -> Path:
    """The directory holding ``wasmhive.h`` (inside the package; in a source checkout, guest/c)."""
    packaged = _HERE / "include"
    if (packaged / "wasmhive.h").is_file():
        return packaged
    return _HERE.parent / "guest" / "c"  # a checkout whose symlink did not survive


def is_command(text: str) -> bool:
    """Whether C source ``text`` is a WASI command (defines ``main``) rather than an SDK guest.

    Comments and string literals are ignored.  A source that defines
    ``WASMHIVE_IMPLEMENTATION`` is an SDK guest (a reactor) even with a ``main``.
    """
    code = _COMMENT_OR_LITERAL.sub(lambda m: "\n" * m.group().count("\n") or " ", text)
    if _SDK_IMPLEMENTATION.search(code):
        return False
    return _MAIN.search(code) is not None


def default_output(source: Path) -> Path:
    """``hello.c`` -> ``hello.wasm`` in the same directory."""
    return Path(source).with_suffix(".wasm")


def _optimize_flag(optimize: str) -> str:
    level = optimize.strip().lstrip("-").removeprefix("O")
    flag = f"-O{level}"
    if flag not in OPTIMIZE_LEVELS:
        raise ValueError(f"optimize must be one of {', '.join(OPTIMIZE_LEVELS)}, got {optimize!r}")
    return flag


def build(
    source: Path,
    out: Path | None = None,
    *,
    command: bool | None = None,
    optimize: str = "-O2",
    debug: bool = False,
    stack_size: int = DEFAULT_STACK_SIZE,
    include_dirs: Sequence[Path] = (),
    extra_flags: Sequence[str] = (),
    timeout: float = 600.0,
) -> Path:
    """Compile the C file ``source`` to a wasm module and return the module's path.

    ``out`` is the module file (default: ``source`` with ``.wasm``), or an
    existing directory to write ``<stem>.wasm`` into; missing parent
    directories are created.  ``command`` builds a WASI command (True), a
    reactor (False), or decides from the source (None, see :func:`is_command`).
    ``optimize`` is a clang level (``"-O2"``, ``"-Os"``, ``"O3"``, ``"z"``...).
    ``debug`` keeps debug info (``-g``; the module is far larger); otherwise
    the module is stripped.  ``stack_size`` (bytes, a multiple of 16) sets the
    shadow stack.  ``include_dirs`` and ``extra_flags`` go to the compiler
    (``wasmhive.h``'s directory is always on the include path).

    Raises :class:`BuildError` with the compiler's output if it fails
    (:class:`CompilerNotFound` without ziglang), :class:`FileNotFoundError` if
    ``source`` does not exist, :class:`ValueError` for bad options.  The module
    is written under a temporary name first: a failed or interrupted build
    never leaves a truncated module behind.
    """
    source = Path(source).resolve()
    opt = _optimize_flag(optimize)
    if stack_size <= 0 or stack_size % 16:
        raise ValueError(f"stack_size must be a positive multiple of 16, got {stack_size}")
    if not source.is_file():
        raise FileNotFoundError(f"no such C source: {source}")
    if command is None:
        command = is_command(source.read_text(encoding="utf-8", errors="replace"))
    if out is None:
        out = default_output(source)
    out = Path(out)
    if out.is_dir():
        out = out / f"{source.stem}.wasm"
    out.parent.mkdir(parents=True, exist_ok=True)
    if not available():
        raise CompilerNotFound(
            f"cannot build {source.name}: the ziglang package (a C compiler for wasm32-wasi) is not installed "
            f"for {sys.executable}; install it with: pip install ziglang",
            source=source,
        )
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.wasm")
    cmd = [
        sys.executable,
        "-m",
        "ziglang",
        "cc",
        *CFLAGS,
        "-mexec-model=command" if command else "-mexec-model=reactor",
        opt,
        *(["-g"] if debug else ["-s"]),
        f"-Wl,-z,stack-size={stack_size}",
        "-I",
        str(include_dir()),
        *(arg for d in include_dirs for arg in ("-I", str(d))),
        *extra_flags,
        "-o",
        str(tmp),
        str(source),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        tmp.unlink(missing_ok=True)
        raise BuildError(f"building {source.name} took more than {timeout:g} s", source=source) from exc
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise BuildError(f"building {source.name}: cannot run the compiler: {exc}", source=source) from exc
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        output = (proc.stderr + proc.stdout).strip()
        raise BuildError(
            f"building {source.name} failed (exit {proc.returncode}):\n{output}",
            source=source,
            output=output,
            returncode=proc.returncode,
        )
    os.replace(tmp, out)
    return out
