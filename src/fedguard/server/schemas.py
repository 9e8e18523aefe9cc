"""Request and response bodies of the orchestrator's HTTP API (pydantic models).

They make the OpenAPI schema served at ``/openapi.json`` exact: every response the
API sends validates against the schema of its status code.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

CLIENT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
CLIENT_ID_PATTERN = r"^c-[0-9a-f]{16}$"

RoundKind = Literal["setup", "training", "evaluation"]
RoundState = Literal["open", "closing", "closed", "failed"]
FrameKindName = Literal["update", "statistics", "metrics"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(_Model):
    """Every error response: one sentence saying what was wrong."""

    error: str = Field(examples=["round 3 is closed; it accepts no frames"])


class Health(_Model):
    status: Literal["ok"]
    version: str
    federation: str
    round: int | None
    finished: bool


class RegisterRequest(_Model):
    name: str = Field(pattern=CLIENT_NAME_PATTERN, description="cloud or tenant name")
    client_id: str | None = Field(
        default=None,
        pattern=CLIENT_ID_PATTERN,
        description="the id received at first registration, to re-join",
    )


class Registration(_Model):
    client_id: str
    name: str
    fingerprint: str = Field(description="SHA-256 fingerprint of the public key")


class PackingInfo(_Model):
    key_bits: int
    clip: float
    scale_bits: int
    max_contributors: int
    slot_bits: int
    slots_per_ciphertext: int
    length: int = Field(description="values per frame of this kind")
    ciphertexts: int = Field(description="ciphertexts per frame of this kind")


class TrainingInfo(_Model):
    epochs: int
    batch_size: int
    learning_rate: float
    l2: float
    class_weight: Literal["none", "balanced"]
    seed: int


class ModelInfo(_Model):
    kind: str
    n_features: int
    n_params: int


class FederationInfo(_Model):
    """Everything an agent needs before its first round."""

    name: str
    fingerprint: str
    public_key: dict[str, Any] | None = Field(
        description="n and hs in hexadecimal; null in a plaintext federation"
    )
    plaintext: bool
    dataset: str
    feature_schema: dict[str, Any] = Field(description="schema before fitting")
    fitted_schema: dict[str, Any] | None = Field(
        description="schema fitted by the setup round; null until then"
    )
    packing: dict[str, PackingInfo] = Field(
        description="packing per frame kind: update, statistics, metrics"
    )
    metrics_layout: dict[str, Any] | None
    model: ModelInfo
    training: TrainingInfo
    rounds: int
    min_clients: int
    max_contributors: int
    max_examples: int
    round_deadline: float
    server_lr: float


class RoundInfo(_Model):
    """The current round as one agent sees it."""

    round: int | None
    kind: RoundKind | None
    state: RoundState | None
    model_version: int | None
    opened_at: datetime | None
    deadline_at: datetime | None
    seconds_left: float | None
    required: list[FrameKindName]
    delivered: list[FrameKindName] = Field(
        description="frames the calling client has delivered in this round"
    )
    contributions: int = Field(description="clients that delivered every frame")
    finished: bool


class ClientTimings(_Model):
    """Per-round costs an agent reports; not secret, unlike its metrics."""

    # Strict: a boolean or a numeric string is a malformed report, not a number.
    model_config = ConfigDict(extra="forbid", strict=True)

    training_seconds: float = Field(ge=0, le=86_400)
    encryption_seconds: float = Field(ge=0, le=86_400)
    upload_seconds: float = Field(ge=0, le=86_400)
    bytes_uploaded: int = Field(ge=0, le=1 << 40)


class RoundStatus(_Model):
    round: int
    kind: RoundKind
    state: RoundState
    model_version: int
    opened_at: datetime
    deadline_at: datetime
    closed_at: datetime | None
    contributors: int
    client_ids: list[str] = Field(description="clients that delivered every frame")
    deadline_extensions: int
    round_seconds: float | None = Field(description="from opening to closing")
    aggregation_seconds: float | None
    decryption_seconds: float | None
    training_seconds: float | None = Field(description="mean over reporting agents")
    encryption_seconds: float | None = Field(description="mean over reporting agents")
    upload_seconds: float | None = Field(description="mean over reporting agents")
    bytes_uploaded: int = Field(description="all frames accepted in this round")
    fleet_metrics: dict[str, Any] | None = Field(
        description="fleet-wide counts and metrics of this round's model version"
    )
    failure: str | None = Field(
        default=None,
        description="why a failed round failed: its sum of contributions was invalid",
    )


class RoundList(_Model):
    rounds: list[RoundStatus]


class UploadReceipt(_Model):
    round: int
    kind: FrameKindName
    client_id: str
    duplicate: bool = Field(description="true when these exact bytes were stored")
    bytes: int


class TimingsReceipt(_Model):
    round: int
    client_id: str


class MetricsHistory(_Model):
    """Per-round figures, and the fleet metrics of each model version."""

    rounds: list[RoundStatus]
    model_versions: list[int]


class DirectiveReceipt(_Model):
    directive_id: str
    status: Literal["applied", "refused", "failed"]
