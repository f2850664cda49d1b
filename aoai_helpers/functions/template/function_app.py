"""Azure Function (Python v2 programming model): Event Hubs usage events → the billing database.

Shipped at the root of the deployment zip built by ``aoai_helpers.functions.build``, beside
``host.json``, ``requirements.txt`` and the ``aoai_helpers`` package. Declarations only: the
body is :func:`aoai_helpers.functions.handler.handle` (one batch, one transaction).

Trigger (``event_hub_message_trigger``, Microsoft's *Azure Event Hubs trigger for Azure
Functions*): ``eventHubName`` and ``consumerGroup`` are app setting binding expressions
(``%AOAI_EVENTHUB_NAME%``, ``%AOAI_EVENTHUB_CONSUMER_GROUP%``: both properties are
``[AutoResolve]`` in the extension's ``EventHubTriggerAttribute``, and the docs show
``%eventHubName%`` / ``%consumergroup%``); ``connection`` names the setting (or the
``AOAI_EVENTHUB__fullyQualifiedNamespace`` collection for a managed identity) without percent
signs. ``cardinality="many"`` delivers batches (sized in ``host.json``), ``data_type="binary"``
hands over the raw bytes.

Retry (``@app.retry``, *Azure Functions error handling and retries*): Event Hubs checkpoints are
not written until the retry policy of the execution has completed, so ``max_retry_count="-1"``
(retry forever, exponential backoff 5 s → 15 min) holds the partition during a database outage
instead of skipping its events; without a policy the checkpoint advances after an exception.

The annotation is ``typing.List``: azure-functions' ``EventHubConverter`` does not recognise
``list[...]`` as a batch type, and the worker would refuse to index the function.
"""

import typing

import azure.functions as func

from aoai_helpers.functions import settings
from aoai_helpers.functions.handler import handle

app = func.FunctionApp()


@app.function_name(name=settings.FUNCTION_NAME)
@app.retry(
    strategy="exponential_backoff",
    max_retry_count="-1",
    minimum_interval="00:00:05",
    maximum_interval="00:15:00",
)
@app.event_hub_message_trigger(
    arg_name="events",
    event_hub_name=f"%{settings.EVENTHUB_NAME}%",
    connection=settings.CONNECTION,
    consumer_group=f"%{settings.CONSUMER_GROUP}%",
    cardinality="many",
    data_type="binary",
)
def ingest_usage(events: typing.List[func.EventHubEvent]) -> None:  # noqa: UP006
    handle(events)
