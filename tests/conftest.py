"""Session-wide fixtures shared by both packages' tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of a loopback S3 server (moto) for the whole session; any key/secret is accepted."""
    server_module = pytest.importorskip("moto.server", reason="moto is needed for the loopback S3 endpoint")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
