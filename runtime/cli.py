"""The ``wasmhive`` command line.

::

    wasmhive build hello.c                 # -> hello.wasm
    wasmhive build hello.c -o out/h.wasm   # or -o DIR/ for DIR/hello.wasm
    wasmhive build --command tool.c        # a WASI command (default: decided from the source)

``main`` is a click group: add a subcommand with ``@main.command()`` in this
module (or ``main.add_command(...)`` from another one).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from . import cbuild

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="wasmhive", prog_name="wasmhive")
def main() -> None:
    """wasmhive: a supervised actor runtime for untrusted WebAssembly."""


@main.command()
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path),
    help="The module to write, or an existing directory for <stem>.wasm.  [default: SOURCE with .wasm]",
)
@click.option(
    "--command/--reactor",
    "command",
    default=None,
    help="A WASI command (main(): stdin in, stdout out, once per call) or an SDK guest (wasmhive.h).  "
    "[default: a command if the source defines main() and not WASMHIVE_IMPLEMENTATION]",
)
@click.option(
    "-O",
    "--optimize",
    type=click.Choice(["0", "1", "2", "3", "s", "z"]),
    default="2",
    show_default=True,
    help="Optimization level (-O2, -Os, ...).",
)
@click.option("-g", "--debug", is_flag=True, help="Keep debug info (a far larger module); default: stripped.")
@click.option(
    "--stack-size",
    type=click.IntRange(min=16),
    default=cbuild.DEFAULT_STACK_SIZE,
    show_default=True,
    help="Shadow stack bytes (a multiple of 16).",
)
@click.option(
    "-I",
    "include_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Another include directory (repeatable); wasmhive.h's is always there.",
)
def build(
    source: Path,
    out: Path | None,
    command: bool | None,
    optimize: str,
    debug: bool,
    stack_size: int,
    include_dirs: tuple[Path, ...],
) -> None:
    """Compile a C guest to a wasm module.

    Uses zig's clang from the ziglang package (pip install ziglang).  A
    guest that uses the C SDK (#define WASMHIVE_IMPLEMENTATION, #include
    "wasmhive.h") becomes a reactor exporting the ABI v1 functions; a plain
    program with main() becomes a WASI command.  The first build on a
    machine takes up to a minute while zig builds and caches wasi-libc.
    """
    if command is None:
        command = cbuild.is_command(source.read_text(encoding="utf-8", errors="replace"))
    started = time.monotonic()
    try:
        module = cbuild.build(
            source,
            out,
            command=command,
            optimize=f"-O{optimize}",
            debug=debug,
            stack_size=stack_size,
            include_dirs=include_dirs,
        )
    except (cbuild.BuildError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    kind = "command" if command else "reactor"
    elapsed = time.monotonic() - started
    click.echo(f"{module}  ({module.stat().st_size} bytes, {kind}, {elapsed:.1f} s)")


@main.command()
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A TOML config file (docs/api.md#configuration).  [default: all defaults]",
)
@click.option("--host", help="Address to bind.  [default: server.host, 127.0.0.1]")
@click.option("--port", type=int, help="Port to bind (0: any free port).  [default: server.port, 8080]")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Registry, modules and compile cache.  [default: data_dir, ~/.local/share/wasmhive]",
)
def serve(config_path: Path | None, host: str | None, port: int | None, data_dir: Path | None) -> None:
    """Run the daemon: the HTTP API to deploy, version, alias and invoke functions (docs/api.md).

    Stops gracefully on SIGTERM or SIGINT.  An invalid config exits with status 2.
    """
    from .daemon.config import ConfigError, load_config
    from .daemon.server import run_daemon

    try:
        config = load_config(config_path, host=host, port=port, data_dir=data_dir)
        config.check_bind()
        run_daemon(config)
    except ConfigError as exc:
        click.echo(f"wasmhive serve: invalid config: {exc.message}", err=True)
        sys.exit(2)


# deploy, invoke, ls, alias, rm: clients of a running daemon (runtime/daemon/commands.py)
from .daemon.commands import register as _register_daemon_commands  # noqa: E402

_register_daemon_commands(main)

# stress: the fault-injection harness (runtime/stress/, docs/stress.md)
from .stress.command import stress as _stress  # noqa: E402

main.add_command(_stress)


if __name__ == "__main__":
    main()
