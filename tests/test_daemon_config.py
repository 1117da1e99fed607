"""``wasmhive serve`` and its config: invalid configs exit 2 naming the field; binding rules.

Runs the real command (tests/daemon.py).
"""

from __future__ import annotations

from pathlib import Path

import guests
import httpx
import pytest
from daemon import Daemon, run_serve

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TOKEN = "config-test-token-0123456789"


@pytest.mark.parametrize(
    ("config", "field", "problem"),
    [
        ('[server]\nport = "x"\n', "server.port", "expected `int`, got `str`"),
        ("[server]\nport = 70000\n", "server", "port must be 0..65535"),
        ("[server]\nbogus = 1\n", "server", "unknown field `bogus`"),
        ("nope = 1\n", "", "unknown field `nope`"),
        ('[server]\nadmin_token = "short"\n', "server", "admin_token must be at least 16 characters"),
        ("[server]\nrequest_timeout = 0\n", "server", "request_timeout must be > 0"),
        ("[functions.resize]\npool = { min_size = 5, max_size = 2 }\n", "functions.resize.pool", "min_size"),
        ("[functions.resize]\ntimeout = -1\n", "functions.resize", "timeout must be > 0"),
        ('[functions.resize]\nmode = "fast"\n', "functions.resize.mode", "invalid enum value 'fast'"),
        ('[functions.resize]\npool = { min_size = "a" }\n', "functions.resize.pool.min_size", "expected `int`"),
        ("[defaults]\nbreaker = { failure_threshold = 0 }\n", "defaults.breaker", "failure_threshold"),
        ("[defaults]\ninstances = 2\npool = { max_size = 3 }\n", "defaults", "either instances or a pool"),
        ("[runtime]\nmax_payload_bytes = 0\n", "runtime", "max_payload_bytes must be > 0"),
        ('[[deploy]]\nname = "echo"\npath = "nope.wat"\n', "deploy[0].path", "no such file"),
        ('[[deploy]]\nname = "echo"\n', "deploy[0]", "missing required field `path`"),
        ("[server\n", "wasmhive.toml", "not valid TOML"),
    ],
)
def test_invalid_config_exits_2_naming_the_field(tmp_path: Path, config: str, field: str, problem: str) -> None:
    # No --port: the file's server.port must count.
    result = run_serve(tmp_path, config, port=None, timeout=30)
    assert result.returncode == 2, (result.returncode, result.stderr)
    message = result.stderr.strip()
    assert message.startswith("wasmhive serve: invalid config: "), message
    detail = message.removeprefix("wasmhive serve: invalid config: ")
    if field:
        assert detail.startswith(f"{field}: ") or field in detail.split(": ")[0], detail
    assert problem in detail, detail
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "data").exists()  # nothing was created


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = run_serve(tmp_path, args=["-c", str(tmp_path / "absent.toml")])
    assert result.returncode == 2
    assert "cannot read the config file" in result.stderr
    assert "absent.toml" in result.stderr


def test_a_bundled_function_that_does_not_deploy_fails_the_start(tmp_path: Path) -> None:
    (tmp_path / "broken.wat").write_text("(module (func $oops")
    result = run_serve(tmp_path, '[[deploy]]\nname = "broken"\npath = "broken.wat"\n')
    assert result.returncode == 2, result.stderr
    assert "wasmhive serve: invalid config: deploy[0] ('broken', " in result.stderr
    assert "not a WebAssembly module" in result.stderr
    assert "Traceback" not in result.stderr
    assert "listening on" not in result.stdout


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_non_loopback_without_token_exits_2(tmp_path: Path, host: str) -> None:
    result = run_serve(tmp_path, args=["--host", host])
    assert result.returncode == 2, result.stderr
    assert "server.host" in result.stderr
    assert "admin_token" in result.stderr
    assert "listening on" not in result.stdout


def test_a_short_token_from_the_environment_exits_2(tmp_path: Path) -> None:
    result = run_serve(tmp_path, env={"WASMHIVE_ADMIN_TOKEN": "short"})
    assert result.returncode == 2, result.stderr
    assert "WASMHIVE_ADMIN_TOKEN" in result.stderr and "at least 16" in result.stderr


def test_non_loopback_with_token_starts_and_needs_it(tmp_path: Path) -> None:
    config = {"server": {"admin_token": TOKEN}}
    with Daemon(tmp_path, config, host="0.0.0.0") as daemon:
        assert daemon.url.startswith("http://0.0.0.0:")
        with httpx.Client(base_url=f"http://127.0.0.1:{daemon.port}", timeout=30) as http:
            assert http.get("/healthz").status_code == 200
            r = http.post("/v1/functions/echo", content=guests.ECHO)
            assert r.status_code == 401
            assert r.headers["www-authenticate"].startswith("Bearer")
            r = http.post("/v1/functions/echo", content=guests.ECHO, headers={"Authorization": "Bearer " + "x" * 20})
            assert (r.status_code, r.json()["error"]) == (403, "Forbidden")
            r = http.post("/v1/functions/echo", content=guests.ECHO, headers=daemon.auth)
            assert r.status_code == 201, r.text
            assert http.post("/v1/invoke/echo", content=b"open").content == b"open"
        assert daemon.terminate() == 0


def test_loopback_names_need_no_token(tmp_path: Path) -> None:
    with Daemon(tmp_path, host="localhost") as daemon:
        with httpx.Client(base_url=f"http://127.0.0.1:{daemon.port}", timeout=30) as http:
            # Without a token, admin requests are open.
            assert http.post("/v1/functions/echo", content=guests.ECHO).status_code == 201
        assert daemon.terminate() == 0


def test_config_options_apply_to_deploys(tmp_path: Path) -> None:
    """[defaults] and [functions.NAME] options under a deploy's own; bundled [[deploy]] functions."""
    (tmp_path / "fns").mkdir()
    (tmp_path / "fns" / "echo.wat").write_text((EXAMPLES / "echo.wat").read_text())
    config = """
[defaults]
timeout = 0.3
instances = 2

[functions.patient]
timeout = 20.0

[[deploy]]
name = "bundled"
path = "fns/echo.wat"
aliases = ["prod"]
options = { instances = 3 }
"""
    with Daemon(tmp_path, config) as daemon, daemon.client() as http:
        info = http.get("/v1/functions/bundled").json()
        assert info["aliases"] == {"latest": {"1": 100}, "prod": {"1": 100}}
        assert http.post("/v1/invoke/bundled@prod", content=b"b").content == b"b"
        for name in ("hasty", "patient"):
            assert http.post(f"/v1/functions/{name}", content=guests.INFINITE_LOOP).status_code == 201
        metrics = http.get("/metrics").text
        assert 'wasmhive_pool_size{function="bundled",version="1"} 3.0' in metrics
        assert 'wasmhive_pool_size{function="hasty",version="1"} 2.0' in metrics
        r = http.post("/v1/invoke/hasty", content=b"x")
        assert (r.status_code, r.json()["error"]) == (504, "CallTimeout")
        assert "0.3" in r.json()["message"]
        # A function's own section wins over the defaults, and a deploy's options over both.
        r = http.post("/v1/functions/patient", content=guests.INFINITE_LOOP, params={"timeout": "0.2"})
        assert r.status_code == 201
        r = http.post("/v1/invoke/patient@2", content=b"x")
        assert (r.status_code, r.json()["error"]) == (504, "CallTimeout")
        assert "0.2" in r.json()["message"]
        assert daemon.terminate() == 0
    assert (tmp_path / "data" / "cache").is_dir()  # the compile cache lives in the data dir
