"""Event Hubs checkpoints and partition ownership in the project's own database.

:class:`DatabaseCheckpointStore` is an ``azure.eventhub.CheckpointStore``: give it to
``EventHubConsumerClient(..., checkpoint_store=...)`` and the SDK keeps its load-balancing
claims and each partition's checkpoint in two tables beside the billing tables, so a
``consume`` deployment needs no storage account. It follows the semantics of the SDK's
``BlobCheckpointStore`` (``azure-eventhub-checkpointstoreblob``):

* names are case-insensitive: namespace, hub, consumer group and partition id are stored lower
  case (the blob store lower-cases its blob names), and ``list_*`` answer with the names they
  were asked for;
* ``claim_ownership`` is optimistic: a claim carrying an ``etag`` succeeds only if the stored
  etag is still that one, a claim without an etag only if no one has claimed the partition yet
  (blob: ``If-Match`` / ``If-None-Match: *``). Each successful claim gets a new etag and
  ``last_modified_time`` (Unix time, UTC, float seconds); failed claims are left out of the
  answer, as the SDK expects;
* ``update_checkpoint`` overwrites the partition's offset and sequence number (last writer
  wins, no etag), as the blob store does.

Plain ``UPDATE … WHERE`` / ``INSERT`` in short transactions, one per partition: portable SQL
for SQLite, PostgreSQL and Azure SQL, with no dialect-specific upsert.

Tables
------
``EventHubOwnership``   (Namespace, EventHub, ConsumerGroup, PartitionId) → OwnerId, ETag,
                        LastModifiedTime (float Unix seconds, UTC)
``EventHubCheckpoint``  (Namespace, EventHub, ConsumerGroup, PartitionId) → EventOffset,
                        SequenceNumber, UpdatedAtUTC (naive UTC)

:func:`checkpoint_store_for` picks the store a spec's ``consumer.checkpoint_store`` names.

The tables are defined with every other in :mod:`aoai_helpers.db.tables` (``checkpoint_metadata``
is its one ``MetaData``) and are created here, when first needed, with ``checkfirst``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from aoai_helpers.auth import credential as default_credential
from aoai_helpers.clock import system_utcnow
from aoai_helpers.clouds import Cloud, get_cloud
from aoai_helpers.db.engine import engine_from_url, masked_url, transaction
from aoai_helpers.db.tables import CHECKPOINT_KEY as _KEY
from aoai_helpers.db.tables import CHECKPOINT_TABLES, checkpoint_table, ownership_table
from aoai_helpers.db.tables import metadata as checkpoint_metadata
from aoai_helpers.exceptions import ConfigError, DatabaseError
from aoai_helpers.spec import Spec

try:
    from azure.eventhub import CheckpointStore
except ImportError as exc:  # pragma: no cover - the [azure] extra is missing
    raise ConfigError(
        "azure-eventhub is not installed: pip install 'apim-aoai-proxy[azure]'"
    ) from exc

__all__ = [
    "DatabaseCheckpointStore",
    "checkpoint_metadata",
    "checkpoint_store_for",
    "checkpoint_table",
    "ownership_table",
]

log = logging.getLogger(__name__)


def _key(namespace: object, hub: object, group: object, partition: object = None) -> dict[str, str]:
    """The stored (lower-case) key of one partition, or of the whole group without ``partition``."""
    parts = (namespace, hub, group) if partition is None else (namespace, hub, group, partition)
    return {name: str(value).lower() for name, value in zip(_KEY, parts, strict=False)}


def _where(table: Table, key: dict[str, str]) -> ColumnElement[bool]:
    return and_(*(table.c[name] == value for name, value in key.items()))


def _conflict(exc: DatabaseError) -> bool:
    """Did the statement fail on the primary key (someone else inserted the row first)?"""
    return isinstance(exc.__cause__, IntegrityError)


class DatabaseCheckpointStore(CheckpointStore):
    """An ``azure.eventhub.CheckpointStore`` on a SQLAlchemy engine (see the module docstring).

    Creates its two tables if they are missing (``create_tables=False`` to skip that).
    Database failures raise :class:`~aoai_helpers.exceptions.DatabaseError`; the SDK reports
    those from load balancing to ``on_error`` and tries again at the next interval.
    """

    def __init__(self, engine: Engine, *, create_tables: bool = True) -> None:
        self.engine = engine
        if create_tables:
            self.create_tables()

    def create_tables(self) -> None:
        """Create ``EventHubOwnership`` and ``EventHubCheckpoint`` if they do not exist."""
        try:
            with transaction(self.engine) as conn:
                checkpoint_metadata.create_all(conn, tables=CHECKPOINT_TABLES, checkfirst=True)
        except DatabaseError:
            with transaction(self.engine) as conn:  # another process may have won the race
                existing = set(inspect(conn).get_table_names())
            if not {t.name for t in CHECKPOINT_TABLES} <= existing:
                raise

    # ------------------------------------------------------------------------- ownership

    def list_ownership(
        self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str, **kwargs: Any
    ) -> list[dict[str, Any]]:
        """Every partition claim of the consumer group (``owner_id`` ``''`` = released)."""
        t = ownership_table
        key = _key(fully_qualified_namespace, eventhub_name, consumer_group)
        with transaction(self.engine) as conn:
            rows = conn.execute(
                select(t.c.PartitionId, t.c.OwnerId, t.c.ETag, t.c.LastModifiedTime)
                .where(_where(t, key))
                .order_by(t.c.PartitionId)
            ).all()
        return [
            {
                "fully_qualified_namespace": fully_qualified_namespace,
                "eventhub_name": eventhub_name,
                "consumer_group": consumer_group,
                "partition_id": row.PartitionId,
                "owner_id": row.OwnerId,
                "etag": row.ETag,
                "last_modified_time": float(row.LastModifiedTime),
            }
            for row in rows
        ]

    def claim_ownership(
        self, ownership_list: Iterable[dict[str, Any]], **kwargs: Any
    ) -> list[dict[str, Any]]:
        """Claim each partition in turn; return the claims that succeeded, with new etags.

        The dicts given are not changed: the answer holds copies with the new ``etag`` and
        ``last_modified_time``.
        """
        claimed = []
        for ownership in ownership_list:
            result = self._claim_one(ownership)
            if result is not None:
                claimed.append(result)
        return claimed

    def _claim_one(self, ownership: dict[str, Any]) -> dict[str, Any] | None:
        t = ownership_table
        key = _key(
            ownership["fully_qualified_namespace"],
            ownership["eventhub_name"],
            ownership["consumer_group"],
            ownership["partition_id"],
        )
        etag, now = str(uuid.uuid4()), time.time()
        values = {"OwnerId": str(ownership.get("owner_id") or ""), "ETag": etag}
        values_now: dict[str, Any] = {**values, "LastModifiedTime": now}
        expected = ownership.get("etag")
        if expected:  # If-Match: only over the claim this owner last saw
            with transaction(self.engine) as conn:
                stmt = update(t).where(_where(t, key), t.c.ETag == str(expected))
                won = conn.execute(stmt.values(values_now)).rowcount == 1
        else:  # If-None-Match: *: only a partition nobody has claimed yet
            try:
                with transaction(self.engine) as conn:
                    conn.execute(insert(t).values({**key, **values_now}))
                won = True
            except DatabaseError as exc:
                if not _conflict(exc):
                    raise
                won = False
        if not won:
            log.info(
                "owner %r lost the claim to partition %s of %s/%s (%s): its etag is stale",
                values["OwnerId"],
                key["PartitionId"],
                key["Namespace"],
                key["EventHub"],
                key["ConsumerGroup"],
            )
            return None
        return {**ownership, "etag": etag, "last_modified_time": now}

    # ------------------------------------------------------------------------- checkpoints

    def update_checkpoint(self, checkpoint: dict[str, str | int | None], **kwargs: Any) -> None:
        """Store the partition's ``offset`` and ``sequence_number`` (overwriting the last ones)."""
        offset, sequence = checkpoint.get("offset"), checkpoint.get("sequence_number")
        if offset is None or not isinstance(sequence, int) or isinstance(sequence, bool):
            raise ValueError(
                f"a checkpoint needs an offset and an integer sequence number, got offset "
                f"{offset!r} and sequence number {sequence!r}"
            )
        t = checkpoint_table
        key = _key(
            checkpoint["fully_qualified_namespace"],
            checkpoint["eventhub_name"],
            checkpoint["consumer_group"],
            checkpoint["partition_id"],
        )
        values = {
            "EventOffset": str(offset),
            "SequenceNumber": sequence,
            "UpdatedAtUTC": system_utcnow(),
        }
        if self._update_checkpoint_row(key, values):
            return
        try:
            with transaction(self.engine) as conn:
                conn.execute(insert(t).values({**key, **values}))
            return
        except DatabaseError as exc:
            if not _conflict(exc):
                raise
        # Another writer created the row between our UPDATE and INSERT: it exists now.
        if not self._update_checkpoint_row(key, values):  # pragma: no cover - needs a deletion
            raise DatabaseError(f"cannot store the checkpoint of partition {key['PartitionId']}")

    def _update_checkpoint_row(self, key: dict[str, str], values: dict[str, Any]) -> bool:
        t = checkpoint_table
        with transaction(self.engine) as conn:
            return conn.execute(update(t).where(_where(t, key)).values(values)).rowcount == 1

    def list_checkpoints(
        self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str, **kwargs: Any
    ) -> list[dict[str, Any]]:
        """The checkpoint of every partition of the consumer group that has one."""
        t = checkpoint_table
        key = _key(fully_qualified_namespace, eventhub_name, consumer_group)
        with transaction(self.engine) as conn:
            rows = conn.execute(
                select(t.c.PartitionId, t.c.EventOffset, t.c.SequenceNumber)
                .where(_where(t, key))
                .order_by(t.c.PartitionId)
            ).all()
        return [
            {
                "fully_qualified_namespace": fully_qualified_namespace,
                "eventhub_name": eventhub_name,
                "consumer_group": consumer_group,
                "partition_id": row.PartitionId,
                "offset": row.EventOffset,
                "sequence_number": int(row.SequenceNumber),
            }
            for row in rows
        ]

    def __repr__(self) -> str:
        return f"DatabaseCheckpointStore({masked_url(str(self.engine.url))!r})"


def checkpoint_store_for(
    spec: Spec, *, credential: Any = None, engine: Engine | None = None
) -> tuple[CheckpointStore, Callable[[], None]]:
    """The checkpoint store ``spec.consumer`` asks for, and what releases it when done.

    ``database``: a :class:`DatabaseCheckpointStore` on ``engine`` (default: an engine for
    ``spec.database.url``, disposed by the returned callable). ``blob``: the SDK's
    ``BlobCheckpointStore`` on ``consumer.blob_account_url`` (a URL, or a bare account name on
    the spec's cloud) and ``consumer.blob_container``, signed in with ``credential`` (default:
    :func:`aoai_helpers.auth.credential`; none for a URL carrying a SAS token).
    """
    cloud = get_cloud(spec.cloud)
    consumer = spec.consumer
    if consumer.checkpoint_store == "database":
        if engine is not None:
            return DatabaseCheckpointStore(engine), _nothing
        own = engine_from_url(spec.database.url)
        try:
            return DatabaseCheckpointStore(own), own.dispose
        except BaseException:
            own.dispose()
            raise
    try:
        from azure.eventhub.extensions.checkpointstoreblob import BlobCheckpointStore
    except ImportError:
        raise ConfigError(
            "consumer.checkpoint_store is 'blob' but azure-eventhub-checkpointstoreblob is not "
            "installed: pip install 'apim-aoai-proxy[azure]'"
        ) from None
    url = _blob_account_url(consumer.blob_account_url, cloud)
    if credential is None and "?" not in url:
        credential = default_credential(cloud)
    blob = BlobCheckpointStore(url, consumer.blob_container, credential=credential)
    return blob, blob.close


def _blob_account_url(value: str | None, cloud: Cloud) -> str:
    if not value:
        raise ConfigError(
            "consumer.blob_account_url is required when consumer.checkpoint_store is 'blob' "
            f"(https://<account>.blob.{cloud.storage_suffix})"
        )
    if "://" in value:
        return value.rstrip("/")
    return f"https://{value}.blob.{cloud.storage_suffix}"  # a bare account name


def _nothing() -> None:
    return None
