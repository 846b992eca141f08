"""A real S3 API server on loopback for the checkpoint storage tests: moto in server mode.

`running_s3()` starts ``moto.server.ThreadedMotoServer`` on a free loopback port, creates a
bucket through ``s3fs`` (the client weft_nb uses) and yields an `S3Server`. Nothing of S3 is mocked
in the process under test: every checkpoint travels over HTTP to the server. The tests skip, with
the reason printed, only where the ``s3`` extra or ``moto[server]`` is not installed.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest


def require_s3() -> None:
    """Skip (printing why) unless fsspec, s3fs and moto's server can be imported."""
    try:
        import fsspec  # noqa: F401
        import moto.server  # noqa: F401
        import s3fs  # noqa: F401
    except ImportError as exc:
        reason = f"the s3 extra (fsspec, s3fs) or moto[server] is not installed: {exc}"
        print(reason)
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class S3Server:
    """One moto server; `stop()` and `start()` make the storage unreachable and back."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._factory = ThreadedMotoServer
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.bucket = f"weft-{uuid.uuid4().hex[:10]}"
        self._server: Any = None

    def start(self) -> None:
        self._server = self._factory(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def options(self) -> dict[str, Any]:
        """``storage_options`` for s3fs: this endpoint, dummy keys, fail fast when it is down."""
        return {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"},
            "config_kwargs": {
                "connect_timeout": 2,
                "read_timeout": 30,
                "retries": {"max_attempts": 1},
            },
            "skip_instance_cache": True,
        }

    def url(self, prefix: str = "ckpt") -> str:
        return f"s3://{self.bucket}/{prefix}"

    def fs(self) -> Any:
        """A fresh s3fs client of this server (for the tests' own looks and damage)."""
        import s3fs

        return s3fs.S3FileSystem(**self.options())


@contextlib.contextmanager
def running_s3() -> Iterator[S3Server]:
    """A moto S3 server on loopback with one empty bucket; stopped afterwards."""
    require_s3()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = S3Server()
    server.start()
    try:
        server.fs().call_s3("create_bucket", Bucket=server.bucket)
        yield server
    finally:
        server.stop()
