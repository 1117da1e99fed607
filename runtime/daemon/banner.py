"""The start-up banner: example commands for the bundled functions, ready to paste."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from .config import DaemonConfig

__all__ = ["banner"]


def banner(config: DaemonConfig, url: str) -> str:
    """Lines of curl and CLI commands that work against ``url`` as printed."""
    cli = _cli_path()
    lines = ["", "Try it (from another terminal):"]
    first = None
    for f in config.deploy:
        if f.example is None:
            continue
        first = first or f.name
        route = "stream" if f.streams else "invoke"
        if "\n" in f.example:
            printf = "printf " + shlex.quote(f.example.replace("\\", "\\\\").replace("\n", "\\n"))
            lines.append(f"  {printf} | curl -N --data-binary @- {url}/v1/{route}/{f.name}")
        else:
            lines.append(f"  curl -d {shlex.quote(f.example)} {url}/v1/{route}/{f.name}")
    lines.append(f"  curl {url}/v1/functions")
    lines.append(f"  curl -s {url}/metrics | grep wasmhive_requests_total")
    url_flag = "" if url == "http://127.0.0.1:8080" else f" --url {url}"
    lines.append(f"  {cli} ls{url_flag}")
    if first is not None:
        example = next(f.example for f in config.deploy if f.name == first)
        assert example is not None
        lines.append(f"  {cli} invoke {first} --data {shlex.quote(example)}{url_flag}")
    lines.append("API: docs/api.md.  Stop with Ctrl-C (graceful).")
    return "\n".join(lines)


def _cli_path() -> str:
    """How to run the ``wasmhive`` command from here: its name if it is on PATH, else a path to it."""
    script = Path(sys.executable).parent / "wasmhive"
    on_path = any(Path(p, "wasmhive") == script for p in os.environ.get("PATH", "").split(os.pathsep) if p)
    if on_path or not script.exists():
        return "wasmhive"
    try:
        relative = os.path.relpath(script)
    except ValueError:
        return str(script)
    return relative if relative.startswith(".") else f"./{relative}"
