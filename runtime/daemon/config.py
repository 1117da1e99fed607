"""The daemon's configuration: a TOML file validated by msgspec.

::

    data_dir = "/var/lib/wasmhive"

    [server]
    host = "127.0.0.1"
    port = 8080
    admin_token = "..."          # or the WASMHIVE_ADMIN_TOKEN environment variable

    [defaults]                   # options of every function unless it says otherwise
    timeout = 5.0
    pool = { min_size = 1, max_size = 8 }

    [functions.resize]           # options of one function, over the defaults
    memory_limit = 134217728
    breaker = { failure_threshold = 3, wait_in_open = 10.0 }

    [[deploy]]                   # deployed at start-up (a new version only when the file changed)
    name = "echo"
    path = "examples/echo.wat"   # relative to this file

Every mistake raises :class:`ConfigError` with a message that names the
field (``server.port``, ``functions.resize.pool.max_size``) and says what is wrong.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from wasmhive.actors.errors import InvalidConfig, WasmhiveError
from wasmhive.runtime.config import DeployOptions, RuntimeConfig
from wasmhive.supervisors.autoscaler import PoolPolicy
from wasmhive.supervisors.breaker import BreakerPolicy
from wasmhive.supervisors.bulkhead import BulkheadPolicy
from wasmhive.supervisors.retry import RetryPolicy

__all__ = [
    "ADMIN_TOKEN_ENV",
    "BundledFunction",
    "ConfigError",
    "DaemonConfig",
    "FunctionOptions",
    "ServerConfig",
    "default_data_dir",
    "is_loopback",
    "load_config",
]

MiB = 1024 * 1024
_T = TypeVar("_T")

#: The environment variable that holds the admin token (server and CLI).
ADMIN_TOKEN_ENV = "WASMHIVE_ADMIN_TOKEN"


class ConfigError(WasmhiveError):
    """The daemon's configuration is invalid; the message names the field."""


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/wasmhive`` (``~/.local/share/wasmhive``)."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "wasmhive"


class FunctionOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """Deploy options of a function; unset fields (None) fall back to the defaults.

    The scalar fields are those of :meth:`wasmhive.runtime.Runtime.deploy`;
    ``pool``, ``breaker``, ``retry`` and ``bulkhead`` are the supervisors'
    policies (docs/supervisors.md).  ``secrets`` names the secrets the guest
    may read.
    """

    kind: Literal["wasm", "js"] | None = None
    mode: Literal["thread", "inline"] | None = None
    timeout: float | None = None
    memory_limit: int | None = None
    fuel: int | None = None
    mailbox_size: int | None = None
    overflow: Literal["wait", "reject"] | None = None
    mailbox_wait: float | None = None
    instances: int | None = None
    pool: PoolPolicy | None = None
    breaker: BreakerPolicy | None = None
    retry: RetryPolicy | None = None
    bulkhead: BulkheadPolicy | None = None
    secrets: list[str] | None = None

    def __post_init__(self) -> None:
        scalars = {k: getattr(self, k) for k in _SCALARS}
        try:
            DeployOptions.build(**scalars)
        except InvalidConfig as exc:  # (a ValueError: msgspec adds where it is)
            raise ValueError(exc.message.removeprefix("invalid deploy option: ")) from None
        if self.pool is not None and self.instances is not None:
            raise ValueError("give either instances or a pool, not both")

    def over(self, base: FunctionOptions) -> FunctionOptions:
        """These options, with every unset field taken from ``base``."""
        mine = msgspec.structs.asdict(self)
        theirs = msgspec.structs.asdict(base)
        merged = {k: (v if v is not None else theirs[k]) for k, v in mine.items()}
        if self.instances is not None:  # a function's own size wins over a default pool, and the reverse
            merged["pool"] = self.pool
        elif self.pool is not None:
            merged["instances"] = None
        return FunctionOptions(**merged)

    def deploy_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :meth:`Runtime.deploy` (unset ones left out)."""
        given = {k: v for k, v in msgspec.structs.asdict(self).items() if v is not None}
        if "secrets" in given:
            given["secrets"] = tuple(given["secrets"])
        return given

    def to_json(self) -> dict[str, Any]:
        """The options as JSON-able data (what the registry records with a version)."""
        # Through JSON and back: tuples become lists, exactly as the registry gives them back,
        # so that recorded options compare equal to fresh ones.
        data: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(self))
        return data

    @classmethod
    def from_json(cls, data: Any, *, where: str = "options") -> FunctionOptions:
        """Validate JSON-like data (a request's options, a recorded version's)."""
        return _convert(data, cls, where)


_SCALARS = ("mode", "timeout", "memory_limit", "fuel", "mailbox_size", "overflow", "mailbox_wait", "instances")


class ServerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The HTTP server's settings."""

    host: str = "127.0.0.1"
    port: int = 8080
    #: Needed for deploy, alias and delete when set; the daemon refuses to bind a
    #: non-loopback address without one.  Default: $WASMHIVE_ADMIN_TOKEN.
    admin_token: str | None = None
    #: Largest request body (bytes): payloads and uploaded modules.
    max_body_bytes: int = 16 * MiB
    #: Longest an invoke may take end to end (seconds), then 504 RequestTimeout.
    request_timeout: float = 30.0
    #: On SIGTERM/SIGINT: how long calls in flight may take to finish (seconds).
    shutdown_grace: float = 10.0
    #: One JSON line per invocation on stderr.
    access_log: bool = True
    #: Serve ``POST /v1/bare``, which answers with the request body without any
    #: function (for the HTTP benchmark's baseline).
    bench_endpoint: bool = False
    #: Append one JSON line per guest entry to this file (for ``wasmhive stress``
    #: against a daemon: it counts executions at the guest boundary).  Off: None.
    trace_executions: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        for field in ("max_body_bytes", "request_timeout"):
            if not getattr(self, field) > 0:
                raise ValueError(f"{field} must be > 0, got {getattr(self, field)}")
        if self.shutdown_grace < 0:
            raise ValueError(f"shutdown_grace must be >= 0, got {self.shutdown_grace}")
        if self.admin_token is not None and len(self.admin_token) < 16:
            raise ValueError("admin_token must be at least 16 characters")


class BundledFunction(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A function the daemon deploys at start-up from a file."""

    name: str
    #: A .wasm, .wat or .js file; relative paths are relative to the config file.
    path: str
    options: FunctionOptions = FunctionOptions()
    #: Extra aliases to point at the deployed version (``latest`` always is).
    aliases: list[str] = []
    #: A payload shown in the start-up banner's example commands.
    example: str | None = None
    #: The banner shows the streaming route for this function.
    streams: bool = False


class DaemonConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole configuration of ``wasmhive serve``."""

    #: Registry, module store and compile cache.  Default: :func:`default_data_dir`.
    data_dir: str | None = None
    server: ServerConfig = ServerConfig()
    #: Engine and limits of the embedded runtime (``cache_dir`` defaults to DATA_DIR/cache).
    runtime: RuntimeConfig = RuntimeConfig()
    #: Options of every function.
    defaults: FunctionOptions = FunctionOptions()
    #: Options of named functions, over the defaults.
    functions: dict[str, FunctionOptions] = {}
    #: Functions deployed at start-up.
    deploy: list[BundledFunction] = []

    def options_for(self, name: str, given: FunctionOptions | None = None) -> FunctionOptions:
        """The options a deploy of ``name`` gets: ``given``, over the function's, over the defaults."""
        options = self.defaults
        own = self.functions.get(name)
        if own is not None:
            options = own.over(options)
        if given is not None:
            options = given.over(options)
        return options

    @property
    def resolved_data_dir(self) -> Path:
        return Path(self.data_dir).expanduser() if self.data_dir else default_data_dir()

    def runtime_config(self) -> RuntimeConfig:
        """The runtime's settings, with the compile cache inside the data dir unless set."""
        if self.runtime.cache_dir is not None:
            return self.runtime
        return msgspec.structs.replace(self.runtime, cache_dir=str(self.resolved_data_dir / "cache"))

    def admin_token(self) -> str | None:
        """The configured token, else $WASMHIVE_ADMIN_TOKEN, else None."""
        return self.server.admin_token or os.environ.get(ADMIN_TOKEN_ENV) or None

    def check_bind(self) -> None:
        """Refuse a non-loopback address without an admin token, and a short token from the environment."""
        from_env = os.environ.get(ADMIN_TOKEN_ENV)
        if not self.server.admin_token and from_env and len(from_env) < 16:
            raise ConfigError(f"${ADMIN_TOKEN_ENV}: the admin token must be at least 16 characters")
        if not is_loopback(self.server.host) and self.admin_token() is None:
            raise ConfigError(
                f"server.host: {self.server.host!r} is not a loopback address; set server.admin_token "
                f"(or ${ADMIN_TOKEN_ENV}) so that deploy, alias and delete need it"
            )


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (``localhost``, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_config(path: Path | None = None, **overrides: Any) -> DaemonConfig:
    """Read and validate a config file (None: all defaults), then apply overrides.

    ``overrides`` are ``host``, ``port``, ``data_dir`` (from the command line;
    None means not given).  Relative paths in the file are resolved against
    the file's directory.
    """
    data: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the config file {str(path)!r}: {exc.strerror}") from None
        try:
            data = msgspec.toml.decode(text)
        except msgspec.DecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        base = path.resolve().parent
    server = dict(data.get("server") or {})
    for key in ("host", "port"):
        if overrides.get(key) is not None:
            server[key] = overrides[key]
    if server:
        data["server"] = server
    if overrides.get("data_dir") is not None:
        data["data_dir"] = str(overrides["data_dir"])
    config = _convert(data, DaemonConfig, "")
    return _resolve_paths(config, base)


def _resolve_paths(config: DaemonConfig, base: Path) -> DaemonConfig:
    def resolve(value: str) -> str:
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else base / p)

    deploy = [msgspec.structs.replace(f, path=resolve(f.path)) for f in config.deploy]
    runtime = config.runtime
    if runtime.cache_dir is not None:
        runtime = msgspec.structs.replace(runtime, cache_dir=resolve(runtime.cache_dir))
    if runtime.secrets_file is not None:
        runtime = msgspec.structs.replace(runtime, secrets_file=resolve(runtime.secrets_file))
    data_dir = resolve(config.data_dir) if config.data_dir else None
    server = config.server
    if server.trace_executions is not None:
        server = msgspec.structs.replace(server, trace_executions=resolve(server.trace_executions))
    config = msgspec.structs.replace(config, deploy=deploy, runtime=runtime, data_dir=data_dir, server=server)
    for i, f in enumerate(config.deploy):
        if not Path(f.path).is_file():
            raise ConfigError(f"deploy[{i}].path: no such file: {f.path}")
    return config


def _convert(data: Any, type_: type[_T], where: str) -> _T:
    """msgspec.convert with errors that name the field, also for the policies' own checks."""
    try:
        return msgspec.convert(data, type_)
    except msgspec.ValidationError as exc:  # (a policy's own InvalidConfig too: it is a ValueError)
        raise ConfigError(_field_message(str(exc), where, data)) from None


def _field_message(text: str, where: str, data: Any = None) -> str:
    """'Expected `int`, got `str` - at `$.server.port`' -> 'server.port: expected `int`, got `str`'."""
    message, sep, at = text.rpartition(" - at `")
    if not sep:
        return f"{where}: {text}" if where else text
    path = _name_function(at.rstrip("`").removeprefix("$").lstrip("."), data)
    field = ".".join(p for p in (where, path) if p)
    return f"{field}: {message[:1].lower()}{message[1:]}" if field else message


def _name_function(path: str, data: Any) -> str:
    """msgspec writes the key of a dict's entry as ``[...]``: put the name of the failing function there."""
    if not path.startswith("functions[...]") or not isinstance(data, dict):
        return path
    functions = data.get("functions")
    if isinstance(functions, dict):
        for name, options in functions.items():
            try:
                msgspec.convert(options, FunctionOptions)
            except msgspec.ValidationError:
                return f"functions.{name}{path.removeprefix('functions[...]')}"
    return path
