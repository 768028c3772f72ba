"""The shapes of what flows through the pipeline: chat snapshots and prospects."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Role = Literal["user", "assistant", "system"]
Intent = Literal["compra", "informacion", "soporte", "queja", "otro"]

PROSPECT_FIELDS: tuple[str, ...] = (
    "nombre",
    "email",
    "telefono",
    "empresa",
    "cargo",
    "ubicacion",
    "productos_interes",
    "presupuesto",
    "plazo",
    "nivel_interes",
    "intencion",
    "idioma",
    "resumen",
)


class ChatMessage(BaseModel):
    """One turn of a chat."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role
    content: str


ShortText = Annotated[str | None, Field(default=None, max_length=500)]


class Prospect(BaseModel):
    """What we know about the person on the other side of the chat (never the assistant)."""

    model_config = ConfigDict(extra="ignore")

    nombre: ShortText = None
    email: ShortText = None
    telefono: ShortText = None
    empresa: ShortText = None
    cargo: ShortText = None
    ubicacion: ShortText = None
    productos_interes: list[Annotated[str, Field(max_length=200)]] = Field(
        default_factory=list, max_length=50
    )
    presupuesto: ShortText = None
    plazo: ShortText = None
    nivel_interes: int | None = Field(default=None, ge=1, le=10)
    intencion: Intent | None = None
    idioma: Annotated[str | None, Field(default=None, max_length=8)] = None
    resumen: Annotated[str | None, Field(default=None, max_length=2000)] = None

    @field_validator("productos_interes", mode="before")
    @classmethod
    def _none_is_empty_list(cls, value: object) -> object:
        return [] if value is None else value


class SnapshotIn(BaseModel):
    """The body of `POST /api/nexus/producer`: a whole conversation so far."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    messages: list[ChatMessage] = Field(min_length=1)
    fingerprint: str = Field(min_length=1)
    session_id: str = Field(alias="sessionId", min_length=1)
    metadata: dict[str, object] | None = None


class KeptExtraction(BaseModel):
    """An extraction kept in a dead letter because it could not be saved; a replay saves it
    instead of asking the model again."""

    model_config = ConfigDict(extra="ignore")

    prospect: Prospect
    extractor: str = "kept"
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    batch: bool = False


class QueuedSnapshot(BaseModel):
    """The body of a queued message: what the producer writes (`body_of`) and the worker reads.

    The producer also queues the snapshot's `metadata`, and as it queues a body,
    `nexus.enqueue_snapshot` (migrations 004, 012) adds `seq`, the snapshot's number within its
    session, and `receivedAt`. A replayed dead letter carries `replayedFrom`, the message id it
    first had, and `keptExtraction` when its extraction was made but could not be saved. The
    worker reads only the fields declared here.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    session_id: str = Field(alias="sessionId", min_length=1)
    fingerprint: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    # Stored in an integer column: a number beyond it makes the body undecodable, not the save.
    seq: int | None = Field(default=None, ge=0, le=2**31 - 1)
    received_at: datetime | None = Field(default=None, alias="receivedAt")
    kept_extraction: KeptExtraction | None = Field(default=None, alias="keptExtraction")

    @staticmethod
    def body_of(snapshot: SnapshotIn) -> dict[str, Any]:
        """The body to queue for an accepted snapshot (built directly: this is the hot path)."""
        return {
            "sessionId": snapshot.session_id,
            "fingerprint": snapshot.fingerprint,
            "messages": [m.model_dump() for m in snapshot.messages],
            "metadata": snapshot.metadata or {},
        }
