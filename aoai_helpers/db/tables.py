"""Every table the project creates, on one :data:`metadata` (contract §4).

These models are the source of truth for the schema (``db ddl`` prints them). The original
APIM-AOAI-Proxy tables keep their names, columns and Azure SQL types (so existing Power BI
reports keep working); new columns sit beside them.

Tables
------
``ApimAoaiToken``        one priced row per call, unique on ``RequestId`` (the idempotency key)
``AoaiTokenRate``        per-token rates with effective dates and currency
``BusinessUnitMap``      APIM subscription → business unit and cost centre
``IngestDeadLetter``     events that could not be ingested: raw body, reason, source, time
``ReconcileState``       the language-model log's watermark (:mod:`aoai_helpers.pipeline.reconcile`)
``AoaiSchemaVersion``    applied schema migrations (:mod:`aoai_helpers.db.migrations`)
``AoaiUsageDaily``       the daily rollup of ``ApimAoaiToken`` the reports read (:mod:`aoai_helpers.db.rollup`)
``ChargebackStatement``  issued monthly statements (:mod:`aoai_helpers.analysis.statement`)
``AzureCostLine``        Azure's cost details for the AOAI resources (``bill import``, :mod:`aoai_helpers.billing`)
``EventHubOwnership``    partition claims of ``consume`` (:mod:`aoai_helpers.eventlog.checkpoints`)
``EventHubCheckpoint``   partition checkpoints of ``consume``

Views for Power BI and other SQL readers (``vw_AoaiChargebackDaily``, ``vw_AoaiPricedCalls``,
``vw_AoaiChargebackMonthly``) are defined over these tables in :mod:`aoai_helpers.db.views`.

Money columns
-------------
Exact ``DECIMAL``/``NUMERIC`` on SQL Server and PostgreSQL; ``REAL`` (an IEEE double) on
SQLite, which has no decimal type. Python reads floats on every dialect
(``Numeric(asdecimal=False)``), so callers do not change; exact sums are
:mod:`aoai_helpers.core.money`'s job. The precisions:

``RATE``       ``DECIMAL(27, 18)`` per-token rates (``AoaiTokenRate``): 18 decimals hold a price
               per 1M tokens given to 12 decimals (per 1K: 15) exactly; 27 digits so that
               ``int * rate`` is ``DECIMAL(38, 18)`` on SQL Server (p1 + p2 + 1 ≤ 38: no scale
               lost in the repricing products).
``CALL_COST``  ``DECIMAL(28, 12)`` one call's cost (``Cost``, ``PriorCost``) and one invoice
               line (``AzureCostLine``): 16 integer digits (any currency), 12 decimals — rounding
               a product to them errs by ≤ 5e-13, so a billion calls' sum stays within 0.0005 of
               a currency unit, well under a cent.
``SUM_COST``   ``DECIMAL(38, 12)`` sums (``AoaiUsageDaily``, ``ChargebackStatement``): what
               SQL Server's ``SUM`` of ``DECIMAL(28, 12)`` returns, so a rollup holds its calls'
               sum exactly.
``BUDGET``     ``DECIMAL(19, 4)`` a monthly budget: an amount, 4 decimals beyond any currency's
               minor unit (at most 3).

SQLite's error bound: a double has a 53-bit significand, so a stored value is within a relative
2**-53 (≈ 1.1e-16) of the decimal written; a day's sum of n costs adds at most about n * 1.1e-16
relative — 1e-7 of the total for a million calls, far below a cent on any realistic total.

The first seven are the schema ``db init`` / ``db upgrade`` create (:data:`SCHEMA_TABLES`); the
statement and checkpoint tables are created when first needed (:data:`STATEMENT_TABLES`,
:data:`CHECKPOINT_TABLES`), so a database that never issues a statement or keeps checkpoints
elsewhere never gets them. Pure definitions: no engine, no I/O.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Unicode,
    text,
)
from sqlalchemy.dialects import mssql
from sqlalchemy.types import TypeEngine

__all__ = [
    "BILL_TABLES",
    "BUDGET",
    "CALL_COST",
    "CHECKPOINT_KEY",
    "CHECKPOINT_TABLES",
    "DAILY_KEY",
    "MONEY_COLUMNS",
    "RATE",
    "RECONCILE_COLUMNS",
    "SCHEMA_TABLES",
    "STATEMENT_TABLES",
    "STRING_LIMITS",
    "SUM_COST",
    "all_tables",
    "bu_map",
    "checkpoint_table",
    "cost_line_table",
    "daily_table",
    "dead_letter",
    "metadata",
    "ownership_table",
    "rate_table",
    "reconcile_state",
    "schema_version",
    "statement_table",
    "token_table",
]

# Identity primary keys: BIGINT IDENTITY on SQL Server / PostgreSQL, rowid alias on SQLite.
_BigId = BigInteger().with_variant(Integer(), "sqlite")
_TinyInt = SmallInteger().with_variant(mssql.TINYINT(), "mssql")


def money(precision: int, scale: int) -> TypeEngine[float]:
    """An exact ``DECIMAL(precision, scale)`` on SQL Server and PostgreSQL, ``FLOAT`` (REAL) on
    SQLite; read as ``float`` everywhere (module docstring, "Money columns")."""
    exact = Numeric(precision, scale, asdecimal=False)
    return Float().with_variant(exact, "postgresql", "mssql")


#: Per-token rates (module docstring, "Money columns").
RATE: Final = money(27, 18)
#: One call's cost; one invoice line's cost or quantity.
CALL_COST: Final = money(28, 12)
#: Sums of call costs: the daily rollup, issued statements.
SUM_COST: Final = money(38, 12)
#: A monthly budget.
BUDGET: Final = money(19, 4)

metadata = MetaData()

token_table = Table(
    "ApimAoaiToken",
    metadata,
    Column("Id", _BigId, primary_key=True, autoincrement=True),
    # --- the original columns (names and Azure SQL types unchanged) ---
    Column("ExecTimeUTC", DateTime(), nullable=False),
    Column("ExecDateUTC", DateTime(), nullable=False),
    Column("GatewayRegion", Unicode(100)),
    Column("GatewayServiceName", Unicode(150)),
    Column("SubscriptionId", Unicode(50)),
    Column("SubscriptionName", Unicode(100)),
    Column("UserName", Unicode(50)),
    Column("UserEmail", Unicode(50)),
    Column("ProductName", Unicode(100)),
    Column("ApiName", Unicode(100)),
    Column("OperationId", Unicode(100)),
    Column("ModelName", Unicode(100), comment="normalised model: the pricing key"),
    Column("IsStreaming", _TinyInt, nullable=False),
    Column("PromptTokens", Integer(), nullable=False),
    Column("CompletionTokens", Integer(), nullable=False),
    Column("TotalTokens", Integer(), nullable=False),
    # --- added by apim-aoai-proxy ---
    Column(
        "RequestId",
        Unicode(64),
        nullable=False,
        comment="APIM context.RequestId, or v1: content hash",
    ),
    Column("EventVersion", SmallInteger(), nullable=False),
    Column("Operation", Unicode(16), nullable=False),
    Column("DeploymentName", Unicode(100)),
    Column("ApiVersion", Unicode(40)),
    Column("StatusCode", SmallInteger()),
    Column("ReportedModel", Unicode(100), comment="model as the API reported it"),
    Column("CachedTokens", Integer(), nullable=False, server_default=text("0")),
    Column("ReasoningTokens", Integer(), nullable=False, server_default=text("0")),
    Column(
        "UsageSource",
        Unicode(16),
        nullable=False,
        comment="reported | estimated | prompt_only | unbilled | reconciled",
    ),
    Column("EstimateEncoding", Unicode(20), comment="tokenizer used for an estimate"),
    Column(
        "EstimateQuality",
        Unicode(16),
        comment="exact | approximate | lower_bound: how sure an estimate is; NULL = reported",
    ),
    Column("ModelKnown", _TinyInt, nullable=False, server_default=text("1")),
    Column("Cost", CALL_COST, comment="NULL = unpriced (no rate in effect), never 0"),
    Column("Currency", Unicode(3)),
    Column("RateId", Integer()),
    Column("IngestedAtUTC", DateTime(), nullable=False),
    # --- reconciliation (aoai_helpers.pipeline.reconcile): what a row had before APIM's language-model
    # log gave its exact usage (UsageSource 'reconciled'); NULL on rows never reconciled ---
    Column("PriorUsageSource", Unicode(16)),
    Column("PriorPromptTokens", Integer()),
    Column("PriorCompletionTokens", Integer()),
    Column("PriorTotalTokens", Integer()),
    Column("PriorModelName", Unicode(100)),
    Column("PriorCost", CALL_COST),
    Column("ReconciledAtUTC", DateTime()),
    Index("indx_ExecDate", "ExecDateUTC"),
    Index("indx_ExecTime", "ExecTimeUTC"),
    Index("ux_ApimAoaiToken_RequestId", "RequestId", unique=True),
    Index("ix_ApimAoaiToken_Sub_Time", "SubscriptionId", "ExecTimeUTC"),
    # Served the monthly reports before the daily rollup (~0.4 s for a 1M-row month instead of
    # ~4 s through indx_ExecDate); the reports read the rollup now, and the rollup's day rebuilds
    # (repricing, reconciliation) range over it but read ReasoningTokens from the table. Kept
    # for existing readers of the table; dropping it would make inserts ~15 % cheaper.
    Index(
        "ix_ApimAoaiToken_Report",
        "ExecDateUTC",
        "SubscriptionId",
        "SubscriptionName",
        "ModelName",
        "DeploymentName",
        "UsageSource",
        "Currency",
        "PromptTokens",
        "CompletionTokens",
        "CachedTokens",
        "TotalTokens",
        "Cost",
    ),
)

rate_table = Table(
    "AoaiTokenRate",
    metadata,
    Column("RateId", Integer(), primary_key=True, autoincrement=True),
    Column("ModelName", Unicode(100), nullable=False),
    Column("PromptTokenRate", RATE, nullable=False),
    Column("CompletionTokenRate", RATE, nullable=False),
    Column("CachedPromptTokenRate", RATE),
    Column("Currency", Unicode(3), nullable=False, server_default=text("'USD'")),
    Column("EffectiveFrom", DateTime(), nullable=False),
    Column("EffectiveTo", DateTime()),
    Column("Source", Unicode(200)),
    Index("ix_AoaiTokenRate_Model_From", "ModelName", "EffectiveFrom", unique=True),
)

bu_map = Table(
    "BusinessUnitMap",
    metadata,
    Column("SubscriptionId", Unicode(50), primary_key=True),
    Column("SubscriptionName", Unicode(100)),
    Column("BusinessUnit", Unicode(100), nullable=False),
    Column("CostCentre", Unicode(50)),
    Column("MonthlyBudget", BUDGET),
)

dead_letter = Table(
    "IngestDeadLetter",
    metadata,
    Column("Id", _BigId, primary_key=True, autoincrement=True),
    Column("ReceivedAtUTC", DateTime(), nullable=False),
    Column("Source", Unicode(200)),
    Column("Reason", Unicode(400), nullable=False),
    Column("RequestId", Unicode(64)),
    Column("RawSha256", String(64), nullable=False),
    Column("RawBody", LargeBinary(), nullable=False),
    Column("RawSize", Integer(), nullable=False),
    Index("ux_IngestDeadLetter_RawSha256", "RawSha256", unique=True),
)

reconcile_state = Table(
    "ReconcileState",
    metadata,
    Column("Source", Unicode(200), primary_key=True, comment="the language-model log read"),
    Column("WatermarkUTC", DateTime(), nullable=False, comment="end of the last window read"),
    Column("UpdatedAtUTC", DateTime(), nullable=False),
    Column("LastRecords", Integer(), nullable=False, server_default=text("0")),
    Column("LastUpgraded", Integer(), nullable=False, server_default=text("0")),
)

schema_version = Table(
    "AoaiSchemaVersion",
    metadata,
    Column("Version", Integer(), primary_key=True, autoincrement=False),
    Column("AppliedAtUTC", DateTime(), nullable=False),
    Column("Description", Unicode(200), comment="how it was applied (db init, db upgrade, …)"),
)

# --- the daily rollup (aoai_helpers.db.rollup): one row per day and group of calls ---

#: The group of a rollup row, its primary key (same column names as in ``ApimAoaiToken``).
DAILY_KEY: Final = (
    "ExecDateUTC",
    "SubscriptionId",
    "SubscriptionName",
    "ModelName",
    "DeploymentName",
    "UsageSource",
    "Currency",
)

daily_table = Table(
    "AoaiUsageDaily",
    metadata,
    # the group: '' where the call's column is NULL (a key column cannot be NULL everywhere)
    Column("ExecDateUTC", DateTime(), nullable=False),
    Column("SubscriptionId", Unicode(50), nullable=False),
    Column("SubscriptionName", Unicode(100), nullable=False),
    Column("ModelName", Unicode(100), nullable=False),
    Column("DeploymentName", Unicode(100), nullable=False),
    Column("UsageSource", Unicode(16), nullable=False),
    Column("Currency", Unicode(3), nullable=False, comment="'' = unpriced (Cost NULL)"),
    # the sums of its calls
    Column("Calls", BigInteger(), nullable=False),
    Column("PricedCalls", BigInteger(), nullable=False, comment="calls with a Cost"),
    Column("PromptTokens", BigInteger(), nullable=False),
    Column("CompletionTokens", BigInteger(), nullable=False),
    Column("CachedTokens", BigInteger(), nullable=False),
    Column("ReasoningTokens", BigInteger(), nullable=False),
    Column("TotalTokens", BigInteger(), nullable=False),
    Column("Cost", SUM_COST, comment="sum of the priced calls' Cost; NULL when none is priced"),
    PrimaryKeyConstraint(*DAILY_KEY, name="pk_AoaiUsageDaily"),
)

#: Columns only reconciliation writes (NULL when a row is inserted).
RECONCILE_COLUMNS: Final[tuple[str, ...]] = (
    "PriorUsageSource",
    "PriorPromptTokens",
    "PriorCompletionTokens",
    "PriorTotalTokens",
    "PriorModelName",
    "PriorCost",
    "ReconciledAtUTC",
)

#: Column lengths of the string columns, used to truncate values before insert.
STRING_LIMITS: Final[dict[str, int]] = {
    c.name: c.type.length
    for c in token_table.columns
    if isinstance(c.type, String) and c.type.length
}


# --- issued chargeback statements (aoai_helpers.analysis.statement) ---

statement_table = Table(
    "ChargebackStatement",
    metadata,
    Column("Month", Unicode(7), primary_key=True, comment="YYYY-MM"),
    Column("Line", Integer(), primary_key=True, autoincrement=False),
    Column("BusinessUnit", Unicode(100), nullable=False),
    Column("CostCentre", Unicode(50)),
    Column("Calls", BigInteger(), nullable=False),
    Column("PromptTokens", BigInteger(), nullable=False),
    Column("CompletionTokens", BigInteger(), nullable=False),
    Column("TotalTokens", BigInteger(), nullable=False),
    Column("Cost", SUM_COST, nullable=False, comment="priced calls only; see UnpricedCalls"),
    Column("Currency", Unicode(5), comment="ISO code, or MIXED"),
    Column("EstimatedCost", SUM_COST, nullable=False),
    Column("UnpricedCalls", BigInteger(), nullable=False),
    Column("EstimatedCalls", BigInteger(), nullable=False),
    Column("IssuedAtUTC", DateTime(), nullable=False),
)

# --- Azure's own bill, imported by ``bill import`` (aoai_helpers.billing) ---

cost_line_table = Table(
    "AzureCostLine",
    metadata,
    Column("Id", Integer(), primary_key=True, autoincrement=True),
    Column("ImportId", String(36), nullable=False, comment="one import of one file (uuid4)"),
    Column("ImportedAtUTC", DateTime(), nullable=False),
    Column("SourceFile", Unicode(260), nullable=False, comment="file name only"),
    Column("BillingMonth", Unicode(7), nullable=False, comment="YYYY-MM of UsageDate"),
    Column("UsageDate", DateTime(), nullable=False, comment="the day (UTC midnight)"),
    Column("CostType", Unicode(16), nullable=False, comment="actual | amortized | usage"),
    Column("SubscriptionId", Unicode(50), comment="the Azure subscription (not APIM's)"),
    Column("ResourceId", Unicode(400), comment="lower case"),
    Column("MeterId", Unicode(64)),
    Column("MeterName", Unicode(200), nullable=False),
    Column("MeterSubCategory", Unicode(200)),
    Column("ModelName", Unicode(100), comment="the model the meter bills; NULL: not tokens"),
    Column("TokenKind", Unicode(16), comment="input | output | cached_input; NULL: not tokens"),
    Column("Quantity", CALL_COST, nullable=False, comment="in UnitOfMeasure"),
    Column("UnitOfMeasure", Unicode(50)),
    Column("Tokens", BigInteger(), comment="Quantity x the unit's tokens; NULL: not tokens"),
    Column("Cost", CALL_COST, nullable=False),
    Column("Currency", Unicode(3), nullable=False),
    Index("ix_AzureCostLine_Month", "BillingMonth", "CostType"),
)

# --- Event Hubs checkpoints of consume (aoai_helpers.eventlog.checkpoints) ---

CHECKPOINT_KEY: Final = ("Namespace", "EventHub", "ConsumerGroup", "PartitionId")


def _key_columns() -> list[Column[str]]:
    # ASCII names (DNS host, hub, group): VARCHAR keeps the key at 607 bytes, under SQL Server's
    # 900-byte limit for a clustered primary key.
    return [
        Column("Namespace", String(255), nullable=False, comment="fully qualified, lower case"),
        Column("EventHub", String(256), nullable=False, comment="lower case"),
        Column("ConsumerGroup", String(64), nullable=False, comment="lower case"),
        Column("PartitionId", String(32), nullable=False),
    ]


ownership_table = Table(
    "EventHubOwnership",
    metadata,
    *_key_columns(),
    Column("OwnerId", String(128), nullable=False, comment="'' when released"),
    Column("ETag", String(64), nullable=False),
    Column("LastModifiedTime", Float(), nullable=False, comment="Unix time (UTC), seconds"),
    PrimaryKeyConstraint(*CHECKPOINT_KEY, name="pk_EventHubOwnership"),
)

checkpoint_table = Table(
    "EventHubCheckpoint",
    metadata,
    *_key_columns(),
    Column("EventOffset", String(100), nullable=False),
    Column("SequenceNumber", BigInteger(), nullable=False),
    Column("UpdatedAtUTC", DateTime(), nullable=False),
    PrimaryKeyConstraint(*CHECKPOINT_KEY, name="pk_EventHubCheckpoint"),
)

#: Created when ``report --issue`` first issues a statement.
STATEMENT_TABLES: Final[tuple[Table, ...]] = (statement_table,)
#: Created when ``bill import`` first imports a cost-details file.
BILL_TABLES: Final[tuple[Table, ...]] = (cost_line_table,)
#: Created when ``consume`` first keeps checkpoints in the database.
CHECKPOINT_TABLES: Final[tuple[Table, ...]] = (checkpoint_table, ownership_table)
#: The schema proper: what ``db init`` / ``db upgrade`` create, in dependency order.
SCHEMA_TABLES: Final[tuple[Table, ...]] = tuple(
    t for t in metadata.sorted_tables if t not in STATEMENT_TABLES + CHECKPOINT_TABLES + BILL_TABLES
)


#: Every money column, as (table, column) names (migration 0005 makes them exact).
MONEY_COLUMNS: Final[tuple[tuple[str, str], ...]] = tuple(
    (t.name, c.name)
    for t in metadata.sorted_tables
    for c in t.columns
    if any(c.type is m for m in (RATE, CALL_COST, SUM_COST, BUDGET))
)


def all_tables() -> list[tuple[str, list[Table]]]:
    """Every table, grouped by who creates it: the schema (``db init``), the issued statements
    (``report --issue``) and the database checkpoints of ``consume``
    (``consumer.checkpoint_store: database``)."""
    return [
        ("", list(SCHEMA_TABLES)),
        ("Issued chargeback statements (created by report --issue)", list(STATEMENT_TABLES)),
        ("Azure's cost details (created by bill import)", list(BILL_TABLES)),
        (
            "Event Hubs checkpoints of consume (created when consumer.checkpoint_store is database)",
            list(CHECKPOINT_TABLES),
        ),
    ]
