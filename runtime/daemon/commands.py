"""The daemon's commands of the ``wasmhive`` CLI: deploy, invoke, ls, alias, rm (a client of the HTTP API).

::

    wasmhive deploy echo examples/echo.wat --timeout 2 --instances 2
    wasmhive invoke echo --data hi                  # the reply, raw, on stdout
    wasmhive invoke echo@prod --file payload.bin    # --file - reads stdin
    wasmhive invoke lines@2 --data $'a\\nb' --stream
    wasmhive ls                                     # functions, versions, aliases
    wasmhive ls echo                                # one function's versions
    wasmhive alias echo prod 2=90 3=10              # or: wasmhive alias echo prod 3
    wasmhive rm echo 2                              # a version; rm echo --alias prod; rm echo

Every command talks to ``--url`` (default ``$WASMHIVE_URL``, else
http://127.0.0.1:8080) with the admin token of ``--token`` (default
``$WASMHIVE_ADMIN_TOKEN``), and prints the API's JSON with ``--json``.
Errors print ``error: <Kind>: <message>`` on stderr and exit with status 1;
usage errors exit with status 2.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

import click

from .client import DEFAULT_URL, URL_ENV, DaemonClient, DaemonError
from .config import ADMIN_TOKEN_ENV

__all__ = ["alias", "deploy", "invoke", "ls", "register", "rm"]

_F = TypeVar("_F", bound=Callable[..., Any])
_SIZE = re.compile(r"(\d+)\s*([kmg]i?b?|b)?\Z", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def register(group: click.Group) -> None:
    """Add the daemon's commands to the ``wasmhive`` group."""
    for command in (deploy, invoke, ls, alias, rm):
        group.add_command(command)


# --- shared options and plumbing ---------------------------------------------------------------


def _daemon_options(func: _F) -> _F:
    """``--url``, ``--token``, ``--http-timeout`` and ``--json``, on every command."""
    func = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON (for scripts).")(func)
    func = click.option(
        "--http-timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=60.0,
        show_default=True,
        metavar="SECONDS",
        help="How long to wait for the daemon (for a stream: between chunks).",
    )(func)
    func = click.option(
        "--token",
        envvar=ADMIN_TOKEN_ENV,
        show_envvar=True,
        metavar="TOKEN",
        help="The admin token (deploy, alias, rm).",
    )(func)
    func = click.option(
        "--url",
        envvar=URL_ENV,
        default=DEFAULT_URL,
        show_default=True,
        show_envvar=True,
        help="The daemon's URL.",
    )(func)
    return func


@contextlib.contextmanager
def _client(url: str, token: str | None, http_timeout: float) -> Iterator[DaemonClient]:
    """A client; a :class:`DaemonError` inside becomes ``error: Kind: message`` and exit status 1."""
    try:
        with DaemonClient(url, token, timeout=http_timeout) as client:
            yield client
    except DaemonError as exc:
        click.echo(f"error: {exc}", err=True)
        if exc.kind == "Unauthorized" and not token:
            click.echo(f"hint: set ${ADMIN_TOKEN_ENV} or pass --token", err=True)
        raise click.exceptions.Exit(1) from None


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Columns aligned with two spaces between them; no trailing blanks."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def _ranges(versions: list[int]) -> str:
    """[1, 2, 3, 5] -> ``1-3,5``."""
    spans: list[list[int]] = []
    for v in sorted(versions):
        if spans and spans[-1][1] == v - 1:
            spans[-1][1] = v
        else:
            spans.append([v, v])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _weights_text(weights: Mapping[str, int]) -> str:
    """``{"2": 100}`` -> ``2``; ``{"2": 90, "3": 10}`` -> ``2=90 3=10`` (the syntax of ``wasmhive alias``)."""
    if len(weights) == 1:
        return next(iter(weights))
    return " ".join(f"{v}={w}" for v, w in sorted(weights.items(), key=lambda item: int(item[0])))


def _share(weight: int, total: int) -> str:
    percent = 100 * weight / total if total else 0
    return f"{percent:.1f}".removesuffix(".0") + "%"


def _human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    for unit in ("KiB", "MiB", "GiB"):
        size_f = size / 1024
        if size_f < 1024 or unit == "GiB":
            return f"{size_f:.1f} {unit}"
        size = int(size_f)
    raise AssertionError("unreachable")


def _when(created_at: Any) -> str:
    if not isinstance(created_at, (int, float)):
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created_at))


def _options_text(options: Any) -> str:
    if not isinstance(options, dict) or not options:
        return ""
    return " ".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in options.items())


def _byte_size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """``134217728``, ``128MiB``, ``64M``, ``512k``: a number of bytes."""
    if value is None:
        return None
    match = _SIZE.match(value.strip())
    if match is None:
        raise click.BadParameter(f"{value!r} is not a size (bytes, or with K/M/G, KiB/MiB/GiB)")
    unit = (match.group(2) or "").lower()[:1]
    return int(match.group(1)) * _UNITS[unit]


# --- deploy --------------------------------------------------------------------------------------


@click.command()
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--kind", type=click.Choice(["wasm", "js"]), help="[default: from the suffix (.wasm .wat .js), else the bytes]"
)
@click.option("--timeout", type=float, metavar="SECONDS", help="Longest a call may run.")
@click.option("--instances", type=click.IntRange(min=1), help="A fixed number of actors (instead of a pool).")
@click.option("--mode", type=click.Choice(["thread", "inline"]), help="Where guest code runs.")
@click.option(
    "--memory-limit",
    callback=_byte_size,
    metavar="BYTES",
    help="Most linear memory a guest may have (bytes; 64MiB, ...).",
)
@click.option(
    "--options",
    "options_json",
    metavar="JSON",
    help='More deploy options as a JSON object (docs/api.md), e.g. \'{"pool": {"max_size": 4}}\'; the flags win.',
)
@_daemon_options
def deploy(
    name: str,
    file: Path,
    kind: str | None,
    timeout: float | None,
    instances: int | None,
    mode: str | None,
    memory_limit: int | None,
    options_json: str | None,
    url: str,
    token: str | None,
    http_timeout: float,
    as_json: bool,
) -> None:
    """Upload FILE (.wasm, .wat or .js) as a new version of NAME.

    Every deploy creates a new immutable version (1, 2, ...); the 'latest'
    alias moves to it.
    """
    options: dict[str, Any] = {}
    if options_json is not None:
        try:
            parsed = json.loads(options_json)
        except ValueError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--options") from None
        if not isinstance(parsed, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--options")
        options.update(parsed)
    flags = {"timeout": timeout, "instances": instances, "mode": mode, "memory_limit": memory_limit}
    options.update({k: v for k, v in flags.items() if v is not None})
    with _client(url, token, http_timeout) as client:
        record = client.deploy(name, file, kind=kind, options=options or None)
    if as_json:
        _print_json(record)
        return
    digest = str(record.get("digest", ""))[:12]
    line = f"deployed {record.get('name', name)}@{record.get('version')}  ({record.get('kind')}, "
    line += f"{_human_size(int(record.get('size', 0)))}, sha256 {digest})"
    click.echo(line)
    extra = _options_text(record.get("options"))
    if extra:
        click.echo(f"options: {extra}")


# --- invoke --------------------------------------------------------------------------------------


@click.command()
@click.argument("target", metavar="NAME[@ALIAS|@VERSION]")
@click.option("-d", "--data", help="The payload, as text.  [default: empty]")
@click.option("-f", "--file", "file", type=click.File("rb"), help="Read the payload from a file ('-': stdin).")
@click.option("--stream", is_flag=True, help="Write the reply's chunks as they arrive.")
@click.option("--key", help="Calls with the same key go to the same actor.")
@_daemon_options
def invoke(
    target: str,
    data: str | None,
    file: IO[bytes] | None,
    stream: bool,
    key: str | None,
    url: str,
    token: str | None,
    http_timeout: float,
    as_json: bool,
) -> None:
    """Call NAME (its latest version), NAME@ALIAS or NAME@VERSION.

    The reply goes to stdout as it is, bytes and all.  With --json: an
    object with "reply" (or "reply_base64" when it is not UTF-8), "version"
    and "request_id"; with --stream --json, one JSON line per chunk ("chunk"
    or "chunk_base64"), then a "done" line.
    """
    if data is not None and file is not None:
        raise click.UsageError("give either --data or --file, not both")
    payload = data.encode() if data is not None else file.read() if file is not None else b""
    with _client(url, token, http_timeout) as client:
        if not stream:
            reply, headers = client.invoke(target, payload, key=key)
            if as_json:
                body: dict[str, Any] = {"target": target, "version": _int_or_none(headers.get("x-wasmhive-version"))}
                body["request_id"] = headers.get("x-request-id")
                body.update(_text_or_base64("reply", reply))
                _print_json(body)
            else:
                click.echo(reply, nl=False)
            return
        with client.stream(target, payload, key=key) as chunks:
            for chunk in chunks:
                # click.echo flushes: each chunk shows as soon as it arrives
                if as_json:
                    click.echo(json.dumps(_text_or_base64("chunk", chunk)))
                else:
                    click.echo(chunk, nl=False)
            if as_json:
                click.echo(json.dumps({"done": True, "version": chunks.version, "request_id": chunks.request_id}))


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def _text_or_base64(field: str, data: bytes) -> dict[str, str]:
    try:
        return {field: data.decode()}
    except UnicodeDecodeError:
        return {f"{field}_base64": base64.b64encode(data).decode()}


# --- ls ------------------------------------------------------------------------------------------


@click.command()
@click.argument("name", required=False)
@_daemon_options
def ls(name: str | None, url: str, token: str | None, http_timeout: float, as_json: bool) -> None:
    """List functions and aliases, or with NAME its versions."""
    with _client(url, token, http_timeout) as client:
        if name is None:
            functions = client.functions()
            if as_json:
                _print_json({"functions": functions})
            else:
                _print_functions(functions)
            return
        function = client.function(name)
    if as_json:
        _print_json(function)
    else:
        _print_function(function)


def _print_functions(functions: list[dict[str, Any]]) -> None:
    if not functions:
        click.echo("no functions deployed")
        return
    rows = []
    for f in functions:
        aliases = f.get("aliases") or {}
        alias_text = ", ".join(f"{a} -> {_weights_text(w)}" for a, w in aliases.items())
        rows.append([str(f.get("name")), _ranges([int(v) for v in f.get("versions") or []]), alias_text])
    click.echo(_table(["NAME", "VERSIONS", "ALIASES"], rows))


def _print_function(function: dict[str, Any]) -> None:
    aliases: dict[str, dict[str, int]] = function.get("aliases") or {}
    by_version: dict[str, list[str]] = {}
    for alias_name, weights in aliases.items():
        total = sum(weights.values())
        for version, weight in weights.items():
            label = alias_name if len(weights) == 1 else f"{alias_name} ({_share(weight, total)})"
            by_version.setdefault(str(version), []).append(label)
    rows = []
    errors = []
    for v in function.get("versions") or []:
        version = str(v.get("version"))
        rows.append(
            [
                version,
                str(v.get("digest", ""))[:12],
                str(v.get("kind", "")),
                _human_size(int(v.get("size", 0))),
                _when(v.get("created_at")),
                str(v.get("status", "")),
                ", ".join(by_version.get(version, [])),
                _options_text(v.get("options")),
            ]
        )
        if v.get("error"):
            errors.append(f"version {version}: {v['error']}")
    header = ["VERSION", "DIGEST", "KIND", "SIZE", "CREATED", "STATUS", "ALIASES", "OPTIONS"]
    click.echo(f"{function.get('name')}: {len(rows)} version{'s' if len(rows) != 1 else ''}")
    click.echo(_table(header, rows))
    for error in errors:
        click.echo(error)


# --- alias ---------------------------------------------------------------------------------------


def _parse_weights(specs: tuple[str, ...]) -> dict[int, int]:
    """``("3",)`` -> {3: 100}; ``("2=90", "3=10")`` -> {2: 90, 3: 10}."""
    if len(specs) == 1 and specs[0].isdigit():
        return {int(specs[0]): 100}
    weights: dict[int, int] = {}
    for spec in specs:
        version, sep, weight = spec.partition("=")
        if not sep or not version.strip().isdigit() or not weight.strip().isdigit():
            raise click.BadParameter(
                f"{spec!r}: give one VERSION, or VERSION=WEIGHT pairs such as 2=90 3=10", param_hint="VERSIONS"
            )
        if int(version) in weights:
            raise click.BadParameter(f"version {int(version)} is given twice", param_hint="VERSIONS")
        weights[int(version)] = int(weight)
    return weights


@click.command()
@click.argument("name")
@click.argument("alias_name", metavar="ALIAS")
@click.argument("versions", nargs=-1, required=True)
@_daemon_options
def alias(
    name: str,
    alias_name: str,
    versions: tuple[str, ...],
    url: str,
    token: str | None,
    http_timeout: float,
    as_json: bool,
) -> None:
    """Point ALIAS of NAME at one version or at weighted versions.

    \b
      wasmhive alias echo prod 3             # all calls of echo@prod go to version 3
      wasmhive alias echo prod 2=90 3=10     # 90% to version 2, 10% to version 3

    Moving an alias back is an instant rollback.
    """
    weights = _parse_weights(versions)
    with _client(url, token, http_timeout) as client:
        result = client.set_alias(name, alias_name, weights)
    if as_json:
        _print_json(result)
        return
    given: dict[str, int] = result.get("weights") or {str(v): w for v, w in weights.items()}
    total = sum(given.values())
    if len(given) == 1:
        target = next(iter(given))
    else:
        target = ", ".join(f"{v} ({_share(w, total)})" for v, w in sorted(given.items(), key=lambda i: int(i[0])))
    click.echo(f"{name}@{alias_name} -> {target}")


# --- rm ------------------------------------------------------------------------------------------


@click.command()
@click.argument("name")
@click.argument("version", type=click.IntRange(min=1), required=False)
@click.option("--alias", "alias_name", metavar="ALIAS", help="Remove this alias instead (not 'latest').")
@_daemon_options
def rm(
    name: str,
    version: int | None,
    alias_name: str | None,
    url: str,
    token: str | None,
    http_timeout: float,
    as_json: bool,
) -> None:
    """Remove function NAME, one VERSION of it, or one --alias.

    Without VERSION or --alias every version and alias goes.  A version that
    an alias other than 'latest' still uses cannot be removed: point the
    alias elsewhere first.
    """
    if version is not None and alias_name is not None:
        raise click.UsageError("give either VERSION or --alias, not both")
    with _client(url, token, http_timeout) as client:
        if alias_name is not None:
            client.delete_alias(name, alias_name)
            result: dict[str, Any] = {"name": name, "alias": alias_name, "deleted": True}
            message = f"deleted alias {name}@{alias_name}"
        elif version is not None:
            result = client.delete_version(name, version)
            message = f"deleted {name}@{version}"
        else:
            result = client.delete_function(name)
            deleted = [str(v) for v in result.get("deleted") or []]
            message = f"deleted {name} (version{'s' if len(deleted) != 1 else ''} {', '.join(deleted)})"
    if as_json:
        _print_json(result)
    else:
        click.echo(message)
