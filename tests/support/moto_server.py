"""Test support: one moto server per session on 127.0.0.1, a fault proxy, AWS env without keys."""

from __future__ import annotations

import atexit
import threading
from collections.abc import Iterator

import pytest
from moto.server import ThreadedMotoServer

from crossfade.testing.aws_faults import FaultProxy

_lock = threading.Lock()
_server: ThreadedMotoServer | None = None


def _shared_server() -> ThreadedMotoServer:
    global _server
    with _lock:
        if _server is None:
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            atexit.register(server.stop)
            _server = server
        return _server


@pytest.fixture(scope="session")
def moto_server() -> str:
    """Return the base URL of the session's moto server (real HTTP on loopback)."""
    host, port = _shared_server().get_host_and_port()
    return f"http://{host}:{port}"


@pytest.fixture
def fault_proxy(moto_server: str) -> Iterator[FaultProxy]:
    """Return a fault-injecting proxy in front of moto, fresh for each test."""
    proxy = FaultProxy(upstream=moto_server).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Give boto3's default chain fake keys through the environment, nothing else.

    No config or credential files, no instance metadata lookups, no endpoint overrides, so
    a test can never reach a real AWS account.
    """
    empty = tmp_path_factory.mktemp("aws") / "none"
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
