"""A real S3-protocol server for the object-storage tests: moto's server mode (`moto_server`) on
127.0.0.1 and a free port, in its own process group, stopped by its pid; and what the tests read
back from it."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import obstore
from obstore.store import S3Store

from feedback_assets.storage.object_paths import ObjectPath
from feedback_assets_tests.daemon import free_port
from feedback_assets_tests.processes import BIN_DIR, Processes

START_TIMEOUT = 30.0
_SERIAL_MOTO = (
    "import sys; from werkzeug.serving import make_server; "
    "from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app; "
    "make_server('127.0.0.1', int(sys.argv[1]), DomainDispatcherApplication(create_backend_app), threaded=False, "
    "request_handler=MotoRequestHandler).serve_forever()"
)
# moto checks no signature; these only have to be present, and the tests assert they are never shown.
ACCESS_KEY_ID = "AKIAFEEDBACKTESTS0001"
SECRET_ACCESS_KEY = "feedback-tests-secret-access-key-never-shown"


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    def environment(self) -> dict[str, str]:
        """The standard variables the pipeline (through obstore) reads its S3 configuration from."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
        }

    def new_bucket(self) -> str:
        """An empty bucket of its own for one test (S3 names: lower case, at least three characters)."""
        name = f"feedback-{uuid.uuid4().hex[:16]}"
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/{name}", method="PUT"), timeout=10).close()
        return name

    def objects(self, prefix: ObjectPath) -> dict[str, bytes]:
        """Every object under `prefix`, by its key relative to the prefix."""
        store = self._store(prefix)
        found = {}
        for batch in obstore.list(store, prefix.key or None):
            for meta in batch:
                relative = meta["path"][len(prefix.key) :].lstrip("/")
                found[relative] = bytes(obstore.get(store, meta["path"]).bytes())
        return found

    def put(self, path: ObjectPath, data: bytes) -> None:
        obstore.put(self._store(path), path.key, data)

    def _store(self, path: ObjectPath) -> S3Store:
        return S3Store(
            path.root.removeprefix("s3://"),
            endpoint=self.endpoint,
            region="us-east-1",
            access_key_id=ACCESS_KEY_ID,
            secret_access_key=SECRET_ACCESS_KEY,
            client_options={"allow_http": True},
        )


def files_under(root: Path) -> dict[str, bytes]:
    """Every regular file under a local directory, by its path relative to it."""
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@contextmanager
def running_s3_server(logs_dir: Path, *, one_request_at_a_time: bool = False) -> Iterator[S3Server]:
    """`one_request_at_a_time`: moto served without threads. moto_server answers requests on threads
    and checks a PUT's If-Match or If-None-Match before it stores the object without a lock, so two
    conditional PUTs at once can both succeed; served one at a time, they are as atomic as on S3."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with Processes(logs_dir, environment) as processes:
        port = free_port()
        command = [str(BIN_DIR / "python"), "-c", _SERIAL_MOTO, str(port)] if one_request_at_a_time else []
        server = processes.start(
            command or [str(BIN_DIR / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], logs_dir / "moto_server.log"
        )
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except (urllib.error.URLError, ConnectionError) as exc:
                if server.poll() is not None or time.monotonic() > deadline:
                    log = (logs_dir / "moto_server.log").read_text(errors="replace")
                    raise RuntimeError(f"moto_server did not start ({exc}):\n{log}") from None
                time.sleep(0.2)
        yield S3Server(endpoint)
