"""Webhook signatures and delivery against real HTTP receivers on loopback."""

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from fedguard.response.webhook import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    deliver,
    sign,
    verify_signature,
)

SECRET = b"a-test-secret-of-enough-length"
NOW = 1_700_000_000


def _deliver(url: str, *, retries: int = 2, **kwargs: Any) -> Any:
    delays: list[float] = []
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        result = deliver(
            client,
            url,
            b'{"policy": "p"}',
            SECRET,
            delivery_id="d1",
            retries=retries,
            backoff=kwargs.pop("backoff", 0.5),
            max_backoff=kwargs.pop("max_backoff", 30.0),
            sleep=delays.append,
            **kwargs,
        )
    return result, delays


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    expected = hmac.new(SECRET, b"1700000000.{}", hashlib.sha256).hexdigest()

    assert sign(SECRET, NOW, b"{}") == f"sha256={expected}"


def test_verify_accepts_fresh_authentic_requests_only() -> None:
    body = b'{"a": 1}'
    signature = sign(SECRET, NOW, body)

    assert verify_signature(SECRET, body, str(NOW), signature, now=NOW + 10)
    assert not verify_signature(SECRET, b'{"a": 2}', str(NOW), signature, now=NOW)
    assert not verify_signature(b"other" * 8, body, str(NOW), signature, now=NOW)
    assert not verify_signature(SECRET, body, str(NOW + 1), signature, now=NOW)
    assert not verify_signature(SECRET, body, str(NOW), signature, now=NOW + 301)
    assert not verify_signature(SECRET, body, None, signature, now=NOW)
    assert not verify_signature(SECRET, body, "-5", signature, now=NOW)


def test_delivery_reaches_the_receiver_with_a_valid_signature(
    webhook_receiver: Callable[..., Any],
) -> None:
    receiver = webhook_receiver(200)

    result, delays = _deliver(receiver.url)

    assert result.delivered and result.attempts == 1 and result.status_code == 200
    assert delays == []
    ((headers, body),) = receiver.requests
    assert json.loads(body) == {"policy": "p"}
    assert headers["Content-Type"] == "application/json"
    assert headers[DELIVERY_HEADER] == "d1"
    assert verify_signature(
        SECRET, body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER]
    )


def test_server_errors_are_retried_with_exponential_backoff(
    webhook_receiver: Callable[..., Any],
) -> None:
    receiver = webhook_receiver(500)

    result, delays = _deliver(receiver.url, retries=3, backoff=0.5, max_backoff=1.5)

    assert not result.delivered
    assert (result.attempts, result.status_code) == (4, 500)
    assert delays == [0.5, 1.0, 1.5]
    assert len(receiver.requests) == 4
    assert {headers[DELIVERY_HEADER] for headers, _ in receiver.requests} == {"d1"}


def test_a_transient_failure_then_success_is_delivered(
    webhook_receiver: Callable[..., Any],
) -> None:
    receiver = webhook_receiver(503, 429, 204)

    result, delays = _deliver(receiver.url)

    assert result.delivered and result.attempts == 3 and result.status_code == 204
    assert delays == [0.5, 1.0]


@pytest.mark.parametrize("status", [400, 401, 404, 302])
def test_client_errors_and_redirects_fail_at_once(
    webhook_receiver: Callable[..., Any], status: int
) -> None:
    receiver = webhook_receiver(status)

    result, delays = _deliver(receiver.url)

    assert not result.delivered and result.attempts == 1 and delays == []
    assert result.status_code == status


def test_an_unreachable_receiver_is_retried_then_fails(closed_port_url: str) -> None:
    result, delays = _deliver(closed_port_url, retries=2)

    assert not result.delivered
    assert (result.attempts, result.status_code) == (3, None)
    assert result.detail == "ConnectError"
    assert len(delays) == 2
