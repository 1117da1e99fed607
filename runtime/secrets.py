"""Named, read-only secrets that deployments may be granted.

Values come from the environment (``WASMHIVE_SECRET_<NAME>``) and/or a JSON
or TOML file of ``name = "value"`` pairs.  A guest reads, through the
``secret.get`` host call, only the names granted to its deployment.  Values
never appear in logs, errors, ``repr`` or stats: only names do.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

from wasmhive.actors.errors import InvalidConfig

__all__ = ["SecretStore"]

ENV_PREFIX = "WASMHIVE_SECRET_"


class SecretStore:
    """Secret values by name."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._values = dict(values or {})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, prefix: str = ENV_PREFIX) -> SecretStore:
        """Every ``<prefix><NAME>`` variable, as secret ``NAME``."""
        env = os.environ if environ is None else environ
        return cls({k[len(prefix) :]: v for k, v in env.items() if k.startswith(prefix) and len(k) > len(prefix)})

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> SecretStore:
        """A JSON object or TOML table of string values."""
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidConfig(f"cannot read the secrets file {str(file)!r}: {exc.strerror}") from None
        try:
            data = json.loads(text) if file.suffix == ".json" else tomllib.loads(text)
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            # The parser's message may quote the file's text: keep only where it failed.
            where = getattr(exc, "lineno", None)
            raise InvalidConfig(f"the secrets file {str(file)!r} does not parse (line {where})") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise InvalidConfig(f"the secrets file {str(file)!r} must map names to string values")
        return cls(data)

    def merged(self, other: SecretStore) -> SecretStore:
        """These secrets, with ``other``'s taking precedence."""
        return SecretStore({**self._values, **other._values})

    def names(self) -> list[str]:
        return sorted(self._values)

    def grant(self, names: Iterable[str], function: str) -> dict[str, str]:
        """The values of ``names`` for one deployment; InvalidConfig names any that is missing."""
        granted: dict[str, str] = {}
        for name in names:
            if name not in self._values:
                raise InvalidConfig(f"secret {name!r} is not defined", function=function)
            granted[name] = self._values[name]
        return granted

    def __repr__(self) -> str:
        return f"SecretStore(names={self.names()})"
