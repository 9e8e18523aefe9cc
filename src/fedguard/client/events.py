"""The recent events an agent scores in each round, and attack bursts on top.

After every round an agent scores its *recent events* with the global model and
reports, encrypted, how many it scored and how many it flagged, overall and per
attack family; the orchestrator learns only the fleet's sums (the threat rate). What
counts as recent depends on where the agent's data comes from:

* **synthetic** clouds draw fresh events of their own profile every round
  (:func:`fedguard.data.synthetic.generate_recent_events`), as many as they hold
  out, from a seed of their own for each round: a stream of new traffic.
* **NSL-KDD** and **mapped CSV** files have no time order to cut a stream from, so
  the agent scores its held-out rows, which it never trains on, every round. Their
  threat rate then changes only with the model and with bursts.

An **attack burst** (``fedguard client --attack-burst ROUND[:COUNT]``) adds COUNT
attack events to the recent events of round ROUND, so that a federation run shows
a threat-rate policy firing. Synthetic clouds generate events of their most frequent
attack type; file-based agents draw rows, with replacement, from the attack rows they
train on. COUNT defaults to :data:`BURST_FACTOR` times the round's ordinary events:
among ``C`` agents of equal size, one agent's burst moves the fleet's threat rate
from ``t`` to about ``(C·t + 3·d) / (C + 3)``, with ``d`` the model's detection rate
of the burst's attacks; with three agents on NSL-KDD, from 0.45 to about 0.70.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from fedguard.data.dataset import Dataset, concat_datasets
from fedguard.errors import ConfigError

if TYPE_CHECKING:
    from fedguard.data.synthetic import CloudProfile

BURST_FACTOR = 3
MAX_BURST_EVENTS = 100_000
# Round 1 trains model version 0, which is untrained: nothing is scored before round 2.
FIRST_SCORED_ROUND = 2
MAX_ROUND = 2**31 - 1


@dataclass(frozen=True)
class AttackBurst:
    """``count`` extra attack events among the recent events of ``round``.

    ``count`` None means :data:`BURST_FACTOR` times the round's ordinary events.
    """

    round: int
    count: int | None = None

    def __post_init__(self) -> None:
        if not FIRST_SCORED_ROUND <= self.round <= MAX_ROUND:
            raise ConfigError(
                f"--attack-burst ROUND must be an integer in [{FIRST_SCORED_ROUND}, "
                f"{MAX_ROUND}] (round 1 scores no events); got {self.round}"
            )
        if self.count is not None and not 1 <= self.count <= MAX_BURST_EVENTS:
            raise ConfigError(
                f"--attack-burst COUNT must be an integer in [1, {MAX_BURST_EVENTS}]; "
                f"got {self.count}"
            )

    @classmethod
    def parse(cls, text: str) -> AttackBurst:
        """``ROUND`` or ``ROUND:COUNT``, for example ``4`` or ``4:2500``."""
        parts = text.split(":")
        try:
            numbers = [int(part) for part in parts]
        except ValueError:
            numbers = []
        if len(numbers) not in (1, 2) or len(numbers) != len(parts):
            raise ConfigError(
                "--attack-burst must be ROUND or ROUND:COUNT with integers "
                f"(e.g. 4 or 4:2500); got {text!r}"
            )
        return cls(numbers[0], numbers[1] if len(numbers) == 2 else None)

    def __str__(self) -> str:
        return str(self.round) if self.count is None else f"{self.round}:{self.count}"

    def size(self, ordinary: int) -> int:
        """Extra events this burst adds to a round of ``ordinary`` events."""
        return BURST_FACTOR * ordinary if self.count is None else self.count


def burst_size(bursts: Sequence[AttackBurst], round_id: int, ordinary: int) -> int:
    """Extra attack events of ``round_id`` (bursts of the same round add up)."""
    return sum(b.size(ordinary) for b in bursts if b.round == round_id)


class RecentEvents(Protocol):
    """What an agent scores in each round."""

    bursts: tuple[AttackBurst, ...]

    def for_round(self, round_id: int) -> Dataset: ...


class HeldOutEvents:
    """The held-out rows every round, plus burst rows drawn from ``train``'s attacks."""

    def __init__(
        self,
        holdout: Dataset,
        train: Dataset,
        bursts: Sequence[AttackBurst] = (),
        *,
        seed: int,
    ) -> None:
        if bursts and train.num_attacks == 0:
            raise ConfigError(
                "--attack-burst needs attack rows to draw from; this agent's "
                f"{len(train)} training rows ({train.name}) hold none"
            )
        self.holdout = holdout
        self.attacks = train.subset(train.labels == 1)
        self.bursts = tuple(bursts)
        self._seed = seed

    def for_round(self, round_id: int) -> Dataset:
        extra = burst_size(self.bursts, round_id, len(self.holdout))
        if extra == 0:
            return self.holdout

        rng = np.random.default_rng(np.random.SeedSequence([self._seed, round_id]))
        drawn = self.attacks.subset(rng.integers(0, len(self.attacks), size=extra))
        return concat_datasets([self.holdout, drawn], name=self.holdout.name)


class SyntheticEvents:
    """Fresh events of one synthetic cloud every round, bursts included."""

    def __init__(
        self,
        profile: CloudProfile,
        per_round: int,
        bursts: Sequence[AttackBurst] = (),
        *,
        seed: int,
    ) -> None:
        self.profile = profile
        self.per_round = per_round
        self.bursts = tuple(bursts)
        self._seed = seed

    def for_round(self, round_id: int) -> Dataset:
        from fedguard.data.synthetic import generate_recent_events

        seed = np.random.SeedSequence([self._seed, round_id]).generate_state(1)[0]
        return generate_recent_events(
            self.profile,
            self.per_round,
            seed=int(seed),
            extra_attacks=burst_size(self.bursts, round_id, self.per_round),
        )
