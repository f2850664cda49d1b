"""Azure Functions (Python v2 programming model): usage events → the billing database, and the
reconciliation of pass-through streams with APIM's language-model log.

Shipped at the root of the deployment zip built by ``aoai_helpers.azure.functions.build``, beside
``host.json``, ``requirements.txt`` and the ``aoai_helpers`` package. Declarations only: the
bodies are :func:`aoai_helpers.azure.functions.handler.handle` (one batch, one transaction) and
:func:`aoai_helpers.azure.functions.handler.reconcile_timer`.

``ingest_usage`` — trigger (``event_hub_message_trigger``, Microsoft's *Azure Event Hubs
trigger for Azure Functions*): ``eventHubName`` and ``consumerGroup`` are app setting binding
expressions (``%AOAI_EVENTHUB_NAME%``, ``%AOAI_EVENTHUB_CONSUMER_GROUP%``: both properties are
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

``reconcile_usage`` — a timer (``timer_trigger``, *Timer trigger for Azure Functions*,
learn.microsoft.com/azure/azure-functions/functions-bindings-timer; MicrosoftDocs/azure-docs
``articles/azure-functions/functions-bindings-timer.md``): ``schedule`` is an NCRONTAB
expression, and "You can put the schedule expression in an app setting and set this property to
the app setting name wrapped in **%** signs, as ``%ScheduleAppSetting%``" — here
``%AOAI_RECONCILE_SCHEDULE%`` (``reconcile.schedule``, every 10 minutes by default).
``run_on_startup=False``: the page says **runOnStartup** "should rarely if ever be set to
``true``, especially in production" (the runtime starts on every scale-out and wake-up);
``use_monitor=True`` (the default for schedules of a minute or more, stated explicitly):
"Schedule monitoring persists schedule occurrences to aid in ensuring the schedule is
maintained correctly even when function app instances restart". No retry policy: a run that
fails changed nothing, and the next tick reads the same window again.
"""

import typing

import azure.functions as func

from aoai_helpers.azure.functions import settings
from aoai_helpers.azure.functions.handler import handle, reconcile_timer

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


@app.function_name(name=settings.RECONCILE_FUNCTION_NAME)
@app.timer_trigger(
    schedule=f"%{settings.RECONCILE_SCHEDULE}%",
    arg_name="timer",
    run_on_startup=False,
    use_monitor=True,
)
def reconcile_usage(timer: func.TimerRequest) -> None:
    reconcile_timer()
