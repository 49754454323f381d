"""A Qdrant server that is down, refuses the key, fails or hangs: one clear line, exit code 2, nothing written.

Failures are driven against loopback only: a closed port (bound, then released), and small stand-ins for a
server's REST port (stdlib http.server) and gRPC port (grpcio) started here, answering what each test scripts.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client.http.exceptions import UnexpectedResponse

from core.errors import StoreError
from core.model import OcrModel
from core.store import ClientStore, PagePoint, open_store
from decode import Decoder
from ingest import Ingestor
from tests.helpers import MISSING_POINT, cli_env, page_image, run_cli, usage_error

HANG_S = 10  # how long a hanging stand-in holds a request (the clients under test give up after 1 s)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeRest:
    """A server's REST port that answers each request with `answer(method, path, n)`: an HTTP status (200 gives
    Qdrant's success body), or "hang". `requests` lists what it received."""

    def __init__(self, answer, error="scripted failure"):
        self.answer, self.error, self.requests = answer, error, []
        self.release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self):
                self.rfile.read(int(self.headers.get("content-length") or 0))
                path = self.path.split("?")[0]
                fake.requests.append((self.command, path))
                status = fake.answer(self.command, path, len(fake.requests))
                if status == "hang":
                    fake.release.wait(HANG_S)
                    return
                result = {"collections": []} if path == "/collections" else {"operation_id": 1, "status": "completed"}
                body = {"result": result, "status": "ok"} if status == 200 else {"status": {"error": fake.error}}
                data = json.dumps({**body, "time": 0.0}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = _any

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.handle_error = lambda *args: None  # a client that gave up is not news
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def writes(self) -> int:
        return sum(1 for method, _ in self.requests if method != "GET")

    def __enter__(self) -> "FakeRest":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class FakeGrpc:
    """A server's gRPC port that fails every call with `code` (or holds it, with code=None)."""

    def __init__(self, code: grpc.StatusCode | None):
        self.calls = 0
        self.release = threading.Event()
        fake = self

        def unary(request, context):
            fake.calls += 1
            if code is None:
                fake.release.wait(HANG_S)
            context.abort(code or grpc.StatusCode.CANCELLED, "scripted failure")

        class Handler(grpc.GenericRpcHandler):
            def service(self, details):
                return grpc.unary_unary_rpc_method_handler(unary)

        self.server = grpc.server(futures.ThreadPoolExecutor(4), handlers=[Handler()])
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def __enter__(self) -> "FakeGrpc":
        self.server.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.stop(0)


@pytest.fixture(scope="module")
def page_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("inbox") / "page.png"
    page_image(["A page"]).save(path)
    return path


def server_env(tiny_model_dir, tmp_path, url: str, **extra: str) -> dict[str, str]:
    return cli_env(tiny_model_dir, tmp_path / "data", TOKENDIRECT_QDRANT_URL=url, **extra)


def args_for(command: str, page_file, tmp_path) -> list:
    return {
        "ingest": [page_file],
        "search": ["x"],
        "decode": [MISSING_POINT],
        "info": [],
        "export": [tmp_path / "out.zip"],
        "import": [tmp_path / "in.zip"],
    }[command]


def assert_nothing_written(tmp_path) -> None:
    assert not (tmp_path / "data" / "qdrant").exists()  # the embedded store was not used instead
    assert not list(tmp_path.glob("out.zip*"))  # no export file, not even a partial one


# ---- through the command line ----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["ingest", "search", "decode", "info", "export", "import"])
def test_a_server_that_is_down_is_one_clear_error(command, tiny_model_dir, tmp_path, page_file):
    url = f"http://127.0.0.1:{closed_port()}"
    env = server_env(tiny_model_dir, tmp_path, url, TOKENDIRECT_QDRANT_GRPC_PORT=str(closed_port()))
    proc = run_cli([command, *args_for(command, page_file, tmp_path), "--json"], env, tmp_path)
    line = usage_error(proc)
    assert f"cannot reach the Qdrant server at {url}" in line and "Connection refused" in line, line
    # --json: stdout holds the error document and nothing else
    assert json.loads(proc.stdout) == {"error": line.removeprefix("error: "), "exit_code": 2}
    assert_nothing_written(tmp_path)


def test_a_server_that_is_down_over_rest_too(tiny_model_dir, tmp_path):
    url = f"http://127.0.0.1:{closed_port()}"
    line = usage_error(
        run_cli(["info"], server_env(tiny_model_dir, tmp_path, url, TOKENDIRECT_QDRANT_GRPC_PORT="0"), tmp_path)
    )
    assert f"cannot reach the Qdrant server at {url} (ConnectError" in line and "Connection refused" in line, line


@pytest.mark.parametrize("status,command", [(401, "info"), (403, "ingest")])
def test_a_wrong_api_key_over_rest_is_refused(status, command, tiny_model_dir, tmp_path, page_file):
    with FakeRest(lambda *_: status, error="Invalid api-key") as server:
        env = server_env(
            tiny_model_dir, tmp_path, server.url, TOKENDIRECT_QDRANT_GRPC_PORT="0", TOKENDIRECT_QDRANT_API_KEY="wrong"
        )
        line = usage_error(run_cli([command, *args_for(command, page_file, tmp_path)], env, tmp_path))
    assert f"refused the API key (HTTP {status})" in line and "TOKENDIRECT_QDRANT_API_KEY" in line, line
    assert server.writes() == 0
    assert_nothing_written(tmp_path)


def test_a_wrong_api_key_over_grpc_is_refused(tiny_model_dir, tmp_path):
    with FakeGrpc(grpc.StatusCode.PERMISSION_DENIED) as server:
        env = server_env(
            tiny_model_dir,
            tmp_path,
            f"http://127.0.0.1:{closed_port()}",
            TOKENDIRECT_QDRANT_GRPC_PORT=str(server.port),
            TOKENDIRECT_QDRANT_API_KEY="wrong",
        )
        line = usage_error(run_cli(["search", "x"], env, tmp_path))
    assert "refused the API key (gRPC PERMISSION_DENIED)" in line, line


def test_a_server_error_is_named_with_the_servers_reason(tiny_model_dir, tmp_path):
    with FakeRest(lambda *_: 500, error="Service internal error: disk full") as server:
        env = server_env(tiny_model_dir, tmp_path, server.url, TOKENDIRECT_QDRANT_GRPC_PORT="0")
        line = usage_error(run_cli(["info"], env, tmp_path))
    assert "answered HTTP 500: Service internal error: disk full" in line, line
    assert server.requests == [("GET", "/collections")]  # a read is not retried


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_a_server_that_does_not_answer_times_out(transport, tiny_model_dir, tmp_path):
    fake = FakeRest(lambda *_: "hang") if transport == "rest" else FakeGrpc(None)
    with fake:
        url = fake.url if transport == "rest" else f"http://127.0.0.1:{closed_port()}"
        port = "0" if transport == "rest" else str(fake.port)
        env = server_env(
            tiny_model_dir, tmp_path, url, TOKENDIRECT_QDRANT_GRPC_PORT=port, TOKENDIRECT_QDRANT_TIMEOUT="1"
        )
        started = time.monotonic()
        line = usage_error(run_cli(["info"], env, tmp_path))
    assert time.monotonic() - started < HANG_S
    assert f"the Qdrant server at {url} did not answer within 1 s (TOKENDIRECT_QDRANT_TIMEOUT)" in line, line


@pytest.mark.parametrize("command", ["search", "export"])
def test_a_missing_collection_is_one_clear_error(command, tiny_model_dir, tmp_path, page_file):
    env = server_env(tiny_model_dir, tmp_path, ":memory:")  # a new in-process engine: no collection at all
    line = usage_error(run_cli([command, *args_for(command, page_file, tmp_path)], env, tmp_path))
    assert "collection 'pages' does not exist" in line, line
    assert_nothing_written(tmp_path)


# ---- retries on writes -----------------------------------------------------------------------------------------


def rest_store(url: str, attempts: int = 4) -> ClientStore:
    client = QdrantClient(url=url, prefer_grpc=False, timeout=5, check_compatibility=False)
    store = ClientStore(client, "pages", url, timeout=5)
    store.retry_attempts, store.retry_delay = attempts, 0.05
    return store


def a_page() -> PagePoint:
    return PagePoint("5f0e6c1a-3c43-5d0e-9f7a-111111111111", {"doc_id": "d", "page": 1}, np.ones((2, 8), np.float32))


def test_a_write_is_retried_with_backoff_until_the_server_recovers():
    with FakeRest(lambda method, path, n: 503 if n <= 2 else 200) as server:
        store = rest_store(server.url)
        started = time.monotonic()
        store.upsert([a_page()])
        elapsed = time.monotonic() - started
    assert server.requests == [("PUT", "/collections/pages/points")] * 3
    assert elapsed >= 0.05 + 0.1  # waited, twice as long the second time


@pytest.mark.parametrize("status", [500, 502, 429])
def test_write_retries_are_bounded(status):
    with FakeRest(lambda *_: status) as server:
        with pytest.raises(StoreError, match=rf"answered HTTP {status}: scripted failure \(4 attempts\)"):
            rest_store(server.url).upsert([a_page()])
    assert server.writes() == 4


def test_a_refused_write_is_not_retried():
    with FakeRest(lambda *_: 400, error="Wrong input: vector dimension error") as server:
        with pytest.raises(StoreError, match="HTTP 400: Wrong input: vector dimension error$"):
            rest_store(server.url).upsert([a_page()])
    assert server.writes() == 1


def test_a_write_that_cannot_reach_grpc_is_retried_then_reported():
    with FakeGrpc(grpc.StatusCode.UNAVAILABLE) as server:
        client = QdrantClient(
            url="http://127.0.0.1:1", grpc_port=server.port, prefer_grpc=True, timeout=5, check_compatibility=False
        )
        store = ClientStore(client, "pages", "http://127.0.0.1:1", timeout=5, grpc_port=server.port)
        store.retry_attempts, store.retry_delay = 3, 0.01
        with pytest.raises(StoreError, match=r"over gRPC .*\(3 attempts\)"):
            store.upsert([a_page()])
    assert server.calls == 3


# ---- decoding with a store it may only read --------------------------------------------------------------------


def test_decoding_works_when_the_preview_cannot_be_saved(settings, page_file, caplog):
    """A read-only API key answers writes with 403: the decode still returns its text."""
    memory = settings.model_copy(update={"qdrant_url": ":memory:"})
    model = OcrModel.from_settings(memory)
    store = open_store(memory)
    Ingestor(model, store, memory).ingest([page_file])
    (pid,) = [p.point_id for batch in store.scroll(with_tokens=False) for p in batch]

    def read_only(*args, **kwargs):
        raise UnexpectedResponse(403, "Forbidden", b'{"status": {"error": "read-only api key"}}', None)

    store.client.set_payload = read_only  # what a server answers a read-only key
    decoder = Decoder(model, store, memory)
    with caplog.at_level(logging.WARNING, logger="tokendirect.decode"):
        text = decoder.decode(pid)
    assert text
    assert "text_preview" not in store.get(pid, with_tokens=False).payload
    assert "the text preview was not saved" in caplog.text and "HTTP 403" in caplog.text
    store.close()
