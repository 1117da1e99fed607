"""The ``wasmhive`` command line (runtime/cli.py), run in-process with click's CliRunner."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from wasmhive.runtime import GuestError, Runtime
from wasmhive.runtime.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "guest" / "c" / "examples"

needs_zig = pytest.mark.skipif(
    importlib.util.find_spec("ziglang") is None,
    reason="building C guests needs the ziglang package (pip install ziglang)",
)


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_help_lists_build() -> None:
    code, output = run("--help")
    assert code == 0
    assert "build" in output
    code, output = run("build", "--help")
    assert code == 0
    assert "--command / --reactor" in output and "-o, --out" in output


def test_console_script_is_registered() -> None:
    (entry,) = importlib.metadata.entry_points(group="console_scripts", name="wasmhive")
    assert entry.value == "wasmhive.runtime.cli:main"
    assert entry.load() is main


@pytest.fixture(scope="module")
def echo_wasm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """echo.c built once with `wasmhive build ... -o ...`: the module and the CLI's output."""
    out = tmp_path_factory.mktemp("cli") / "echo.wasm"
    code, output = run("build", str(EXAMPLES / "echo.c"), "-o", str(out))
    assert code == 0, output
    return out, output


@needs_zig
def test_build_reports_the_module(echo_wasm: tuple[Path, str]) -> None:
    out, output = echo_wasm
    assert out.read_bytes()[:4] == b"\0asm"
    assert str(out) in output and "reactor" in output and "bytes" in output


@needs_zig
@pytest.mark.trio
async def test_built_module_deploys_and_echoes(rt: Runtime, echo_wasm: tuple[Path, str]) -> None:
    out, _ = echo_wasm
    await rt.deploy("echo", out)
    assert await rt.invoke("echo", b"hello from the cli") == b"hello from the cli"


@needs_zig
def test_build_writes_next_to_the_source_by_default(tmp_path: Path) -> None:
    source = tmp_path / "hello.c"
    shutil.copy(EXAMPLES / "echo.c", source)  # wasmhive.h comes from the package
    code, output = run("build", str(source))
    assert code == 0, output
    assert (tmp_path / "hello.wasm").read_bytes()[:4] == b"\0asm"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, output = run("build", str(source), "-o", str(out_dir), "-O2")
    assert code == 0, output
    assert (out_dir / "hello.wasm").is_file()


@needs_zig
@pytest.mark.trio
async def test_build_a_command(rt: Runtime, tmp_path: Path) -> None:
    out = tmp_path / "upper.wasm"
    code, output = run("build", str(EXAMPLES / "upper.c"), "-o", str(out))  # main(): a command
    assert code == 0, output
    assert "command" in output
    await rt.deploy("upper", out)
    assert await rt.invoke("upper", b"shout") == b"SHOUT"
    with pytest.raises(GuestError) as info:
        await rt.invoke("upper", b"!")
    assert info.value.details["exit_code"] == 7


@needs_zig
def test_build_reactor_flag(tmp_path: Path) -> None:
    import wasmtime

    out = tmp_path / "upper.wasm"
    code, output = run("build", str(EXAMPLES / "upper.c"), "-o", str(out), "--reactor")
    assert code == 0, output
    assert "reactor" in output
    exports = {e.name for e in wasmtime.Module(wasmtime.Engine(), out.read_bytes()).exports}
    assert "_start" not in exports and "_initialize" in exports


def test_missing_source(tmp_path: Path) -> None:
    code, output = run("build", str(tmp_path / "nope.c"))
    assert code != 0
    assert "nope.c" in output and "does not exist" in output
    assert not list(tmp_path.iterdir())


@needs_zig
def test_compile_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.c"
    bad.write_text('#define WASMHIVE_IMPLEMENTATION\n#include "wasmhive.h"\nint handle(void) { return nope; }\n')
    code, output = run("build", str(bad))
    assert code == 1
    assert "building bad.c failed" in output
    assert "nope" in output and "error" in output  # the compiler's own message
    assert [p.name for p in tmp_path.iterdir()] == ["bad.c"]  # no module, no temporary file


def test_bad_stack_size(tmp_path: Path) -> None:
    source = tmp_path / "x.c"
    source.write_text("int main(void) { return 0; }\n")
    code, output = run("build", str(source), "--stack-size", "1000")
    assert code != 0
    assert "multiple of 16" in output
