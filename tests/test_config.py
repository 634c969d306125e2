"""Config: every problem reported with its YAML path before anything starts; env overrides."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mcp_authz import workers
from mcp_authz.config import load_config
from mcp_authz.errors import ConfigError
from mcp_authz.workers import engine_threads

ISSUER = """
identity:
  issuers:
    - issuer: https://issuer.example
      jwks_file: jwks.json
"""


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_minimal_config_and_relative_paths(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, ISSUER), environ={})
    assert config.server.listen == "127.0.0.1:50051"
    assert config.path(config.identity.issuers[0].jwks_file) == str(tmp_path / "jwks.json")


def test_every_problem_is_reported_with_its_path(tmp_path: Path) -> None:
    text = """
server:
  listen: nowhere
  max_workers: "many"
  colour: blue
identity:
  issuers:
    - issuer: https://issuer.example
      jwks_file: a.json
      jwks_url: https://issuer.example/jwks
      algorithms: [HS256, none]
limits:
  max_depth: 0
"""
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), environ={})
    problems = "\n".join(info.value.problems)
    for expected in ("server.listen: expected HOST:PORT",
                     "server.max_workers: expected int, got str",
                     "server.colour: unknown option",
                     "identity.issuers[0]: set exactly one of jwks_file and jwks_url",
                     "identity.issuers[0].algorithms[0]: 'HS256' is not allowed",
                     "identity.issuers[0].algorithms[1]: 'none' is not allowed",
                     "limits.max_depth: must be at least 1"):
        assert expected in problems


def test_no_issuer_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="identity.issuers: at least one issuer"):
        load_config(_write(tmp_path, "server: {}\n"), environ={})


def test_invalid_yaml_names_file_line_col(tmp_path: Path) -> None:
    path = _write(tmp_path, "server:\n  listen: [unclosed\n")
    with pytest.raises(ConfigError, match=r"config\.yaml:\d+:\d+: invalid YAML"):
        load_config(path, environ={})


def test_environment_overrides(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, ISSUER), environ={
        "MCP_AUTHZ__SERVER__LISTEN": "0.0.0.0:6000",
        "MCP_AUTHZ__LIMITS__MAX_BATCH": "7",
        "UNRELATED": "x"})
    assert config.server.listen == "0.0.0.0:6000" and config.limits.max_batch == 7
    with pytest.raises(ConfigError, match="limits.max_batch: expected int"):
        load_config(_write(tmp_path, ISSUER), environ={"MCP_AUTHZ__LIMITS__MAX_BATCH": "lots"})


def test_serve_with_a_bad_config_exits_2_without_a_traceback(tmp_path: Path) -> None:
    path = _write(tmp_path, "server:\n  listen: nowhere\n")
    done = subprocess.run([sys.executable, "-m", "mcp_authz.cli", "serve", "--config", path],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "server.listen" in done.stderr and "Traceback" not in done.stderr


def test_token_command_refuses_a_production_config(tmp_path: Path) -> None:
    path = _write(tmp_path, ISSUER)
    done = subprocess.run([sys.executable, "-m", "mcp_authz.cli", "token", "--config", path,
                           "--sub", "alice", "--tenant", "acme"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "development" in done.stderr
    assert "Traceback" not in done.stderr and not done.stdout


def _leaf_paths(cls: type, prefix: str = "") -> list[str]:
    import dataclasses
    import types
    import typing

    paths = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        if typing.get_origin(hint) is tuple and dataclasses.is_dataclass(typing.get_args(hint)[0]):
            hint = typing.get_args(hint)[0]
        if dataclasses.is_dataclass(hint):
            paths.extend(_leaf_paths(hint, f"{prefix}{f.name}."))
        elif f.name != "base_dir":
            paths.append(f"{prefix}{f.name}")
    return paths


def test_the_example_config_loads_and_shows_every_key() -> None:
    """examples/config.yaml is the reference the README points to: it must stay complete."""
    import re

    from mcp_authz.config import Config

    example = Path(__file__).parent.parent / "examples" / "config.yaml"
    load_config(str(example), environ={})
    text = example.read_text()
    lines = text.splitlines()
    missing = []
    for path in _leaf_paths(Config):
        # each segment must appear, as a key, after the previous one (commented or not)
        position = 0
        for segment in path.split("."):
            pattern = re.compile(rf"^\s*(#\s*)?(- )?{re.escape(segment)}:")
            found = next((i for i in range(position, len(lines)) if pattern.match(lines[i])),
                         None)
            if found is None:
                missing.append(path)
                break
            position = found + 1
    assert not missing, f"examples/config.yaml lacks: {', '.join(missing)}"


@pytest.mark.requirement("engine-threads")
def test_engine_threads_divide_the_cores_among_workers_unless_set(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    config = load_config(_write(tmp_path, ISSUER), environ={})
    monkeypatch.setattr(workers, "available_cpus", lambda: 8)
    assert [engine_threads(config, count) for count in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    pinned = load_config(_write(tmp_path, ISSUER),
                         environ={"MCP_AUTHZ__SERVER__ENGINE_THREADS": "3"})
    assert engine_threads(pinned, 8) == 3
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, ISSUER + "server:\n  engine_threads: -1\n"), environ={})
    assert "server.engine_threads: must be 0 (automatic) or more" in info.value.problems


def test_a_removed_option_says_what_replaced_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, ISSUER + "limits:\n  evaluation_thread_min_bytes: 8192\n"),
                    environ={})
    assert info.value.problems == [
        "limits.evaluation_thread_min_bytes: removed: every evaluation now runs on the engine "
        "threads (server.engine_threads) and is bounded by limits.max_evaluation_ms; delete "
        "this line"]
