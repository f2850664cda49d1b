"""Event Hubs behind our protocols, without a network.

The SDK's network side is the only thing replaced: ``_Hub.receive_batch`` calls our
``on_event_batch`` from the consumer's background thread the way the SDK's EventProcessor
does — with real ``azure.eventhub.PartitionContext`` objects on our DatabaseCheckpointStore,
and real received ``azure.eventhub.EventData`` built like the SDK builds them (an AMQP message
encoded to wire bytes, decoded by the SDK's decoder, wrapped by ``EventData._from_message``).
It starts each partition after its stored checkpoint, as the SDK does. One test goes further
and runs the real client built by ``from_spec`` (EventProcessor, load balancer, per-partition
EventHubConsumer) with only the AMQP link replaced. The producer is tested against the SDK's
real ``EventDataBatch`` size accounting.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.eventhub import EventData as AzureEventData
from azure.eventhub import (
    EventDataBatch,
    EventHubConsumerClient,
    EventHubProducerClient,
    PartitionContext,
)
from azure.eventhub._pyamqp._decode import decode_payload
from azure.eventhub._pyamqp._encode import encode_payload
from azure.eventhub._pyamqp.message import Message
from azure.eventhub._pyamqp.types import TYPE, VALUE, AMQPTypes
from azure.eventhub.exceptions import AuthenticationError, ConnectionLostError
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from aoai_helpers.db.engine import transaction
from aoai_helpers.db.tables import token_table
from aoai_helpers.eventlog.azure import (
    AzureEventHubConsumer,
    AzureEventHubProducer,
    EventHubClientError,
)
from aoai_helpers.eventlog.checkpoints import DatabaseCheckpointStore
from aoai_helpers.eventlog.eventhub import MAX_EVENT_BYTES, EventConsumer, EventData, EventProducer
from aoai_helpers.exceptions import ConfigError, InputError
from aoai_helpers.pipeline.consume import consume
from aoai_helpers.pipeline.ingest import Ingestor
from aoai_helpers.spec import parse_spec

NS, HUB, GROUP = "ns.servicebus.windows.net", "aoai-usage", "$Default"
T0_MS = 1_793_786_400_123  # 2026-11-04T10:00:00.123Z
WAIT = 5.0  # s: upper bound for anything that should happen "now"
Batches = list[tuple[str, list[AzureEventData]]]


def received(body: bytes, seq: int, *, ms: int = T0_MS, **section: Any) -> AzureEventData:
    """A received event, built as the SDK builds one from the wire (offset: ``seq * 1000``)."""
    message = Message(
        message_annotations={
            b"x-opt-sequence-number": {TYPE: AMQPTypes.long, VALUE: seq},
            b"x-opt-offset": {TYPE: AMQPTypes.string, VALUE: str(seq * 1000)},
            b"x-opt-enqueued-time": {TYPE: AMQPTypes.timestamp, VALUE: ms},
        },
        **(section or {"data": [body]}),
    )
    wire = bytearray()
    encode_payload(wire, message)
    return AzureEventData._from_message(decode_payload(memoryview(bytes(wire))))


def partition(
    pid: str, bodies: list[bytes], first_seq: int = 0
) -> tuple[str, list[AzureEventData]]:
    return pid, [received(b, first_seq + i, ms=T0_MS + i) for i, b in enumerate(bodies)]


class _Hub:
    """The network side of ``EventHubConsumerClient``: scripted batches, real SDK objects."""

    def __init__(self, store: DatabaseCheckpointStore, batches: Batches) -> None:
        self.store, self.batches = store, batches
        self.kwargs: dict[str, Any] = {}
        self.returned: list[tuple[str, int]] = []  # (partition, events) per callback that returned
        self.closed = threading.Event()
        self.failure: BaseException | None = None
        self.errors: list[Exception] = []  # reported to on_error before the batches

    def receive_batch(self, on_event_batch: Callable[..., None], **kwargs: Any) -> None:
        inspect.signature(EventHubConsumerClient.receive_batch).bind(None, on_event_batch, **kwargs)
        self.kwargs = kwargs
        for error in self.errors:
            kwargs["on_error"](None, error)
        if self.failure is not None:
            raise self.failure
        done = {
            c["partition_id"]: c["sequence_number"]
            for c in self.store.list_checkpoints(NS, HUB, GROUP)
        }
        contexts: dict[str, PartitionContext] = {}
        for pid, events in self.batches:
            todo = [e for e in events if (e.sequence_number or 0) > done.get(pid, -1)]
            if self.closed.is_set():
                break
            if not todo:
                continue
            context = contexts.setdefault(pid, PartitionContext(NS, HUB, GROUP, pid, self.store))
            context._last_received_event = todo[-1]  # as EventProcessor._on_event_received
            on_event_batch(context, todo)
            self.returned.append((pid, len(todo)))
        self.closed.wait()

    def close(self) -> None:
        self.closed.set()


@pytest.fixture
def store(engine: Engine) -> DatabaseCheckpointStore:
    return DatabaseCheckpointStore(engine)


@pytest.fixture
def open_consumer(store: DatabaseCheckpointStore) -> Iterator[Callable[..., AzureEventHubConsumer]]:
    made: list[AzureEventHubConsumer] = []

    def make(hub: _Hub, **options: Any) -> AzureEventHubConsumer:
        made.append(AzureEventHubConsumer(hub, name="test-hub", close_timeout=WAIT, **options))
        return made[-1]

    yield make
    for consumer in made:
        consumer.close()


def _checkpoints(store: DatabaseCheckpointStore) -> dict[str, tuple[str, int]]:
    cps = store.list_checkpoints(NS, HUB, GROUP)
    return {c["partition_id"]: (c["offset"], c["sequence_number"]) for c in cps}


def _until(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


# ----------------------------------------------------------------------------- consumer


def test_receive_returns_our_event_data(store: DatabaseCheckpointStore, open_consumer: Any) -> None:
    hub = _Hub(store, [partition("3", [b'{"a":1}', b'{"a":2}'], first_seq=40)])
    consumer = open_consumer(hub, max_batch_size=123)
    assert isinstance(consumer, EventConsumer)
    events = consumer.receive(10, WAIT)
    assert events == [
        EventData(b'{"a":1}', 40, datetime(2026, 11, 4, 10, 0, 0, 123000, UTC), "3", "40000"),
        EventData(b'{"a":2}', 41, datetime(2026, 11, 4, 10, 0, 0, 124000, UTC), "3", "41000"),
    ]
    assert events[0].enqueued_time.tzinfo is UTC
    assert hub.kwargs["max_batch_size"] == 123 and hub.kwargs["starting_position"] == "-1"
    assert hub.kwargs["max_wait_time"] is None


@pytest.mark.parametrize(
    ("section", "body"),
    [
        ({"data": [b"ab", b"cd"]}, b"abcd"),  # several data sections
        ({"value": "caf\u00e9"}, "caf\u00e9".encode()),  # an AMQP value string
        ({"value": b"raw"}, b"raw"),
        ({"sequence": [["x", 1]]}, b"['x', 1]"),
    ],
)
def test_bodies_of_every_amqp_shape_become_bytes(
    store: DatabaseCheckpointStore, open_consumer: Any, section: dict[str, Any], body: bytes
) -> None:
    consumer = open_consumer(_Hub(store, [("0", [received(b"", 0, **section)])]))
    assert [e.body for e in consumer.receive(1, WAIT)] == [body]


def test_the_callback_waits_for_the_checkpoint(
    store: DatabaseCheckpointStore, open_consumer: Any
) -> None:
    hub = _Hub(store, [partition("0", [b"a", b"b"]), partition("1", [b"c"], first_seq=7)])
    consumer = open_consumer(hub)
    first = consumer.receive(10, WAIT)
    assert [e.body for e in first] == [b"a", b"b"]
    assert consumer.receive(10, 0.3) == []  # nothing new while the batch is not checkpointed
    assert hub.returned == [] and _checkpoints(store) == {}
    consumer.checkpoint(first[-1])
    assert _until(lambda: hub.returned == [("0", 2)])  # released only now
    assert _checkpoints(store) == {"0": ("1000", 1)}  # the SDK event's offset, sequence number
    second = consumer.receive(10, WAIT)
    assert [(e.partition_id, e.sequence_number) for e in second] == [("1", 7)]
    consumer.checkpoint(second[0])
    assert _until(lambda: len(hub.returned) == 2)
    assert _checkpoints(store) == {"0": ("1000", 1), "1": ("7000", 7)}


def test_a_large_batch_is_handed_out_in_pieces(
    store: DatabaseCheckpointStore, open_consumer: Any
) -> None:
    hub = _Hub(store, [partition("0", [b"1", b"2", b"3", b"4", b"5"])])
    consumer = open_consumer(hub)
    got = consumer.receive(2, WAIT)
    consumer.checkpoint(got[-1])
    assert _checkpoints(store) == {"0": ("1000", 1)}
    got += consumer.receive(2, WAIT)
    got += consumer.receive(2, WAIT)
    assert [e.body for e in got] == [b"1", b"2", b"3", b"4", b"5"]
    assert hub.returned == []  # the callback still holds the batch
    consumer.checkpoint(got[-1])
    assert _until(lambda: hub.returned == [("0", 5)])
    assert _checkpoints(store) == {"0": ("4000", 4)}


def test_checkpointing_an_event_not_received_is_refused(
    store: DatabaseCheckpointStore, open_consumer: Any
) -> None:
    consumer = open_consumer(_Hub(store, [partition("0", [b"a"])]))
    (event,) = consumer.receive(1, WAIT)
    stranger = EventData(b"a", 0, event.enqueued_time, "1", "0")
    with pytest.raises(ValueError, match="not a received event"):
        consumer.checkpoint(stranger)
    assert _checkpoints(store) == {}


def test_close_releases_the_callback_without_a_checkpoint(
    store: DatabaseCheckpointStore, open_consumer: Any
) -> None:
    hub = _Hub(store, [partition("0", [b"a"]), partition("1", [b"b"])])
    consumer = open_consumer(hub)
    (event,) = consumer.receive(1, WAIT)
    consumer.close()
    consumer.close()  # idempotent
    assert hub.closed.is_set() and hub.returned == [("0", 1)]
    assert consumer._thread is not None and not consumer._thread.is_alive()
    assert _checkpoints(store) == {}  # redelivered to the next consumer
    with pytest.raises(EventHubClientError, match="closed"):
        consumer.receive(1, 0)
    with pytest.raises(EventHubClientError, match="closed"):
        consumer.checkpoint(event)


def test_a_client_failure_surfaces_in_receive_as_one_line(
    store: DatabaseCheckpointStore, open_consumer: Any
) -> None:
    hub = _Hub(store, [])
    hub.failure = ConnectionLostError(
        "link detached\nEndpoint=sb://x/;SharedAccessKey=s3cr3t; more"
    )
    consumer = open_consumer(hub)
    with pytest.raises(EventHubClientError) as info:
        consumer.receive(1, WAIT)
    message = str(info.value)
    assert message == "test-hub: receiving stopped: ConnectionLostError: link detached"
    with pytest.raises(EventHubClientError):  # and stays failed
        consumer.receive(1, 0)


def test_a_refused_credential_is_fatal_and_masked(
    store: DatabaseCheckpointStore, open_consumer: Any
) -> None:
    hub = _Hub(store, [partition("0", [b"a"])])
    hub.errors = [AuthenticationError("CBS: bad token for SharedAccessSignature=sr%3Dx&sig=abc")]
    consumer = open_consumer(hub)
    with pytest.raises(EventHubClientError) as info:
        consumer.receive(1, WAIT)
    assert "load balancing: AuthenticationError: CBS: bad token" in str(info.value)
    assert "abc" not in str(info.value) and "\n" not in str(info.value)


def test_transient_errors_are_logged_until_they_last_too_long(
    store: DatabaseCheckpointStore, open_consumer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    hub = _Hub(store, [partition("0", [b"a"])])
    hub.errors = [ConnectionLostError("connection reset")]
    with caplog.at_level(logging.WARNING, logger="aoai_helpers.eventlog.azure"):
        consumer = open_consumer(hub)
        assert [e.body for e in consumer.receive(1, WAIT)] == [b"a"]  # the SDK retried
    assert "load balancing: ConnectionLostError: connection reset" in caplog.text
    failing = _Hub(store, [])
    failing.errors = [ConnectionLostError("connection reset")]
    impatient = open_consumer(failing, error_timeout=0.0)
    with pytest.raises(EventHubClientError, match=r"connection reset \(failing for 0 s\)"):
        impatient.receive(1, WAIT)


def _spec(**consumer: Any) -> Any:
    return parse_spec(
        {
            "cloud": consumer.pop("cloud", "AzureCloud"),
            "apim": {"resource_group": "rg", "service_name": "apim"},
            "backends": [{"endpoint": "https://aoai.openai.azure.com", "deployments": {"g": "m"}}],
            "subscriptions": [{"id": "bu1", "display_name": "BU 1", "business_unit": "BU1"}],
            "event_hub": {"namespace": "ns", "name": HUB, "consumer_group": "ingest"},
            "consumer": consumer,
        }
    )


class _Credential:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        raise AssertionError("no token may be requested in tests")


def test_from_spec_builds_the_real_clients(engine: Engine) -> None:
    conn = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey=k"
    consumer = AzureEventHubConsumer.from_spec(
        _spec(batch_size=77), connection_string=conn, engine=engine
    )
    client = consumer._client
    assert isinstance(client, EventHubConsumerClient)
    assert (client._address.hostname, client.eventhub_name, client._consumer_group) == (
        NS,
        HUB,
        "ingest",
    )
    assert isinstance(client._checkpoint_store, DatabaseCheckpointStore)
    assert consumer._receive_options["max_batch_size"] == 77
    consumer.close()
    china = AzureEventHubConsumer.from_spec(
        _spec(cloud="AzureChinaCloud"), credential=_Credential(), engine=engine
    )
    assert china._client._address.hostname == "ns.servicebus.chinacloudapi.cn"
    assert china.name == "ns.servicebus.chinacloudapi.cn/aoai-usage (ingest)"
    china.close()
    producer = AzureEventHubProducer.from_spec(_spec(cloud="AzureUSGovernment"), _Credential())
    assert isinstance(producer, EventProducer)
    assert isinstance(producer._client, EventHubProducerClient)
    assert producer._client._address.hostname == "ns.servicebus.usgovcloudapi.net"
    producer.close()
    with pytest.raises(ConfigError, match="cannot set up the EventHubConsumerClient"):
        AzureEventHubConsumer.from_spec(_spec(), connection_string="nonsense", engine=engine)


# ----------------------------------------------------------------------------- with ingest


class _CommitWitness(DatabaseCheckpointStore):
    """Records, at each checkpoint, how many usage rows are committed (seen by a new connection)."""

    seen: list[tuple[str, int, int]]

    def update_checkpoint(self, checkpoint: dict[str, str | int | None], **kwargs: Any) -> None:
        with transaction(self.engine) as conn:
            rows = conn.execute(select(func.count()).select_from(token_table)).scalar_one()
        self.seen.append(
            (str(checkpoint["partition_id"]), int(checkpoint["sequence_number"] or 0), rows)
        )
        super().update_checkpoint(checkpoint, **kwargs)


def test_consume_stores_each_event_once_and_checkpoints_after_commit(
    engine: Engine,
    make_v2: Callable[..., dict[str, Any]],
    token_rows: Callable[[Engine], list[Any]],
) -> None:
    store = _CommitWitness(engine)
    store.seen = []
    bodies = [json.dumps(make_v2()).encode() for _ in range(7)]
    script = [
        partition("0", bodies[:3]),
        partition("1", bodies[3:5], 10),
        partition("0", bodies[5:], 3),
    ]

    # A first consumer stores everything but dies before any checkpoint.
    class _Crash(Exception):
        pass

    first = AzureEventHubConsumer(_Hub(store, script), close_timeout=WAIT)

    def crash(event: EventData) -> None:
        raise _Crash

    first.checkpoint = crash  # type: ignore[method-assign]
    with pytest.raises(_Crash):
        consume(first, Ingestor(engine), batch_size=10, max_wait=WAIT)
    first.close()
    assert len(token_rows(engine)) == 3 and _checkpoints(store) == {}

    # Its successor gets everything again (no checkpoint): stores the rest, skips the 3 dupes.
    second = AzureEventHubConsumer(_Hub(store, script), close_timeout=WAIT)
    stats = consume(second, Ingestor(engine), batch_size=10, max_wait=0.5, idle_exit=True)
    second.close()
    assert (stats.batches, stats.events) == (3, 7)
    assert (stats.result.stored, stats.result.duplicates) == (4, 3)
    ids = sorted(r["RequestId"] for r in token_rows(engine))
    assert ids == sorted(json.loads(b)["RequestId"] for b in bodies)  # each exactly once
    assert _checkpoints(store) == {"0": ("4000", 4), "1": ("11000", 11)}
    # Each checkpoint came after its batch was committed: the rows were already there.
    assert store.seen == [("0", 2, 3), ("1", 11, 5), ("0", 4, 7)]

    # A third consumer starts after the checkpoints: nothing is delivered again.
    third = AzureEventHubConsumer(_Hub(store, script), close_timeout=WAIT)
    assert consume(third, Ingestor(engine), max_wait=0.3, idle_exit=True).events == 0
    third.close()


# ----------------------------------------------------------------------------- producer


class _Sender:
    """The network side of ``EventHubProducerClient``: real batches, sends recorded."""

    def __init__(self, max_size: int, fail_on: int | None = None) -> None:
        self.max_size, self.fail_on = max_size, fail_on
        self.sent: list[EventDataBatch] = []
        self.created = 0
        self.closed = False

    def create_batch(self, *, partition_key: str | None = None) -> EventDataBatch:
        self.created += 1
        return EventDataBatch(max_size_in_bytes=self.max_size, partition_key=partition_key)

    def send_batch(self, event_data_batch: EventDataBatch) -> None:
        if self.fail_on is not None and len(self.sent) == self.fail_on:
            raise ConnectionLostError("send link detached")
        self.sent.append(event_data_batch)

    def close(self) -> None:
        self.closed = True


def _bodies_in(batch: EventDataBatch) -> list[bytes]:
    return [b"".join(e.body) for e in batch._internal_events]  # what our code added


def test_send_packs_bodies_in_order_into_full_batches() -> None:
    sender = _Sender(max_size=4096)
    bodies = [bytes([65 + i % 26]) * (100 + 37 * i) for i in range(30)]
    with AzureEventHubProducer(sender, partition_key="bu1") as producer:
        producer.send(bodies)
    assert sender.closed
    assert len(sender.sent) > 1
    assert [b for batch in sender.sent for b in _bodies_in(batch)] == bodies
    for batch, following in zip(sender.sent, sender.sent[1:], strict=False):
        assert batch.size_in_bytes <= 4096
        probe = EventDataBatch(max_size_in_bytes=4096, partition_key="bu1")
        for body in _bodies_in(batch):
            probe.add(AzureEventData(body))
        with pytest.raises(ValueError, match="size limit"):  # the next body did not fit
            probe.add(AzureEventData(_bodies_in(following)[0]))


def test_a_body_too_large_for_any_batch_sends_nothing() -> None:
    sender = _Sender(max_size=1024)
    with pytest.raises(InputError, match=r"event 1: body of 2,000 bytes does not fit"):
        AzureEventHubProducer(sender).send([b"ok", b"x" * 2000, b"ok"])
    assert sender.sent == []
    big = _Sender(max_size=2 * MAX_EVENT_BYTES)
    with pytest.raises(InputError, match="exceeds the 1 MiB limit"):
        AzureEventHubProducer(big).send([b"ok", b"x" * (MAX_EVENT_BYTES + 1)])
    assert big.sent == [] and big.created == 0  # refused before any batch is made
    AzureEventHubProducer(big).send([])
    assert big.created == 0


def test_a_failed_send_says_how_far_it_got() -> None:
    sender = _Sender(max_size=1024, fail_on=1)
    with pytest.raises(EventHubClientError, match=r"sent 1 of 3 batches, then failed: Connection"):
        AzureEventHubProducer(sender).send([b"y" * 600] * 3)
    assert len(sender.sent) == 1


# ----------------------------------------------------------------------------- the real SDK loop


def test_the_real_sdk_processor_drives_consume_end_to_end(
    engine: Engine,
    make_v2: Callable[..., dict[str, Any]],
    token_rows: Callable[[Engine], list[Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real EventHubConsumerClient from ``from_spec``: its EventProcessor, load balancer
    (claiming partitions in our store), per-partition EventHubConsumer and event conversion.
    Only the wire is replaced: a partition's link "opens" by handing its AMQP messages after
    the start offset to the consumer's own delivery callback (``_message_received``)."""
    from azure.eventhub._consumer import EventHubConsumer

    bodies = [json.dumps(make_v2()).encode() for _ in range(6)]
    wire: dict[str, list[Message]] = {"0": [], "1": []}

    def publish(pid: str, body: bytes) -> None:
        seq = len(wire[pid])
        message = Message(
            data=[body],
            message_annotations={
                b"x-opt-sequence-number": {TYPE: AMQPTypes.long, VALUE: seq},
                b"x-opt-offset": {TYPE: AMQPTypes.string, VALUE: str(seq * 1000)},
                b"x-opt-enqueued-time": {TYPE: AMQPTypes.timestamp, VALUE: T0_MS + seq},
            },
        )
        raw = bytearray()
        encode_payload(raw, message)
        wire[pid].append(decode_payload(memoryview(bytes(raw))))

    def open_link(self: EventHubConsumer) -> bool:
        if not self.running:  # first open of this link: deliver what follows the position
            self.running = True
            start = int(self._offset) if str(self._offset) != "-1" else -1
            for message in wire[self._partition]:
                if int(message.message_annotations[b"x-opt-offset"]) > start:
                    self._message_received(message)
        return False  # nothing for do_work: the messages are in the buffer

    monkeypatch.setattr(EventHubConsumer, "_open", open_link)
    for i, body in enumerate(bodies[:5]):
        publish(str(i % 2), body)
    spec = _spec(batch_size=2)
    conn = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey=k"

    def run(expected: int) -> Any:
        """Consume until ``expected`` events went through (no idle timeout to race with)."""
        consumer = AzureEventHubConsumer.from_spec(spec, connection_string=conn, engine=engine)
        monkeypatch.setattr(consumer._client, "get_partition_ids", lambda: ["0", "1"])
        stop, seen = threading.Event(), [0]

        def count(result: Any) -> None:
            seen[0] += result.received
            if seen[0] >= expected:
                stop.set()

        try:
            return consume(
                consumer, Ingestor(engine), batch_size=2, max_wait=0.1, stop=stop, on_batch=count
            )
        finally:
            consumer.close()

    stats = run(5)
    assert (stats.events, stats.result.stored) == (5, 5)
    store = DatabaseCheckpointStore(engine)
    cps = {
        c["partition_id"]: c["sequence_number"] for c in store.list_checkpoints(NS, HUB, "ingest")
    }
    assert cps == {"0": 2, "1": 1}  # partition 0 got bodies 0, 2, 4; partition 1 got 1, 3
    owners = store.list_ownership(NS, HUB, "ingest")
    assert sorted(o["partition_id"] for o in owners) == ["0", "1"]
    assert {o["owner_id"] for o in owners} == {""}  # released on close

    publish("1", bodies[5])  # a new event; a new consumer resumes after the checkpoints
    stats = run(1)
    assert (stats.events, stats.result.stored, stats.result.duplicates) == (1, 1, 0)
    assert sorted(r["RequestId"] for r in token_rows(engine)) == sorted(
        json.loads(b)["RequestId"] for b in bodies
    )
