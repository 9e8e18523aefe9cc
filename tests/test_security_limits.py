"""Body size caps (fedguard.security.limits), on a real uvicorn server."""

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from pydantic import BaseModel

from fedguard.errors import ConfigError
from fedguard.security.limits import (
    BodySizeLimitMiddleware,
    ciphertext_bytes,
    max_upload_bytes,
)

FRAME_CAP = 1000
JSON_CAP = 100


class Note(BaseModel):
    text: str


def per_route_cap(method: str, path: str) -> int:
    return FRAME_CAP if path == "/frames" else JSON_CAP


def limited_app(stored: list[bytes]) -> FastAPI:
    """An app whose routes store what they receive, behind the middleware."""
    app = FastAPI()
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=per_route_cap)

    @app.put("/frames")
    async def frames(request: Request) -> dict[str, int]:
        data = await request.body()
        stored.append(data)
        return {"bytes": len(data)}

    @app.post("/notes")
    def notes(note: Note) -> dict[str, int]:
        stored.append(note.text.encode())
        return {"bytes": len(note.text)}

    return app


@pytest.fixture
def stored() -> list[bytes]:
    return []


@pytest.fixture
def url(stored: list[bytes], loopback_server: Callable[..., str]) -> str:
    return loopback_server(limited_app(stored))


def chunks(count: int, size: int) -> Iterator[bytes]:
    for _ in range(count):
        yield b"x" * size


# --- arithmetic -----------------------------------------------------------------------


def test_ciphertexts_are_twice_the_modulus() -> None:
    assert ciphertext_bytes(2048) == 512
    assert ciphertext_bytes(3072) == 768
    assert ciphertext_bytes(1025) == 257


def test_upload_cap_is_header_plus_ciphertexts() -> None:
    assert max_upload_bytes(2048, 10, 64) == 64 + 10 * 512
    assert max_upload_bytes(3072, 1, 0) == 768


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((0, 1, 0), r"key_bits must be >= 1; got 0"),
        ((2048, 0, 0), r"ciphertexts must be >= 1; got 0"),
        ((2048, 1, -1), r"header_bytes must be >= 0; got -1"),
    ],
)
def test_bad_federation_figures_are_refused(
    arguments: tuple[int, int, int], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        max_upload_bytes(*arguments)


# --- over HTTP ------------------------------------------------------------------------


def test_bodies_within_the_cap_pass(url: str, stored: list[bytes]) -> None:
    frame = httpx.put(f"{url}/frames", content=b"x" * FRAME_CAP)
    note = httpx.post(f"{url}/notes", json={"text": "y" * 50})

    assert (frame.status_code, note.status_code) == (200, 200)
    assert [len(item) for item in stored] == [FRAME_CAP, 50]


def test_declared_oversized_body_is_refused_unread(
    url: str, stored: list[bytes]
) -> None:
    response = httpx.put(f"{url}/frames", content=b"x" * (FRAME_CAP + 1))

    assert response.status_code == 413
    assert response.json() == {
        "error": f"request body must be at most {FRAME_CAP} bytes; got 1001 bytes"
    }
    assert stored == []


def test_streamed_oversized_body_is_refused(url: str, stored: list[bytes]) -> None:
    response = httpx.put(f"{url}/frames", content=chunks(11, 100))

    assert response.status_code == 413
    assert response.json()["error"] == (
        f"request body must be at most {FRAME_CAP} bytes; got more than "
        f"{FRAME_CAP} bytes"
    )
    assert stored == []


def test_json_routes_have_their_own_smaller_cap(url: str, stored: list[bytes]) -> None:
    declared = httpx.post(f"{url}/notes", json={"text": "y" * JSON_CAP})
    streamed = httpx.post(
        f"{url}/notes",
        content=chunks(3, 60),
        headers={"content-type": "application/json"},
    )

    # FastAPI would answer a body it failed to read with 400; the cap wins.
    assert (declared.status_code, streamed.status_code) == (413, 413)
    assert stored == []


# --- at the ASGI level: reading stops at the cap --------------------------------------


def test_reading_stops_at_the_first_chunk_over_the_cap(stored: list[bytes]) -> None:
    app = limited_app(stored)
    pulled: list[int] = []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        pulled.append(1)
        more = len(pulled) < 20
        return {"type": "http.request", "body": b"z" * 100, "more_body": more}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "PUT",
        "path": "/frames",
        "raw_path": b"/frames",
        "query_string": b"",
        "headers": [],
        "root_path": "",
        "scheme": "http",
        "http_version": "1.1",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 5000),
    }
    asyncio.run(app(scope, receive, send))

    assert len(pulled) == FRAME_CAP // 100 + 1
    assert sent[0]["status"] == 413
    assert stored == []
