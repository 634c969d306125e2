from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support import JsonServer, Keys, Service, running_service, write_config


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys()


@pytest.fixture(scope="session")
def jwks_server(keys: Keys) -> Iterator[JsonServer]:
    server = JsonServer()
    server.documents["/jwks.json"] = keys.user_jwks()
    server.documents["/approval-jwks.json"] = keys.approval_jwks()
    yield server
    server.close()


@pytest.fixture(scope="session")
def config_path(tmp_path_factory: pytest.TempPathFactory, jwks_server: JsonServer) -> Path:
    return write_config(tmp_path_factory.mktemp("svc"), jwks_server.url("/jwks.json"),
                        jwks_server.url("/approval-jwks.json"))


@pytest.fixture(scope="session")
def service(config_path: Path) -> Iterator[Service]:
    with running_service(config_path) as svc:
        yield svc
