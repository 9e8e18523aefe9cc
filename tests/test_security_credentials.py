"""Enrollment tokens, client credentials and the admin token on a real SQLite file."""

import datetime
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from fedguard.errors import AuthenticationError, ConfigError, NotFoundError
from fedguard.security.credentials import (
    ClientCredentialRow,
    CredentialStore,
    EnrollmentTokenRow,
    ensure_admin_token,
)
from fedguard.security.tokens import digest
from fedguard.server.storage import open_engine, sqlite_url

START = datetime.datetime(2030, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)


class Clock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += datetime.timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[CredentialStore]:
    credential_store = CredentialStore(open_engine(sqlite_url(tmp_path)), now=clock)
    credential_store.create_tables()
    yield credential_store
    credential_store.close()


def count(store: CredentialStore, row: type) -> int:
    with store._sessions() as session:
        return int(session.scalar(select(func.count()).select_from(row)) or 0)


def test_token_enrolls_one_client_that_authenticates(store: CredentialStore) -> None:
    issued = store.issue_enrollment_token(name="cloud-a")

    credential = store.redeem_enrollment_token(issued.token)

    assert credential.name == "cloud-a"
    assert store.authenticate(credential.bearer_token) == credential.client_id
    assert [c.client_id for c in store.list_clients()] == [credential.client_id]


def test_agent_supplied_name_is_used_only_when_the_token_has_none(
    store: CredentialStore,
) -> None:
    named = store.issue_enrollment_token(name="from-operator")
    unnamed = store.issue_enrollment_token()

    first = store.redeem_enrollment_token(named.token, name="from-agent")
    second = store.redeem_enrollment_token(unnamed.token, name="from-agent")

    assert (first.name, second.name) == ("from-operator", "from-agent")


def test_reused_token_is_refused_and_stores_nothing(store: CredentialStore) -> None:
    issued = store.issue_enrollment_token()
    store.redeem_enrollment_token(issued.token)

    with pytest.raises(AuthenticationError, match=r"^invalid credentials$"):
        store.redeem_enrollment_token(issued.token)
    assert count(store, ClientCredentialRow) == 1


def test_expired_token_is_refused_and_stores_nothing(
    store: CredentialStore, clock: Clock
) -> None:
    issued = store.issue_enrollment_token(expires_in=datetime.timedelta(minutes=5))
    clock.advance(minutes=5)

    with pytest.raises(AuthenticationError, match=r"^invalid credentials$"):
        store.redeem_enrollment_token(issued.token)
    assert count(store, ClientCredentialRow) == 0


def test_token_is_valid_until_just_before_expiry(
    store: CredentialStore, clock: Clock
) -> None:
    issued = store.issue_enrollment_token(expires_in=datetime.timedelta(minutes=5))
    clock.advance(minutes=4, seconds=59)

    store.redeem_enrollment_token(issued.token)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda token: token[:-1] + ("A" if token[-1] != "A" else "B"),
        lambda token: "0" * 16 + token[16:],
        lambda token: token.replace(".", ""),
        lambda token: "",
        lambda token: token + "\n",
    ],
    ids=["wrong-secret", "unknown-id", "no-dot", "empty", "trailing-newline"],
)
def test_forged_tokens_are_refused(store: CredentialStore, mangle) -> None:  # type: ignore[no-untyped-def]
    issued = store.issue_enrollment_token()

    with pytest.raises(AuthenticationError, match=r"^invalid credentials$"):
        store.redeem_enrollment_token(mangle(issued.token))
    assert count(store, ClientCredentialRow) == 0
    store.redeem_enrollment_token(issued.token)


def test_concurrent_redemptions_of_one_token_enroll_one_client(
    store: CredentialStore,
) -> None:
    issued = store.issue_enrollment_token()
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def redeem() -> None:
        barrier.wait()
        try:
            store.redeem_enrollment_token(issued.token)
            outcomes.append("enrolled")
        except AuthenticationError:
            outcomes.append("refused")

    threads = [threading.Thread(target=redeem) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["enrolled"] + ["refused"] * 5
    assert count(store, ClientCredentialRow) == 1


def test_every_authentication_failure_says_the_same(store: CredentialStore) -> None:
    mine = store.redeem_enrollment_token(store.issue_enrollment_token().token)
    theirs = store.redeem_enrollment_token(store.issue_enrollment_token().token)
    revoked = store.redeem_enrollment_token(store.issue_enrollment_token().token)
    store.revoke(revoked.client_id)

    attempts = [
        "",
        "garbage",
        f"{mine.client_id}.{theirs.secret}",
        f"{theirs.client_id}.{mine.secret}",
        f"c-{'0' * 16}.{mine.secret}",
        f"{mine.client_id}.{mine.secret}x",
        revoked.bearer_token,
    ]
    for attempt in attempts:
        with pytest.raises(AuthenticationError) as caught:
            store.authenticate(attempt)
        assert str(caught.value) == "invalid credentials"

    assert store.authenticate(mine.bearer_token) == mine.client_id


def test_revocation_is_immediate_and_idempotent(
    store: CredentialStore, clock: Clock
) -> None:
    credential = store.redeem_enrollment_token(store.issue_enrollment_token().token)

    first = store.revoke(credential.client_id)
    clock.advance(hours=1)
    second = store.revoke(credential.client_id)

    assert first.revoked and second.revoked_at == first.revoked_at == START
    with pytest.raises(AuthenticationError):
        store.authenticate(credential.bearer_token)


def test_revoking_an_unknown_client_names_it(store: CredentialStore) -> None:
    with pytest.raises(NotFoundError, match=r"client_id 'c-0{16}' is not enrolled"):
        store.revoke("c-" + "0" * 16)
    with pytest.raises(NotFoundError, match=r"client_id 'nope' is not enrolled"):
        store.revoke("nope")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"expires_in": datetime.timedelta(seconds=30)},
            r"expires-in must be between 0:01:00 and 30 days; got 0:00:30",
        ),
        (
            {"expires_in": datetime.timedelta(days=31)},
            r"expires-in must be between .* got 31 days",
        ),
        ({"name": "has space"}, r"name must be 1 to 64 .*got 'has space'"),
        ({"name": "x" * 65}, r"name must be 1 to 64"),
    ],
)
def test_bad_token_options_are_refused(
    store: CredentialStore, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        store.issue_enrollment_token(**options)  # type: ignore[arg-type]
    assert count(store, EnrollmentTokenRow) == 0


def test_used_tokens_record_the_client_they_enrolled(
    store: CredentialStore, clock: Clock
) -> None:
    issued = store.issue_enrollment_token(name="cloud-b")
    clock.advance(minutes=1)
    credential = store.redeem_enrollment_token(issued.token)

    [record] = store.list_enrollment_tokens()

    assert record.token_id == issued.token_id
    assert record.used_at == START + datetime.timedelta(minutes=1)
    assert record.client_id == credential.client_id


def test_database_holds_digests_never_secrets(
    store: CredentialStore, tmp_path: Path
) -> None:
    issued = store.issue_enrollment_token()
    credential = store.redeem_enrollment_token(issued.token)
    admin = ensure_admin_token(tmp_path / "state", store)
    store.close()

    stored = b"".join(path.read_bytes() for path in tmp_path.glob("fedguard.db*"))

    for secret in (issued.token.split(".")[1], credential.secret, admin):
        assert secret.encode() not in stored
    assert digest("client", credential.secret).encode() in stored


def test_secrets_stay_out_of_repr(store: CredentialStore) -> None:
    issued = store.issue_enrollment_token()
    credential = store.redeem_enrollment_token(issued.token)

    assert issued.token not in repr(issued)
    assert credential.secret not in repr(credential)
    assert credential.secret not in str(credential)
    assert credential.client_id in repr(credential)


def test_secrets_stay_out_of_logs(
    store: CredentialStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="fedguard")

    issued = store.issue_enrollment_token(name="cloud-c")
    credential = store.redeem_enrollment_token(issued.token)
    with pytest.raises(AuthenticationError):
        store.redeem_enrollment_token(issued.token)
    store.authenticate(credential.bearer_token)
    admin = ensure_admin_token(tmp_path / "state", store)
    store.revoke(credential.client_id)

    assert "enrolled" in caplog.text and "already used" in caplog.text
    for secret in (issued.token, issued.token.split(".")[1], credential.secret, admin):
        assert secret not in caplog.text


# --- admin token ----------------------------------------------------------------------


def test_admin_token_is_created_0600_and_kept(
    store: CredentialStore, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"

    token = ensure_admin_token(state_dir, store)
    again = ensure_admin_token(state_dir, store)

    path = state_dir / "admin-token"
    assert path.stat().st_mode & 0o777 == 0o600
    assert again == token == path.read_text().strip()
    store.check_admin_token(token)


def test_admin_token_check_refuses_anything_else(
    store: CredentialStore, tmp_path: Path
) -> None:
    with pytest.raises(AuthenticationError, match=r"^invalid credentials$"):
        store.check_admin_token("")  # no admin token stored yet
    token = ensure_admin_token(tmp_path / "state", store)
    credential = store.redeem_enrollment_token(store.issue_enrollment_token().token)

    for attempt in ("", token[:-1], token + "x", credential.secret, "a" * 43):
        with pytest.raises(AuthenticationError, match=r"^invalid credentials$"):
            store.check_admin_token(attempt)


def test_deleting_the_admin_token_file_rotates_it(
    store: CredentialStore, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    old = ensure_admin_token(state_dir, store)

    (state_dir / "admin-token").unlink()
    new = ensure_admin_token(state_dir, store)

    assert new != old
    store.check_admin_token(new)
    with pytest.raises(AuthenticationError):
        store.check_admin_token(old)


def test_admin_token_readable_by_others_is_refused(
    store: CredentialStore, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    ensure_admin_token(state_dir, store)
    (state_dir / "admin-token").chmod(0o644)

    with pytest.raises(ConfigError, match=r"mode 0644.*chmod 600"):
        ensure_admin_token(state_dir, store)
