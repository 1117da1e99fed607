"""Build the C guest examples (and any C guest) into a directory.

A thin wrapper over ``wasmhive.runtime.cbuild``, which the ``wasmhive build``
command uses too (prefer that for a single guest: ``wasmhive build hello.c``).

Usage::

    python guest/c/build.py [--out DIR] [--debug] [--command | --reactor] [SOURCE.c ...]

Without sources it builds every example in ``guest/c/examples/`` to
``guest/c/build/<name>.wasm`` (or ``DIR/<name>.wasm``).  A source that
defines ``main()`` (and not ``WASMHIVE_IMPLEMENTATION``) is built as a WASI
command, anything else as a reactor, unless ``--command`` / ``--reactor``
says otherwise.  Importable too::

    wasm = build(Path("guest/c/examples/echo.c"), Path("/tmp/out"))   # /tmp/out/echo.wasm

The first build on a machine takes about a minute (zig builds wasi-libc once and
caches it in its global cache directory); later builds take well under a second.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE / "examples"
DEFAULT_OUT = HERE / "build"


def _load_cbuild() -> ModuleType:
    try:
        from wasmhive.runtime import cbuild
    except ImportError:  # wasmhive not installed: load the module from the checkout by path
        path = HERE.parent.parent / "runtime" / "cbuild.py"
        spec = importlib.util.spec_from_file_location("wasmhive_cbuild", path)
        assert spec is not None and spec.loader is not None
        cbuild = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = cbuild
        spec.loader.exec_module(cbuild)
    return cbuild


_cbuild = _load_cbuild()

BuildError = _cbuild.BuildError
CFLAGS: tuple[str, ...] = _cbuild.CFLAGS
DEFAULT_STACK_SIZE: int = _cbuild.DEFAULT_STACK_SIZE
available = _cbuild.available
is_command = _cbuild.is_command

__all__ = [
    "CFLAGS",
    "DEFAULT_STACK_SIZE",
    "EXAMPLES",
    "BuildError",
    "available",
    "build",
    "build_all",
    "examples",
    "is_command",
]


def examples() -> list[Path]:
    """The example sources, sorted by name."""
    return sorted(EXAMPLES.glob("*.c"))


def build(
    source: Path,
    out_dir: Path,
    *,
    debug: bool = False,
    command: bool | None = None,
    stack_size: int = DEFAULT_STACK_SIZE,
    extra_flags: Sequence[str] = (),
    timeout: float = 600.0,
) -> Path:
    """Compile one C guest to ``out_dir/<stem>.wasm`` and return that path.

    ``debug`` builds with ``-O1 -g`` (the module is far larger); otherwise
    ``-O2``, stripped.  ``command``: see ``wasmhive.runtime.cbuild.build``.
    Raises :class:`BuildError` if the compiler fails, :class:`FileNotFoundError`
    if ``source`` does not exist.
    """
    source = Path(source)
    if not source.is_file():  # before creating out_dir
        raise FileNotFoundError(f"no such C source: {source.resolve()}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result: Path = _cbuild.build(
        source,
        out_dir / f"{source.stem}.wasm",
        command=command,
        optimize="-O1" if debug else "-O2",
        debug=debug,
        stack_size=stack_size,
        extra_flags=extra_flags,
        timeout=timeout,
    )
    return result


def build_all(sources: Iterable[Path], out_dir: Path, *, debug: bool = False) -> list[Path]:
    """Build each source; return the module paths in the same order."""
    return [build(source, out_dir, debug=debug) for source in sources]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build wasmhive C guests with ziglang.")
    parser.add_argument("sources", nargs="*", type=Path, help="C files (default: every example)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})")
    parser.add_argument("--debug", action="store_true", help="-O1 -g, keep debug info")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--command", dest="command", action="store_const", const=True, help="build WASI commands")
    kind.add_argument("--reactor", dest="command", action="store_const", const=False, help="build SDK guests")
    parser.add_argument(
        "--stack-size", type=int, default=DEFAULT_STACK_SIZE, help=f"stack bytes (default: {DEFAULT_STACK_SIZE})"
    )
    args = parser.parse_args(argv)
    if not available():
        print("the ziglang package is not installed: pip install ziglang", file=sys.stderr)
        return 2
    sources = args.sources or examples()
    if not sources:
        print(f"nothing to build in {EXAMPLES}", file=sys.stderr)
        return 1
    for source in sources:
        started = time.monotonic()
        try:
            out = build(source, args.out, debug=args.debug, command=args.command, stack_size=args.stack_size)
        except (BuildError, FileNotFoundError, ValueError) as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"{out}  ({out.stat().st_size} bytes, {time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
