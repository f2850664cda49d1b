"""DatabaseCheckpointStore: the SDK's CheckpointStore contract, on SQLite (and PostgreSQL).

The contract tests run twice: on :class:`DatabaseCheckpointStore` and on the in-memory store
the SDK itself uses when it is given none, to show the two answer alike. Where they differ on
purpose (names are case-insensitive here, as in the blob store; a claim carrying an etag for a
partition nobody owns fails here, as with the blob store's ``If-Match``), a test says so.

The database tests run on SQLite and on the session's throwaway PostgreSQL server (``pg_server``).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.eventhub import CheckpointStore, LoadBalancingStrategy
from azure.eventhub._eventprocessor.in_memory_checkpoint_store import InMemoryCheckpointStore
from azure.eventhub._eventprocessor.ownership_manager import OwnershipManager
from sqlalchemy import inspect
from sqlalchemy.engine import Engine

from aoai_helpers.db.engine import engine_from_url
from aoai_helpers.eventlog.checkpoints import (
    DatabaseCheckpointStore,
    checkpoint_metadata,
    checkpoint_store_for,
)
from aoai_helpers.exceptions import ConfigError
from aoai_helpers.spec import parse_spec

NS, HUB, GROUP = "ns.servicebus.windows.net", "aoai-usage", "$Default"


def _own(partition: str, owner: str, etag: str | None = None, **key: str) -> dict[str, Any]:
    ownership = {
        "fully_qualified_namespace": key.get("ns", NS),
        "eventhub_name": key.get("hub", HUB),
        "consumer_group": key.get("group", GROUP),
        "partition_id": partition,
        "owner_id": owner,
    }
    if etag is not None:
        ownership["etag"] = etag
    return ownership


def _cp(partition: str, offset: str, seq: int, **key: str) -> dict[str, str | int | None]:
    return {
        "fully_qualified_namespace": key.get("ns", NS),
        "eventhub_name": key.get("hub", HUB),
        "consumer_group": key.get("group", GROUP),
        "partition_id": partition,
        "offset": offset,
        "sequence_number": seq,
    }


def _owners(store: CheckpointStore, **key: str) -> dict[str, str]:
    rows = store.list_ownership(key.get("ns", NS), key.get("hub", HUB), key.get("group", GROUP))
    return {o["partition_id"]: o["owner_id"] for o in rows}


_POSTGRES = pytest.param("postgresql", marks=pytest.mark.postgres)


def _database(
    kind: str, engine: Engine, request: pytest.FixtureRequest
) -> Iterator[DatabaseCheckpointStore]:
    """Ours on the test database (SQLite, with the billing schema), or on a new PostgreSQL database."""
    if kind == "sqlite":
        yield DatabaseCheckpointStore(engine)
        return
    pg = engine_from_url(request.getfixturevalue("pg_server").new_database())
    try:
        yield DatabaseCheckpointStore(pg)
    finally:
        checkpoint_metadata.drop_all(pg)
        pg.dispose()


@pytest.fixture(params=["sqlite", _POSTGRES, "memory"])
def store(request: pytest.FixtureRequest, engine: Engine) -> Iterator[CheckpointStore]:
    """Ours, and the SDK's own in-memory store: the contract tests run on both."""
    if request.param == "memory":
        yield InMemoryCheckpointStore()  # type: ignore[no-untyped-call]
    else:
        yield from _database(request.param, engine, request)


@pytest.fixture(params=["sqlite", _POSTGRES])
def db_store(request: pytest.FixtureRequest, engine: Engine) -> Iterator[DatabaseCheckpointStore]:
    """Ours only."""
    yield from _database(request.param, engine, request)


# ----------------------------------------------------------------------------- both stores


def test_a_new_claim_gets_an_etag_and_a_utc_timestamp(store: CheckpointStore) -> None:
    before = time.time()
    asked = _own("0", "owner-a")
    (claimed,) = store.claim_ownership([asked])
    assert claimed["owner_id"] == "owner-a" and claimed["partition_id"] == "0"
    assert isinstance(claimed["etag"], str) and claimed["etag"]
    assert before <= claimed["last_modified_time"] <= time.time()  # float Unix time (UTC)
    (listed,) = store.list_ownership(NS, HUB, GROUP)
    assert {k: listed[k] for k in ("owner_id", "etag", "partition_id")} == {
        "owner_id": "owner-a",
        "etag": claimed["etag"],
        "partition_id": "0",
    }
    assert listed["last_modified_time"] == pytest.approx(claimed["last_modified_time"])


def test_a_claim_without_etag_on_an_owned_partition_fails(store: CheckpointStore) -> None:
    store.claim_ownership([_own("0", "owner-a")])
    assert list(store.claim_ownership([_own("0", "owner-b")])) == []
    assert _owners(store) == {"0": "owner-a"}


def test_renewing_with_the_current_etag_gives_a_new_etag(store: CheckpointStore) -> None:
    (first,) = store.claim_ownership([_own("0", "owner-a")])
    etag, stamp = first["etag"], first["last_modified_time"]  # the SDK's store reuses its dicts
    (renewed,) = store.claim_ownership([_own("0", "owner-a", etag)])
    assert renewed["etag"] != etag
    assert renewed["last_modified_time"] >= stamp
    (listed,) = store.list_ownership(NS, HUB, GROUP)
    assert listed["etag"] == renewed["etag"]


def test_a_steal_wins_once_and_the_stale_etag_then_loses(store: CheckpointStore) -> None:
    (a,) = store.claim_ownership([_own("0", "owner-a")])
    etag_a = a["etag"]
    (b,) = store.claim_ownership([_own("0", "owner-b", etag_a)])  # b saw a's claim: steals
    assert b["owner_id"] == "owner-b"
    assert list(store.claim_ownership([_own("0", "owner-a", etag_a)])) == []  # a: too late
    assert list(store.claim_ownership([_own("0", "owner-c", etag_a)])) == []
    assert _owners(store) == {"0": "owner-b"}


def test_only_the_successful_claims_are_answered(store: CheckpointStore) -> None:
    store.claim_ownership([_own("1", "owner-b")])
    claimed = store.claim_ownership([_own("0", "owner-a"), _own("1", "owner-a"), _own("2", "a")])
    assert sorted(c["partition_id"] for c in claimed) == ["0", "2"]
    assert _owners(store) == {"0": "owner-a", "1": "owner-b", "2": "a"}


def test_release_keeps_the_row_with_an_empty_owner(store: CheckpointStore) -> None:
    (a,) = store.claim_ownership([_own("0", "owner-a")])
    (released,) = store.claim_ownership([{**a, "owner_id": ""}])  # what release_ownership does
    assert _owners(store) == {"0": ""}
    (b,) = store.claim_ownership([_own("0", "owner-b", released["etag"])])
    assert b["owner_id"] == "owner-b"


def test_lists_are_scoped_to_namespace_hub_and_group(store: CheckpointStore) -> None:
    store.claim_ownership([_own("0", "a"), _own("0", "b", group="other"), _own("0", "c", hub="h2")])
    store.update_checkpoint(_cp("0", "100", 5))
    store.update_checkpoint(_cp("0", "900", 50, group="other"))
    assert _owners(store) == {"0": "a"}
    assert _owners(store, group="other") == {"0": "b"}
    assert _owners(store, hub="h2") == {"0": "c"}
    assert [c["sequence_number"] for c in store.list_checkpoints(NS, HUB, GROUP)] == [5]
    assert [c["offset"] for c in store.list_checkpoints(NS, HUB, "other")] == ["900"]


def test_a_group_with_nothing_stored_lists_nothing(
    store: CheckpointStore, request: pytest.FixtureRequest
) -> None:
    if isinstance(store, InMemoryCheckpointStore):  # its trie lookup misses, then lists all
        request.applymarker(
            pytest.mark.xfail(strict=True, reason="SDK in-memory store: unknown key lists all")
        )
    store.claim_ownership([_own("0", "a")])
    store.update_checkpoint(_cp("0", "100", 5))
    assert list(store.list_ownership(NS, HUB, "other")) == []
    assert list(store.list_checkpoints("other.servicebus.windows.net", HUB, GROUP)) == []


def test_checkpoints_are_stored_and_overwritten_per_partition(store: CheckpointStore) -> None:
    store.update_checkpoint(_cp("0", "4096", 7))
    store.update_checkpoint(_cp("1", "128", 2))
    store.update_checkpoint(_cp("0", "8192", 9))
    listed = sorted(store.list_checkpoints(NS, HUB, GROUP), key=lambda c: c["partition_id"])
    assert listed == [
        {
            "fully_qualified_namespace": NS,
            "eventhub_name": HUB,
            "consumer_group": GROUP,
            "partition_id": "0",
            "offset": "8192",
            "sequence_number": 9,
        },
        {
            "fully_qualified_namespace": NS,
            "eventhub_name": HUB,
            "consumer_group": GROUP,
            "partition_id": "1",
            "offset": "128",
            "sequence_number": 2,
        },
    ]


def test_the_sdk_load_balancer_splits_partitions_between_two_owners(
    store: CheckpointStore,
) -> None:
    """The SDK's own OwnershipManager, on the store: 4 partitions end up 2 + 2, never shared."""

    class _Hub:  # what OwnershipManager reads of the client (no network involved)
        class _address:
            hostname = NS

        eventhub_name = HUB

        def get_partition_ids(self) -> list[str]:
            return ["0", "1", "2", "3"]

    managers = [
        OwnershipManager(
            _Hub(),  # type: ignore[arg-type]
            GROUP,
            owner,
            store,
            60.0,
            LoadBalancingStrategy.BALANCED,
            None,
        )
        for owner in ("owner-a", "owner-b")
    ]
    for _ in range(8):
        for manager in managers:
            manager.claim_ownership()
    owners = _owners(store)
    assert sorted(owners) == ["0", "1", "2", "3"]
    assert sorted(owners.values()) == ["owner-a", "owner-a", "owner-b", "owner-b"]


# ----------------------------------------------------------------------------- ours only


def test_names_are_case_insensitive_like_the_blob_store(db_store: DatabaseCheckpointStore) -> None:
    upper = {"ns": "NS.ServiceBus.Windows.Net", "hub": "AOAI-Usage", "group": "$DEFAULT"}
    (a,) = db_store.claim_ownership([_own("0", "owner-a", **upper)])
    assert list(db_store.claim_ownership([_own("0", "owner-b")])) == []  # same partition
    (listed,) = db_store.list_ownership(NS, HUB, GROUP)
    assert (listed["etag"], listed["eventhub_name"]) == (a["etag"], HUB)  # names as asked
    db_store.update_checkpoint(_cp("0", "10", 1, **upper))
    db_store.update_checkpoint(_cp("0", "20", 2))
    (cp,) = db_store.list_checkpoints(upper["ns"], upper["hub"], upper["group"])
    assert (cp["offset"], cp["sequence_number"], cp["eventhub_name"]) == ("20", 2, "AOAI-Usage")
    # The SDK's in-memory store is case-sensitive: this is where the two differ on purpose.
    memory = InMemoryCheckpointStore()  # type: ignore[no-untyped-call]
    memory.claim_ownership([_own("0", "owner-a", **upper)])
    assert len(list(memory.claim_ownership([_own("0", "owner-b")]))) == 1  # a second owner


def test_an_etag_for_an_unclaimed_partition_fails_like_blob_if_match(
    db_store: DatabaseCheckpointStore,
) -> None:
    assert db_store.claim_ownership([_own("0", "owner-a", "stale-etag")]) == []
    assert _owners(db_store) == {}


def test_concurrent_claims_of_one_partition_have_one_winner(
    db_store: DatabaseCheckpointStore,
) -> None:
    (seed,) = db_store.claim_ownership([_own("9", "seed")])
    barrier = threading.Barrier(6)
    new: list[list[dict[str, Any]]] = []
    steal: list[list[dict[str, Any]]] = []

    def race(owner: str) -> None:
        barrier.wait()
        new.append(db_store.claim_ownership([_own("0", owner)]))
        steal.append(db_store.claim_ownership([_own("9", owner, seed["etag"])]))

    threads = [threading.Thread(target=race, args=(f"owner-{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(r) for r in new) == 1 and sum(len(r) for r in steal) == 1
    owners = _owners(db_store)
    assert [r[0]["owner_id"] for r in new if r] == [owners["0"]]
    assert [r[0]["owner_id"] for r in steal if r] == [owners["9"]]


def test_a_checkpoint_needs_an_offset_and_a_sequence_number(
    db_store: DatabaseCheckpointStore,
) -> None:
    with pytest.raises(ValueError, match="sequence number"):
        db_store.update_checkpoint({**_cp("0", "1", 1), "sequence_number": None})
    with pytest.raises(ValueError, match="offset"):
        db_store.update_checkpoint({**_cp("0", "1", 1), "offset": None})
    assert db_store.list_checkpoints(NS, HUB, GROUP) == []


def test_tables_are_created_once_on_their_own_metadata(tmp_path: Path) -> None:
    engine = engine_from_url(str(tmp_path / "cp.db"))
    try:
        DatabaseCheckpointStore(engine)
        store = DatabaseCheckpointStore(engine)  # checkfirst: a second start changes nothing
        store.update_checkpoint(_cp("0", "1", 1))
        tables = set(inspect(engine).get_table_names())
        assert tables == {"EventHubCheckpoint", "EventHubOwnership"}  # no billing tables needed
        pk = inspect(engine).get_pk_constraint("EventHubOwnership")["constrained_columns"]
        assert pk == ["Namespace", "EventHub", "ConsumerGroup", "PartitionId"]
        assert "***" not in repr(store) and "cp.db" in repr(store)
    finally:
        engine.dispose()


# ----------------------------------------------------------------------------- choosing a store


def _spec(consumer: dict[str, Any], cloud: str = "AzureCloud") -> Any:
    return parse_spec(
        {
            "cloud": cloud,
            "apim": {"resource_group": "rg", "service_name": "apim"},
            "backends": [{"endpoint": "https://aoai.openai.azure.com", "deployments": {"g": "m"}}],
            "subscriptions": [{"id": "bu1", "display_name": "BU 1", "business_unit": "BU1"}],
            "event_hub": {"namespace": "ns", "name": HUB},
            "consumer": consumer,
        }
    )


class _Credential:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:  # never called: no network
        raise AssertionError("no token may be requested in tests")


def test_the_spec_chooses_the_database_store(engine: Engine) -> None:
    store, release = checkpoint_store_for(_spec({}), engine=engine)
    assert isinstance(store, DatabaseCheckpointStore) and store.engine is engine
    release()  # an engine we were given is left alone
    store.update_checkpoint(_cp("0", "1", 1))


def test_the_spec_chooses_the_blob_store_on_its_cloud() -> None:
    from azure.eventhub.extensions.checkpointstoreblob import BlobCheckpointStore

    spec = _spec({"checkpoint_store": "blob", "blob_account_url": "acct"}, "AzureChinaCloud")
    store, release = checkpoint_store_for(spec, credential=_Credential())
    assert isinstance(store, BlobCheckpointStore)
    client = store._container_client
    assert client.url.startswith("https://acct.blob.core.chinacloudapi.cn/aoai-checkpoints")
    release()


def test_blob_without_an_account_or_the_package_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigError, match="blob_account_url is required"):
        checkpoint_store_for(_spec({"checkpoint_store": "blob"}), credential=_Credential())
    monkeypatch.setitem(sys.modules, "azure.eventhub.extensions.checkpointstoreblob", None)
    spec = _spec({"checkpoint_store": "blob", "blob_account_url": "https://a.blob.x.net"})
    with pytest.raises(ConfigError, match="pip install 'apim-aoai-proxy\\[azure\\]'"):
        checkpoint_store_for(spec, credential=_Credential())
