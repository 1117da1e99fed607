"""Build C guests for wasmhive with the ``ziglang`` package (zig's bundled clang).

Usage::

    python guest/c/build.py [--out DIR] [--debug] [SOURCE.c ...]

Without sources it builds every example in ``guest/c/examples/`` to
``guest/c/build/<name>.wasm`` (or ``DIR/<name>.wasm``).  Importable too::

    from build import build          # with guest/c on sys.path
    wasm = build(Path("guest/c/examples/echo.c"), Path("/tmp/out"))

The first build on a machine takes about a minute (zig builds wasi-libc once and
caches it in its global cache directory); later builds take well under a second.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE / "examples"
DEFAULT_OUT = HERE / "build"

#: Shadow stack size.  zig's default (16 MiB) would make every instance start
#: with over 16 MiB of memory; 1 MiB is plenty for guests that keep big buffers
#: in the arena or on the heap.
DEFAULT_STACK_SIZE = 1 << 20

#: Flags for every guest: a WASI reactor (exports _initialize, never _start).
CFLAGS: tuple[str, ...] = (
    "-target",
    "wasm32-wasi",
    "-mexec-model=reactor",
    "-Wall",
    "-Wextra",
    "-Werror=implicit-function-declaration",
)

__all__ = ["CFLAGS", "DEFAULT_STACK_SIZE", "EXAMPLES", "BuildError", "available", "build", "build_all", "examples"]


class BuildError(RuntimeError):
    """The compiler failed; the message holds its output."""


def available() -> bool:
    """Whether the ``ziglang`` package is installed for this interpreter."""
    return importlib.util.find_spec("ziglang") is not None


def examples() -> list[Path]:
    """The example sources, sorted by name."""
    return sorted(EXAMPLES.glob("*.c"))


def build(
    source: Path,
    out_dir: Path,
    *,
    debug: bool = False,
    stack_size: int = DEFAULT_STACK_SIZE,
    extra_flags: Sequence[str] = (),
    timeout: float = 600.0,
) -> Path:
    """Compile one C guest to ``out_dir/<stem>.wasm`` and return that path.

    ``debug`` keeps debug info and builds with ``-O1 -g`` (the module is far
    larger); otherwise ``-O2`` and stripped.  ``stack_size`` (bytes, a
    multiple of 16) sets the shadow stack.  Raises :class:`BuildError` if the
    compiler fails, :class:`FileNotFoundError` if ``source`` does not exist.
    """
    source = Path(source).resolve()
    if stack_size <= 0 or stack_size % 16:
        raise ValueError(f"stack_size must be a positive multiple of 16, got {stack_size}")
    if not source.is_file():
        raise FileNotFoundError(f"no such C source: {source}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{source.stem}.wasm"
    # Write to a temporary name first, so an interrupted build never leaves a
    # truncated module behind under the real name.
    tmp = out_dir / f".{source.stem}.{os.getpid()}.tmp.wasm"
    opt = ["-O1", "-g"] if debug else ["-O2", "-s"]
    cmd = [
        sys.executable,
        "-m",
        "ziglang",
        "cc",
        *CFLAGS,
        *opt,
        f"-Wl,-z,stack-size={stack_size}",
        "-I",
        str(HERE),
        *extra_flags,
        "-o",
        str(tmp),
        str(source),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        tmp.unlink(missing_ok=True)
        raise BuildError(f"building {source.name} took more than {timeout:g} s") from exc
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        output = (proc.stderr + proc.stdout).strip()
        raise BuildError(f"building {source.name} failed (exit {proc.returncode}):\n{output}")
    os.replace(tmp, out)
    return out


def build_all(sources: Iterable[Path], out_dir: Path, *, debug: bool = False) -> list[Path]:
    """Build each source; return the module paths in the same order."""
    return [build(source, out_dir, debug=debug) for source in sources]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build wasmhive C guests with ziglang.")
    parser.add_argument("sources", nargs="*", type=Path, help="C files (default: every example)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})")
    parser.add_argument("--debug", action="store_true", help="-O1 -g, keep debug info")
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
            out = build(source, args.out, debug=args.debug, stack_size=args.stack_size)
        except (BuildError, FileNotFoundError, ValueError) as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"{out}  ({out.stat().st_size} bytes, {time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
