"""The round driver on a real SQLite file, with a clock the tests move by hand."""

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from fedguard.errors import CapacityError, ConflictError, InputError, NotFoundError
from fedguard.learning.fedavg import fedavg
from fedguard.server.aggregation import PlainAggregator, combine
from fedguard.server.config import ServerConfig, load_config
from fedguard.server.federation import Federation
from fedguard.server.repository import Store
from fedguard.server.rounds import RoundDriver, RoundRules, frame_kinds
from fedguard.server.storage import create_schema, open_engine, sqlite_url
from fedguard.server.wire import decode_model, encode_model, encode_plain_frame

DEADLINE = 60.0


class Clock:
    """A settable clock: deadlines pass when a test says so."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Setup:
    config: ServerConfig
    store: Store
    federation: Federation
    clock: Clock
    driver: RoundDriver

    def restart(self) -> RoundDriver:
        """A new driver on the same database, as after a server restart."""
        self.driver = make_driver(self.store, self.federation, self.config, self.clock)
        self.driver._recover()
        return self.driver


def make_driver(
    store: Store, federation: Federation, config: ServerConfig, clock: Clock
) -> RoundDriver:
    rules = RoundRules(
        min_clients=config.federation.min_clients,
        start_clients=2,
        max_contributors=config.packing.max_contributors,
        round_deadline=DEADLINE,
        server_lr=config.federation.server_lr,
    )
    aggregator = PlainAggregator(federation.packings, config.federation.min_clients)
    return RoundDriver(store, federation, aggregator, rules, clock=clock)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    config = load_config(
        overrides={
            "server.state_dir": tmp_path,
            "federation.plaintext": True,
            "federation.rounds": 2,
            "federation.min_clients": 2,
            "packing.max_contributors": 4,
        }
    )
    engine = open_engine(sqlite_url(tmp_path))
    create_schema(engine)
    store = Store(engine)
    federation = Federation.from_config(config)
    store.put_model(0, None, encode_model(0, federation.initial_model()))
    clock = Clock()
    yield Setup(
        config, store, federation, clock, make_driver(store, federation, config, clock)
    )
    engine.dispose()


def enroll(setup: Setup, *names: str) -> None:
    for name in names:
        setup.store.ensure_client(name, name)


def statistics_frame(setup: Setup, seed: int, weight: float = 0.5) -> bytes:
    length = setup.federation.frame_length("statistics")
    means = np.abs(np.random.default_rng(seed).normal(size=length))
    return encode_plain_frame(
        weight * means, weight, kind="statistics", round_id=0, model_version=0
    )


def update_frame(setup: Setup, round_id: int, version: int, seed: int) -> bytes:
    length = setup.federation.frame_length("update")
    delta = np.random.default_rng(seed).normal(scale=0.1, size=length)
    return encode_plain_frame(
        0.5 * delta, 0.5, kind="update", round_id=round_id, model_version=version
    )


def deliver(setup: Setup, client: str, round_id: int, kind: str, frame: bytes) -> bool:
    record = setup.driver.open_round_for(round_id, kind)
    setup.driver.aggregator.check(frame, setup.driver.frame_spec(record, kind))
    return setup.driver.accept(client, round_id, kind, frame)


def finish_setup_round(setup: Setup, *clients: str) -> None:
    for seed, client in enumerate(clients):
        deliver(setup, client, 0, "statistics", statistics_frame(setup, seed))
    setup.driver.step()


def test_setup_round_waits_for_enough_clients(setup: Setup) -> None:
    enroll(setup, "c-a")
    setup.driver.step()
    assert setup.store.current_round() is None

    enroll(setup, "c-b")
    setup.driver.step()

    current = setup.store.current_round()
    assert current is not None and (current.round_id, current.kind) == (0, "setup")


def test_round_closes_once_every_active_client_delivered(setup: Setup) -> None:
    enroll(setup, "c-a", "c-b", "c-c")
    setup.driver.step()
    deliver(setup, "c-a", 0, "statistics", statistics_frame(setup, 1))
    deliver(setup, "c-b", 0, "statistics", statistics_frame(setup, 2))
    setup.driver.step()
    assert setup.store.get_round(0).state == "open"  # type: ignore[union-attr]

    deliver(setup, "c-c", 0, "statistics", statistics_frame(setup, 3))
    setup.driver.step()

    closed = setup.store.get_round(0)
    assert closed is not None and closed.state == "closed" and closed.contributors == 3
    assert setup.store.get_fact("fitted_schema")["num_examples"] > 0


def test_deadline_with_too_few_contributions_extends_the_round(setup: Setup) -> None:
    enroll(setup, "c-a", "c-b")
    setup.driver.step()
    deliver(setup, "c-a", 0, "statistics", statistics_frame(setup, 1))

    setup.clock.advance(DEADLINE + 1)
    setup.driver.step()

    record = setup.store.get_round(0)
    assert record is not None and record.state == "open"
    assert record.deadline_extensions == 1
    assert record.deadline_at == setup.clock.now + timedelta(seconds=DEADLINE)
    assert list(setup.store.submissions(0)) == ["c-a"]

    deliver(setup, "c-b", 0, "statistics", statistics_frame(setup, 2))
    setup.driver.step()
    assert setup.store.get_round(0).state == "closed"  # type: ignore[union-attr]


def test_deadline_closes_with_min_clients_and_skips_the_missing_one(
    setup: Setup,
) -> None:
    enroll(setup, "c-a", "c-b", "c-c")
    setup.driver.step()
    finish_setup_round(setup, "c-a", "c-b", "c-c")
    setup.driver.step()  # opens round 1
    deliver(setup, "c-a", 1, "update", update_frame(setup, 1, 0, 1))
    deliver(setup, "c-b", 1, "update", update_frame(setup, 1, 0, 2))
    setup.driver.step()
    assert setup.store.get_round(1).state == "open"  # type: ignore[union-attr]

    setup.clock.advance(DEADLINE + 1)
    setup.driver.step()

    record = setup.store.get_round(1)
    assert record is not None and record.state == "closed" and record.contributors == 2
    assert setup.store.active_client_ids() == {"c-a", "c-b"}

    # Round 2 no longer waits for c-c ...
    setup.driver.step()
    for seed, client in ((3, "c-a"), (4, "c-b")):
        deliver(setup, client, 2, "update", update_frame(setup, 2, 1, seed))
        deliver(setup, client, 2, "metrics", metrics_frame(setup, 2, 1))
    setup.driver.step()
    assert setup.store.get_round(2).state == "closed"  # type: ignore[union-attr]


def test_a_client_that_asks_again_is_waited_for_again(setup: Setup) -> None:
    enroll(setup, "c-a", "c-b", "c-c")
    setup.driver.step()
    deliver(setup, "c-a", 0, "statistics", statistics_frame(setup, 1))
    deliver(setup, "c-b", 0, "statistics", statistics_frame(setup, 2))
    setup.clock.advance(DEADLINE + 1)
    setup.driver.step()
    assert "c-c" not in setup.store.active_client_ids()

    setup.store.ensure_client("c-c", None)  # what GET /rounds/current does
    setup.driver.step()  # opens round 1
    deliver(setup, "c-a", 1, "update", update_frame(setup, 1, 0, 1))
    deliver(setup, "c-b", 1, "update", update_frame(setup, 1, 0, 2))
    setup.driver.step()

    assert setup.store.get_round(1).state == "open"  # type: ignore[union-attr]


def metrics_frame(setup: Setup, round_id: int, version: int) -> bytes:
    length = setup.federation.frame_length("metrics")
    counts = np.zeros(length)
    counts[:6] = np.array([3, 1, 5, 1, 10, 4]) / setup.federation.layout.count_cap
    return encode_plain_frame(
        counts, 1.0, kind="metrics", round_id=round_id, model_version=version
    )


def test_training_round_applies_weighted_fedavg(setup: Setup) -> None:
    enroll(setup, "c-a", "c-b")
    setup.driver.step()
    finish_setup_round(setup, "c-a", "c-b")
    setup.driver.step()
    length = setup.federation.frame_length("update")
    deltas = [np.random.default_rng(seed).normal(size=length) for seed in (5, 6)]
    weights = [0.25, 1.0]

    for client, delta, weight in zip(("c-a", "c-b"), deltas, weights, strict=True):
        frame = encode_plain_frame(
            weight * np.clip(delta, -4, 4), weight, kind="update", round_id=1,
            model_version=0,
        )  # fmt: skip
        deliver(setup, client, 1, "update", frame)
    setup.driver.step()

    _, params = decode_model(setup.store.model(1).params)  # type: ignore[union-attr]
    expected = fedavg(np.zeros(length), deltas, weights, server_lr=1.0, clip=4.0)
    np.testing.assert_allclose(params, expected, rtol=0, atol=1e-12)


def test_fleet_metrics_are_summed_counts(setup: Setup) -> None:
    enroll(setup, "c-a", "c-b")
    setup.driver.step()
    finish_setup_round(setup, "c-a", "c-b")
    setup.driver.step()
    for seed, client in enumerate(("c-a", "c-b")):
        deliver(setup, client, 1, "update", update_frame(setup, 1, 0, seed))
    setup.driver.step()
    setup.driver.step()  # opens round 2, which carries metrics of version 1

    for seed, client in enumerate(("c-a", "c-b")):
        deliver(setup, client, 2, "update", update_frame(setup, 2, 1, seed))
        deliver(setup, client, 2, "metrics", metrics_frame(setup, 2, 1))
    setup.driver.step()

    fleet = setup.store.get_fact("fleet_metrics/1")
    assert fleet["counts"]["tp"] == 6 and fleet["counts"]["scored"] == 20
    assert fleet["metrics"]["precision"] == pytest.approx(6 / 8)


def test_first_training_round_carries_no_metrics(setup: Setup) -> None:
    enroll(setup, "c-a", "c-b")
    setup.driver.step()
    finish_setup_round(setup, "c-a", "c-b")
    setup.driver.step()

    first = setup.store.get_round(1)
    assert first is not None
    assert frame_kinds(first, True) == ("update",)
    with pytest.raises(InputError, match="accepts update frames, not 'metrics'"):
        setup.driver.open_round_for(1, "metrics")


def test_repeated_bytes_are_accepted_once_and_other_bytes_conflict(
    setup: Setup,
) -> None:
    enroll(setup, "c-a", "c-b", "c-c")
    setup.driver.step()
    frame = statistics_frame(setup, 1)

    assert deliver(setup, "c-a", 0, "statistics", frame) is True
    assert deliver(setup, "c-a", 0, "statistics", frame) is False
    with pytest.raises(ConflictError, match="already delivered a different statistics"):
        deliver(setup, "c-a", 0, "statistics", statistics_frame(setup, 2))


def test_closed_and_unknown_rounds_refuse_frames(setup: Setup) -> None:
    enroll(setup, "c-a", "c-b")
    setup.driver.step()
    finish_setup_round(setup, "c-a", "c-b")

    with pytest.raises(ConflictError, match="round 0 is closed"):
        setup.driver.open_round_for(0, "statistics")
    with pytest.raises(NotFoundError, match="round 5 does not exist"):
        setup.driver.open_round_for(5, "update")


def test_restart_keeps_the_open_round_and_its_frames(setup: Setup) -> None:
    enroll(setup, "c-a", "c-b")
    setup.driver.step()
    deliver(setup, "c-a", 0, "statistics", statistics_frame(setup, 1))
    setup.clock.advance(DEADLINE * 3)  # the server was down for a while

    driver = setup.restart()

    record = setup.store.get_round(0)
    assert record is not None and record.state == "open"
    assert record.deadline_at == setup.clock.now + timedelta(seconds=DEADLINE)
    assert list(setup.store.submissions(0)) == ["c-a"]
    deliver(setup, "c-b", 0, "statistics", statistics_frame(setup, 2))
    driver.step()
    assert setup.store.get_round(0).state == "closed"  # type: ignore[union-attr]


def test_a_round_caught_while_closing_is_aggregated_after_restart(
    setup: Setup,
) -> None:
    enroll(setup, "c-a", "c-b")
    setup.driver.step()
    deliver(setup, "c-a", 0, "statistics", statistics_frame(setup, 1))
    deliver(setup, "c-b", 0, "statistics", statistics_frame(setup, 2))
    setup.store.set_round_state(0, "closing")  # as if the server died mid-way

    setup.restart().step()

    assert setup.store.get_round(0).state == "closed"  # type: ignore[union-attr]
    assert setup.store.get_fact("fitted_schema") is not None


def test_fewer_than_min_clients_are_never_summed(setup: Setup) -> None:
    aggregator = setup.driver.aggregator

    with pytest.raises(CapacityError, match="at least 2 contributions"):
        combine(aggregator, [statistics_frame(setup, 1)], "statistics", 24)


def test_federation_finishes_after_the_evaluation_round(setup: Setup) -> None:
    enroll(setup, "c-a", "c-b")
    setup.driver.step()
    finish_setup_round(setup, "c-a", "c-b")
    for round_id in (1, 2):
        setup.driver.step()
        for seed, client in enumerate(("c-a", "c-b")):
            deliver(setup, client, round_id, "update",
                    update_frame(setup, round_id, round_id - 1, seed))  # fmt: skip
            if round_id > 1:
                deliver(setup, client, round_id, "metrics",
                        metrics_frame(setup, round_id, round_id - 1))  # fmt: skip
        setup.driver.step()
    setup.driver.step()  # opens the evaluation round
    for client in ("c-a", "c-b"):
        deliver(setup, client, 3, "metrics", metrics_frame(setup, 3, 2))
    setup.driver.step()
    setup.driver.step()

    assert setup.store.get_fact("finished") is True
    assert setup.store.model_versions() == [0, 1, 2]


def weightless_statistics(setup: Setup, round_id: int) -> bytes:
    """A well-formed frame whose weight is 0: a sum of such frames has no mean."""
    length = setup.federation.frame_length("statistics")
    return encode_plain_frame(
        np.zeros(length), 0.0, kind="statistics", round_id=round_id, model_version=0
    )


def poison_round(setup: Setup, round_id: int) -> None:
    """Both clients deliver weightless frames to ``round_id``; the round closes."""
    frame = weightless_statistics(setup, round_id)
    for client in ("c-a", "c-b"):
        deliver(setup, client, round_id, "statistics", frame)
    setup.driver.step()


def test_an_invalid_sum_fails_the_round_and_opens_a_new_attempt(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    enroll(setup, "c-a", "c-b")
    setup.driver.step()

    with caplog.at_level("INFO", logger="fedguard.server.rounds"):
        poison_round(setup, 0)
        setup.driver.step()

    failed = setup.store.get_round(0)
    assert failed is not None and failed.state == "failed"
    assert failed.contributors == 2
    reason = setup.store.round_failure(0)
    assert reason is not None and "malformed or malicious" in reason
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].exc_info is None
    assert "No individual update was decrypted" in errors[0].getMessage()

    attempt = setup.store.current_round()
    assert attempt is not None and attempt.round_id == 1
    assert (attempt.kind, attempt.model_version, attempt.state) == ("setup", 0, "open")
    assert attempt.deadline_at == setup.clock.now + timedelta(seconds=DEADLINE)


def test_honest_contributions_complete_the_federation_after_a_failed_attempt(
    setup: Setup,
) -> None:
    enroll(setup, "c-a", "c-b")
    setup.driver.step()
    poison_round(setup, 0)
    setup.driver.step()  # opens round 1, the second attempt of the setup round

    for seed, client in enumerate(("c-a", "c-b")):
        frame = encode_plain_frame(
            0.5 * np.abs(np.random.default_rng(seed).normal(size=24)), 0.5,
            kind="statistics", round_id=1, model_version=0,
        )  # fmt: skip
        deliver(setup, client, 1, "statistics", frame)
    setup.driver.step()
    # Training rounds 2 and 3 on model versions 0 and 1, then the evaluation round.
    for round_id, version in ((2, 0), (3, 1)):
        setup.driver.step()
        for seed, client in enumerate(("c-a", "c-b")):
            deliver(setup, client, round_id, "update",
                    update_frame(setup, round_id, version, seed))  # fmt: skip
            if version > 0:
                deliver(setup, client, round_id, "metrics",
                        metrics_frame(setup, round_id, version))  # fmt: skip
        setup.driver.step()
    setup.driver.step()
    evaluation = setup.store.current_round()
    assert evaluation is not None
    assert (evaluation.round_id, evaluation.kind, evaluation.model_version) == (
        4, "evaluation", 2,
    )  # fmt: skip
    for client in ("c-a", "c-b"):
        deliver(setup, client, 4, "metrics", metrics_frame(setup, 4, 2))
    setup.driver.step()
    setup.driver.step()

    assert setup.store.get_fact("finished") is True
    assert setup.driver.finished
    assert setup.store.model_versions() == [0, 1, 2]
    assert [r.state for r in setup.store.rounds()] == ["failed"] + ["closed"] * 4


def test_too_many_failed_attempts_in_a_row_stop_the_federation(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    reasons: list[str] = []
    setup.driver.on_halt = reasons.append
    enroll(setup, "c-a", "c-b")
    setup.driver.step()

    with caplog.at_level("INFO", logger="fedguard.server.rounds"):
        for round_id in range(3):  # max_failed_attempts is 3 by default
            poison_round(setup, round_id)
            setup.driver.step()

    assert [r.state for r in setup.store.rounds()] == ["failed"] * 3
    assert setup.driver.halted is not None and reasons == [setup.driver.halted]
    assert "fedguard clients revoke" in reasons[0]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 4 and errors[-1] == reasons[0]

    # The operator restarts the server (after revoking the culprit): a new attempt.
    driver = setup.restart()
    driver.step()
    attempt = setup.store.current_round()
    assert attempt is not None and (attempt.round_id, attempt.state) == (3, "open")
    assert attempt.kind == "setup"


def test_a_restart_keeps_a_deadline_that_has_not_passed(setup: Setup) -> None:
    enroll(setup, "c-a", "c-b")
    setup.driver.step()
    deliver(setup, "c-a", 0, "statistics", statistics_frame(setup, 1))
    opened = setup.store.get_round(0)
    assert opened is not None
    setup.clock.advance(DEADLINE / 4)  # down for a short while

    setup.restart()

    record = setup.store.get_round(0)
    assert record is not None and record.deadline_at == opened.deadline_at
    assert record.deadline_extensions == 0


def test_a_deadline_passed_while_down_is_pushed_back_but_not_counted(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    setup.store.ensure_client("c-a", "c-a")
    setup.store.ensure_client("c-b", "c-b")
    setup.store.ensure_client("c-c", "c-c")
    setup.driver.step()
    deliver(setup, "c-a", 0, "statistics", statistics_frame(setup, 1))
    deliver(setup, "c-b", 0, "statistics", statistics_frame(setup, 2))
    setup.clock.advance(DEADLINE - 5)  # within the grace period of a restart

    with caplog.at_level("INFO", logger="fedguard.server.rounds"):
        setup.restart()

    record = setup.store.get_round(0)
    assert record is not None and record.state == "open"
    assert record.deadline_at == setup.clock.now + timedelta(seconds=DEADLINE)
    assert record.deadline_extensions == 0
    assert "resuming round 0 (setup) with 2 accepted contributions" in caplog.text


def test_resuming_counts_only_complete_contributions(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    enroll(setup, "c-a", "c-b")
    setup.driver.step()
    finish_setup_round(setup, "c-a", "c-b")
    for seed, client in enumerate(("c-a", "c-b")):
        setup.driver.step()
        deliver(setup, client, 1, "update", update_frame(setup, 1, 0, seed))
    setup.driver.step()
    setup.driver.step()  # opens round 2: update and metrics from each client
    deliver(setup, "c-a", 2, "update", update_frame(setup, 2, 1, 1))
    deliver(setup, "c-a", 2, "metrics", metrics_frame(setup, 2, 1))
    deliver(setup, "c-b", 2, "update", update_frame(setup, 2, 1, 2))

    with caplog.at_level("INFO", logger="fedguard.server.rounds"):
        setup.restart()

    assert "resuming round 2 (training) with 1 accepted contributions" in caplog.text


def test_a_database_error_is_retried_without_a_traceback_per_attempt(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    """A step that fails for a reason other than the frames is retried with pauses.

    The rounds table is renamed away, which makes every step fail as a database
    that went away would, then renamed back.
    """
    engine = setup.store.engine
    with caplog.at_level("DEBUG", logger="fedguard.server.rounds"):
        setup.driver.start()
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE fg_rounds RENAME TO fg_rounds_away"))
        wait_until(lambda: "failed again (2)" in caplog.text)
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE fg_rounds_away RENAME TO fg_rounds"))
        enroll(setup, "c-a", "c-b")
        setup.driver.wake()
        wait_until(lambda: setup.store.current_round() is not None)
        setup.driver.stop()

    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "working again after" in caplog.text
    retries = [r for r in caplog.records if "failed again" in r.getMessage()]
    assert retries and all(r.levelname == "DEBUG" for r in retries)
    assert all(r.exc_info is None for r in retries)


def wait_until(condition: Callable[[], bool]) -> None:
    for _ in range(3000):
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError("the condition never held")
