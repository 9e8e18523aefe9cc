"""The HTTP API over real loopback HTTP, with a real 2048-bit key and SQLite file."""

import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from sqlalchemy import text

from fedguard.crypto.frames import HEADER_BYTES, FrameKind, encode_frame
from fedguard.crypto.keys import PrivateKey, save_private_key
from fedguard.crypto.packing import PackingParams
from fedguard.crypto.vectors import encrypt_update
from fedguard.server.api import create_app
from fedguard.server.app import bind_socket, endpoint_url
from fedguard.server.config import load_config
from fedguard.server.orchestrator import PRIVATE_KEY_FILE, Orchestrator
from fedguard.server.wire import decode_model


@dataclass
class Api:
    url: str
    orchestrator: Orchestrator
    private_key: PrivateKey

    def client(self, credential: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    @property
    def admin_token(self) -> str:
        path = self.orchestrator.config.server.state_dir / "admin-token"
        return path.read_text().strip()

    def enroll(self, name: str) -> str:
        """A client credential, through the admin and enrollment routes."""
        with self.client(self.admin_token) as http:
            token = http.post("/admin/enrollment-tokens", json={"name": name})
            token.raise_for_status()
            enrolled = http.post(
                "/enroll", json={"enrollment_token": token.json()["token"]}
            )
            enrolled.raise_for_status()
        body = enrolled.json()
        return f"{body['client_id']}.{body['secret']}"


@pytest.fixture
def api(tmp_path: Path, private_key_2048: PrivateKey) -> Iterator[Api]:
    save_private_key(private_key_2048, tmp_path / PRIVATE_KEY_FILE)
    config = load_config(
        overrides={
            "server.state_dir": tmp_path,
            "federation.min_clients": 2,
            "federation.wait_for_clients": 2,
            "federation.dataset": "synthetic",
        }
    )
    orchestrator = Orchestrator(config)
    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(
        uvicorn.Config(create_app(orchestrator), log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    try:
        _wait_started(server)
        yield Api(endpoint_url(sock, tls=False), orchestrator, private_key_2048)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def _wait_started(server: uvicorn.Server) -> None:
    for _ in range(600):
        if server.started:
            return
        time.sleep(0.01)
    raise RuntimeError("the test server did not start")


def statistics_frame(api: Api, seed: int, *, length: int | None = None) -> bytes:
    info = api.orchestrator.federation_info()
    packing = info.packing["statistics"]
    params = PackingParams.from_dict(packing.model_dump())
    values = np.abs(np.random.default_rng(seed).normal(size=length or packing.length))
    public_key = api.private_key.public_key
    vector = encrypt_update(public_key, params, 0.5 * values, 0.5)
    return encode_frame(
        vector, public_key, kind=FrameKind.STATISTICS, round_id=0, model_version=0
    )


def wait_for_round(http: httpx.Client, round_id: int, state: str) -> dict[str, Any]:
    for _ in range(600):
        response = http.get(f"/rounds/{round_id}")
        if response.status_code == 200 and response.json()["state"] == state:
            return dict(response.json())
        time.sleep(0.02)
    raise AssertionError(f"round {round_id} never reached state {state}")


def upload(http: httpx.Client, frame: bytes, round_id: int = 0) -> httpx.Response:
    return http.put(
        f"/rounds/{round_id}/frames/statistics",
        content=frame,
        headers={"Content-Type": "application/octet-stream"},
    )


@pytest.fixture
def three_clients(api: Api) -> Iterator[list[httpx.Client]]:
    clients = [api.client(api.enroll(f"cloud-{i}")) for i in range(3)]
    try:
        wait_for_round(clients[0], 0, "open")
        yield clients
    finally:
        for client in clients:
            client.close()


def test_openapi_schema_is_served(api: Api) -> None:
    with api.client() as http:
        schema = http.get("/openapi.json").json()

    upload_route = schema["paths"]["/rounds/{round_id}/frames/{kind}"]["put"]
    assert "409" in upload_route["responses"]
    assert "application/octet-stream" in upload_route["requestBody"]["content"]


def test_federation_publishes_key_schema_and_packing(api: Api) -> None:
    with api.client(api.enroll("cloud-a")) as http:
        info = http.get("/federation").json()

    assert info["fingerprint"] == api.private_key.public_key.fingerprint
    assert info["public_key"]["fingerprint"] == info["fingerprint"]
    assert info["packing"]["update"]["length"] == info["model"]["n_params"]
    assert info["fitted_schema"] is None
    assert info["training"]["epochs"] >= 1


def test_upload_is_stored_once_and_other_bytes_conflict(
    api: Api, three_clients: list[httpx.Client]
) -> None:
    first = statistics_frame(api, 1)
    http = three_clients[0]

    accepted = upload(http, first)
    repeated = upload(http, first)
    different = upload(http, statistics_frame(api, 2))

    assert accepted.status_code == 200 and accepted.json()["duplicate"] is False
    assert repeated.status_code == 200 and repeated.json()["duplicate"] is True
    assert different.status_code == 409
    assert "already delivered a different statistics" in different.json()["error"]
    assert http.get("/rounds/0").json()["contributors"] == 1


def test_bad_frames_get_a_clear_4xx_and_nothing_is_stored(
    api: Api, three_clients: list[httpx.Client]
) -> None:
    http = three_clients[1]
    good = statistics_frame(api, 3)
    width = api.private_key.public_key.ciphertext_bytes
    n = int(api.private_key.public_key.n)

    wrong_key = good[:8] + bytes(32) + good[40:]
    wrong_length = statistics_frame(api, 3, length=5)
    out_of_range = good[:HEADER_BYTES] + (n * n).to_bytes(width, "big")
    not_a_unit = good[:HEADER_BYTES] + int(api.private_key.p).to_bytes(width, "big")
    cases = [
        (wrong_key, 400, "key"),
        (wrong_length, 400, "expects"),
        (out_of_range + good[HEADER_BYTES + width :], 400, "out of range"),
        (not_a_unit + good[HEADER_BYTES + width :], 400, "not a unit"),
        (good + b"\x00" * 600, 413, "at most"),
        (b"", 400, "empty"),
    ]
    for frame, status, message in cases:
        response = upload(http, frame)
        assert response.status_code == status, response.text
        assert message in response.json()["error"]

    assert http.get("/rounds/0").json()["client_ids"] == []


def test_closed_round_answers_409_but_an_exact_retry_is_acknowledged(
    api: Api, three_clients: list[httpx.Client]
) -> None:
    frames = [statistics_frame(api, seed) for seed in range(3)]
    for http, frame in zip(three_clients, frames, strict=True):
        assert upload(http, frame).status_code == 200
    wait_for_round(three_clients[0], 0, "closed")

    late = upload(three_clients[0], statistics_frame(api, 9))
    retry = upload(three_clients[0], frames[0])

    assert late.status_code == 409 and "closed" in late.json()["error"]
    assert retry.status_code == 200 and retry.json()["duplicate"] is True


def test_setup_round_publishes_the_fitted_schema(
    api: Api, three_clients: list[httpx.Client]
) -> None:
    for seed, http in enumerate(three_clients):
        upload(http, statistics_frame(api, seed)).raise_for_status()
    wait_for_round(three_clients[0], 0, "closed")

    info = three_clients[0].get("/federation").json()
    current = three_clients[0].get("/rounds/current", params={"wait": 9}).json()

    assert info["fitted_schema"]["num_examples"] > 0
    assert (current["round"], current["kind"], current["state"]) == (
        1,
        "training",
        "open",
    )
    assert current["required"] == ["update"] and current["delivered"] == []


def test_requests_without_credentials_are_refused(api: Api) -> None:
    with api.client() as http:
        response = http.get("/rounds/current")
        forged = http.get(
            "/rounds/current", headers={"Authorization": "Bearer c-0000000000000000.x"}
        )

    assert response.status_code == 401 and response.json() == {
        "error": "invalid credentials"
    }
    assert forged.status_code == 401


def test_model_download_is_binary_with_its_version(api: Api) -> None:
    with api.client(api.enroll("cloud-a")) as http:
        response = http.get("/model")
        missing = http.get("/model/99")

    version, params = decode_model(response.content)
    assert response.headers["X-Fedguard-Model-Version"] == "0" and version == 0
    assert params.shape == (api.orchestrator.federation.n_params,)
    assert missing.status_code == 404
    assert missing.json() == {"error": "model version 99 does not exist"}


def test_only_health_and_the_key_answer_without_a_credential(api: Api) -> None:
    member_only = ("/federation", "/model", "/model/0", "/rounds", "/metrics")
    with api.client() as anonymous, api.client(api.admin_token) as operator:
        refused = [anonymous.get(path) for path in member_only]
        allowed = [operator.get(path) for path in member_only]
        public = [anonymous.get("/health"), anonymous.get("/federation/key")]

    assert [r.status_code for r in refused] == [401] * len(member_only)
    assert {r.json()["error"] for r in refused} == {"invalid credentials"}
    assert [r.status_code for r in allowed] == [200] * len(member_only)
    assert [r.status_code for r in public] == [200, 200]


def test_every_route_but_health_key_and_enroll_needs_a_credential(api: Api) -> None:
    with api.client() as anonymous:
        schema = anonymous.get("/openapi.json").json()

    open_routes = {
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if not operation.get("security")
    }
    assert open_routes == {
        ("GET", "/health"),
        ("GET", "/federation/key"),
        ("POST", "/enroll"),
    }


def test_the_public_key_route_holds_nothing_derived_from_members(
    api: Api, three_clients: list[httpx.Client]
) -> None:
    for index, http in enumerate(three_clients):
        assert upload(http, statistics_frame(api, index)).status_code == 200
    wait_for_round(three_clients[0], 0, "closed")  # the schema is fitted now

    with api.client() as anonymous:
        published = anonymous.get("/federation/key").json()
    info = api.orchestrator.federation_info()

    assert info.fitted_schema is not None
    assert published == {
        "name": info.name,
        "dataset": "synthetic",
        "plaintext": False,
        "fingerprint": api.private_key.public_key.fingerprint,
        "public_key": api.private_key.public_key.to_dict(),
        "numeric_columns": [c["name"] for c in info.feature_schema["numeric"]],
        "categorical_columns": [c["name"] for c in info.feature_schema["categorical"]],
    }


def test_unknown_round_and_malformed_parameters(
    api: Api, three_clients: list[httpx.Client]
) -> None:
    http = three_clients[0]

    unknown = upload(http, statistics_frame(api, 1), round_id=7)
    bad_kind = http.put("/rounds/0/frames/secrets", content=b"x")
    bad_round = http.get("/rounds/-1")

    assert unknown.status_code == 404 and "round 7" in unknown.json()["error"]
    assert bad_kind.status_code == 422 and "kind" in bad_kind.json()["error"]
    assert bad_round.status_code == 422 and "error" in bad_round.json()


def test_internal_errors_answer_500_without_details(
    api: Api, three_clients: list[httpx.Client], caplog: pytest.LogCaptureFixture
) -> None:
    with api.orchestrator.engine.begin() as connection:
        connection.execute(text("DROP TABLE fg_client_timings"))

    timings = {
        "training_seconds": 0.1,
        "encryption_seconds": 0.1,
        "upload_seconds": 0.1,
        "bytes_uploaded": 10,
    }
    response = three_clients[0].post("/rounds/0/timings", json=timings)

    assert response.status_code == 500
    assert response.json() == {"error": "internal server error"}
    assert "fg_client_timings" in caplog.text


def test_long_poll_returns_as_soon_as_there_is_work(api: Api) -> None:
    holder: dict[str, Any] = {}

    with api.client(api.enroll("cloud-a")) as http:

        def poll() -> None:
            answer = http.get("/rounds/current", params={"wait": 9})
            holder["round"] = answer.json()

        waiting = threading.Thread(target=poll)
        waiting.start()
        api.enroll("cloud-b")  # the second enrollment opens the setup round
        waiting.join(30)

    assert holder["round"]["round"] == 0 and holder["round"]["state"] == "open"


def test_a_405_names_every_method_of_the_path(api: Api) -> None:
    with api.client(api.admin_token) as http:
        tokens = http.request("OPTIONS", "/admin/enrollment-tokens")
        health = http.post("/health")

    assert tokens.status_code == 405
    assert tokens.headers["allow"] == "GET, POST"
    assert health.status_code == 405
    assert health.headers["allow"] == "GET"


def test_timings_refuse_values_of_the_wrong_type(
    api: Api, three_clients: list[httpx.Client]
) -> None:
    valid = {
        "training_seconds": 1,
        "encryption_seconds": 0.5,
        "upload_seconds": 0.25,
        "bytes_uploaded": 1600,
    }
    cases = [{"bytes_uploaded": False}, {"training_seconds": "1"}]

    accepted = three_clients[0].post("/rounds/0/timings", json=valid)
    refused = [
        three_clients[0].post("/rounds/0/timings", json={**valid, **case})
        for case in cases
    ]

    assert accepted.status_code == 200
    assert [response.status_code for response in refused] == [422, 422]
    assert "bytes_uploaded" in refused[0].json()["error"]


def poisoned(frame: bytes, width: int) -> bytes:
    """A frame that passes every upload check but whose ciphertexts are all 2.

    2 is a unit modulo n², so the frame is accepted; it decrypts to a plaintext no
    honest contribution produces, which only shows once the sum is decrypted.
    """
    count = (len(frame) - HEADER_BYTES) // width
    return frame[:HEADER_BYTES] + (2).to_bytes(width, "big") * count


def test_a_poisoned_sum_fails_the_round_and_a_new_attempt_opens(
    api: Api, three_clients: list[httpx.Client], caplog: pytest.LogCaptureFixture
) -> None:
    width = api.private_key.public_key.ciphertext_bytes
    frames = [statistics_frame(api, 0), statistics_frame(api, 1)]
    frames.append(poisoned(statistics_frame(api, 2), width))

    with caplog.at_level("INFO", logger="fedguard.server.rounds"):
        for http, frame in zip(three_clients, frames, strict=True):
            assert upload(http, frame).status_code == 200
        failed = wait_for_round(three_clients[0], 0, "failed")
        attempt = three_clients[0].get("/rounds/current", params={"wait": 9}).json()

    assert "invalid" in failed["failure"] and failed["contributors"] == 3
    assert (attempt["round"], attempt["kind"], attempt["model_version"]) == (
        1,
        "setup",
        0,
    )
    assert attempt["state"] == "open" and attempt["required"] == ["statistics"]
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].exc_info is None
    assert "malformed or malicious" in errors[0].getMessage()
    assert api.orchestrator.store.get_fact("fitted_schema") is None


def test_concurrent_timing_reports_all_succeed(
    api: Api, three_clients: list[httpx.Client]
) -> None:
    body = {
        "training_seconds": 1.0,
        "encryption_seconds": 1.0,
        "upload_seconds": 1.0,
        "bytes_uploaded": 1,
    }
    start = threading.Barrier(60)

    def report(index: int) -> int:
        start.wait(30)
        http = three_clients[index % 3]
        return http.post("/rounds/0/timings", json=body).status_code

    with ThreadPoolExecutor(60) as pool:
        statuses = list(pool.map(report, range(60)))

    assert statuses == [200] * 60
    assert len(api.orchestrator.store.timings(0)) == 3


def test_health_answers_while_uploads_wait_for_the_database(
    api: Api, three_clients: list[httpx.Client]
) -> None:
    """More writes than worker threads wait for a lock; /health still answers.

    Another connection holds the SQLite write lock, so every timing report waits
    for it in a worker thread. The health check must not need one.
    """
    body = {
        "training_seconds": 1.0,
        "encryption_seconds": 1.0,
        "upload_seconds": 1.0,
        "bytes_uploaded": 1,
    }
    database = api.orchestrator.config.server.state_dir / "fedguard.db"
    blocker = sqlite3.connect(database, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with ThreadPoolExecutor(50) as pool:
            reports = [
                pool.submit(three_clients[i % 3].post, "/rounds/0/timings", json=body)
                for i in range(50)
            ]
            time.sleep(1.0)  # let the reports reach their worker threads
            with api.client() as http:
                health = http.get("/health")
            finished_first = sum(report.done() for report in reports)
            blocker.execute("ROLLBACK")
            statuses = [r.result().status_code for r in reports]
    finally:
        blocker.close()

    assert health.status_code == 200 and finished_first == 0
    assert statuses == [200] * 50


def test_interactive_docs_are_not_served_but_the_schema_is(api: Api) -> None:
    with api.client() as http:
        pages = [http.get(path).status_code for path in ("/docs", "/redoc")]
        schema = http.get("/openapi.json")

    assert pages == [404, 404]
    assert schema.status_code == 200 and "paths" in schema.json()


def test_a_client_that_disconnects_mid_upload_is_one_info_line(
    api: Api, three_clients: list[httpx.Client], caplog: pytest.LogCaptureFixture
) -> None:
    frame = statistics_frame(api, 1)
    credential = three_clients[0].headers["Authorization"]
    host, port = api.url.removeprefix("http://").split(":")
    request = (
        f"PUT /rounds/0/frames/statistics HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: {credential}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {len(frame)}\r\n\r\n"
    ).encode()

    with caplog.at_level("INFO", logger="fedguard"):
        with socket.create_connection((host, int(port))) as connection:
            connection.sendall(request + frame[:100])
        for _ in range(3000):
            if "disconnected" in caplog.text:
                break
            time.sleep(0.01)

    lines = [r for r in caplog.records if "disconnected" in r.getMessage()]
    assert [r.levelname for r in lines] == ["INFO"] and lines[0].exc_info is None
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    assert three_clients[0].get("/rounds/0").json()["client_ids"] == []
