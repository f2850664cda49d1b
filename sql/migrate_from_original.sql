-- apim-aoai-proxy: upgrade a database of the original APIM-AOAI-Proxy (its aoaieventdb.sql) to schema v5, in place.
-- Generated from aoai_helpers.db.tables; regenerate with: python -m aoai_helpers db ddl --from-original
-- The T-SQL twin of `python -m aoai_helpers db upgrade` (see aoai_helpers/pipeline/upgrade.py).
--
-- Every row is kept and the original columns are not changed: Power BI reports on them
-- keep working. Every step is guarded, so the script does nothing on an upgraded
-- database and can be run again after an interruption. Run it whole and stop at the
-- first error: sqlcmd -b -i migrate_from_original.sql (SSMS: execute the whole file).
--
-- Rows that predate the schema get RequestId = legacy:<first 32 hex digits of the
-- SHA-256 of their original columns>:<Id> (unique through Id), EventVersion 1,
-- Operation from OperationId, UsageSource 'estimated' where IsStreaming = 1 (the
-- original counted streams with tiktoken) else 'reported', IngestedAtUTC = now.
-- Original rates get CachedPromptTokenRate = PromptTokenRate, Currency USD,
-- EffectiveFrom 2000-01-01 (always), EffectiveTo NULL (open),
-- Source 'original AoaiTokenRate'. Then Cost is filled for every upgraded call
-- whose ModelName has a rate (NULL = unpriced). ModelKnown keeps its default (1).

SET XACT_ABORT ON;
GO

-- 0. The upgraded rate table holds one rate per model and start: refuse duplicates.
IF OBJECT_ID(N'AoaiTokenRate', N'U') IS NOT NULL AND COL_LENGTH(N'AoaiTokenRate', N'EffectiveFrom') IS NULL
    IF EXISTS (SELECT [ModelName] FROM [AoaiTokenRate] GROUP BY [ModelName] HAVING COUNT(*) > 1)
    BEGIN
        RAISERROR(N'AoaiTokenRate has more than one rate for a model: keep one row per ModelName, then run this script again (nothing was changed)', 16, 1);
        SET NOEXEC ON;
    END
GO

-- 1. Tables that do not exist yet.
IF OBJECT_ID(N'AoaiSchemaVersion', N'U') IS NULL
BEGIN
CREATE TABLE [AoaiSchemaVersion] (
	[Version] INTEGER NOT NULL,
	[AppliedAtUTC] DATETIME NOT NULL,
	[Description] NVARCHAR(200) NULL,
	PRIMARY KEY ([Version])
);
END
GO

IF OBJECT_ID(N'AoaiTokenRate', N'U') IS NULL
BEGIN
CREATE TABLE [AoaiTokenRate] (
	[RateId] INTEGER NOT NULL IDENTITY,
	[ModelName] NVARCHAR(100) NOT NULL,
	[PromptTokenRate] NUMERIC(27, 18) NOT NULL,
	[CompletionTokenRate] NUMERIC(27, 18) NOT NULL,
	[CachedPromptTokenRate] NUMERIC(27, 18) NULL,
	[Currency] NVARCHAR(3) NOT NULL DEFAULT 'USD',
	[EffectiveFrom] DATETIME NOT NULL,
	[EffectiveTo] DATETIME NULL,
	[Source] NVARCHAR(200) NULL,
	PRIMARY KEY ([RateId])
);
END
GO

IF OBJECT_ID(N'AoaiUsageDaily', N'U') IS NULL
BEGIN
CREATE TABLE [AoaiUsageDaily] (
	[ExecDateUTC] DATETIME NOT NULL,
	[SubscriptionId] NVARCHAR(50) NOT NULL,
	[SubscriptionName] NVARCHAR(100) NOT NULL,
	[ModelName] NVARCHAR(100) NOT NULL,
	[DeploymentName] NVARCHAR(100) NOT NULL,
	[UsageSource] NVARCHAR(16) NOT NULL,
	[Currency] NVARCHAR(3) NOT NULL,
	[Calls] BIGINT NOT NULL,
	[PricedCalls] BIGINT NOT NULL,
	[PromptTokens] BIGINT NOT NULL,
	[CompletionTokens] BIGINT NOT NULL,
	[CachedTokens] BIGINT NOT NULL,
	[ReasoningTokens] BIGINT NOT NULL,
	[TotalTokens] BIGINT NOT NULL,
	[Cost] NUMERIC(38, 12) NULL,
	CONSTRAINT [pk_AoaiUsageDaily] PRIMARY KEY ([ExecDateUTC], [SubscriptionId], [SubscriptionName], [ModelName], [DeploymentName], [UsageSource], [Currency])
);
END
GO

IF OBJECT_ID(N'ApimAoaiToken', N'U') IS NULL
BEGIN
CREATE TABLE [ApimAoaiToken] (
	[Id] BIGINT NOT NULL IDENTITY,
	[ExecTimeUTC] DATETIME NOT NULL,
	[ExecDateUTC] DATETIME NOT NULL,
	[GatewayRegion] NVARCHAR(100) NULL,
	[GatewayServiceName] NVARCHAR(150) NULL,
	[SubscriptionId] NVARCHAR(50) NULL,
	[SubscriptionName] NVARCHAR(100) NULL,
	[UserName] NVARCHAR(50) NULL,
	[UserEmail] NVARCHAR(50) NULL,
	[ProductName] NVARCHAR(100) NULL,
	[ApiName] NVARCHAR(100) NULL,
	[OperationId] NVARCHAR(100) NULL,
	[ModelName] NVARCHAR(100) NULL,
	[IsStreaming] TINYINT NOT NULL,
	[PromptTokens] INTEGER NOT NULL,
	[CompletionTokens] INTEGER NOT NULL,
	[TotalTokens] INTEGER NOT NULL,
	[RequestId] NVARCHAR(64) NOT NULL,
	[EventVersion] SMALLINT NOT NULL,
	[Operation] NVARCHAR(16) NOT NULL,
	[DeploymentName] NVARCHAR(100) NULL,
	[ApiVersion] NVARCHAR(40) NULL,
	[StatusCode] SMALLINT NULL,
	[ReportedModel] NVARCHAR(100) NULL,
	[CachedTokens] INTEGER NOT NULL DEFAULT 0,
	[ReasoningTokens] INTEGER NOT NULL DEFAULT 0,
	[UsageSource] NVARCHAR(16) NOT NULL,
	[EstimateEncoding] NVARCHAR(20) NULL,
	[EstimateQuality] NVARCHAR(16) NULL,
	[ModelKnown] TINYINT NOT NULL DEFAULT 1,
	[Cost] NUMERIC(28, 12) NULL,
	[Currency] NVARCHAR(3) NULL,
	[RateId] INTEGER NULL,
	[IngestedAtUTC] DATETIME NOT NULL,
	[PriorUsageSource] NVARCHAR(16) NULL,
	[PriorPromptTokens] INTEGER NULL,
	[PriorCompletionTokens] INTEGER NULL,
	[PriorTotalTokens] INTEGER NULL,
	[PriorModelName] NVARCHAR(100) NULL,
	[PriorCost] NUMERIC(28, 12) NULL,
	[ReconciledAtUTC] DATETIME NULL,
	PRIMARY KEY ([Id])
);
END
GO

IF OBJECT_ID(N'BusinessUnitMap', N'U') IS NULL
BEGIN
CREATE TABLE [BusinessUnitMap] (
	[SubscriptionId] NVARCHAR(50) NOT NULL,
	[SubscriptionName] NVARCHAR(100) NULL,
	[BusinessUnit] NVARCHAR(100) NOT NULL,
	[CostCentre] NVARCHAR(50) NULL,
	[MonthlyBudget] NUMERIC(19, 4) NULL,
	PRIMARY KEY ([SubscriptionId])
);
END
GO

IF OBJECT_ID(N'IngestDeadLetter', N'U') IS NULL
BEGIN
CREATE TABLE [IngestDeadLetter] (
	[Id] BIGINT NOT NULL IDENTITY,
	[ReceivedAtUTC] DATETIME NOT NULL,
	[Source] NVARCHAR(200) NULL,
	[Reason] NVARCHAR(400) NOT NULL,
	[RequestId] NVARCHAR(64) NULL,
	[RawSha256] VARCHAR(64) NOT NULL,
	[RawBody] VARBINARY(max) NOT NULL,
	[RawSize] INTEGER NOT NULL,
	PRIMARY KEY ([Id])
);
END
GO

IF OBJECT_ID(N'ReconcileState', N'U') IS NULL
BEGIN
CREATE TABLE [ReconcileState] (
	[Source] NVARCHAR(200) NOT NULL,
	[WatermarkUTC] DATETIME NOT NULL,
	[UpdatedAtUTC] DATETIME NOT NULL,
	[LastRecords] INTEGER NOT NULL DEFAULT 0,
	[LastUpgraded] INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY ([Source])
);
END
GO

-- 2. New columns. Those the schema wants NOT NULL without a default are added
--    nullable, filled (3), then made NOT NULL (4).
IF COL_LENGTH(N'AoaiSchemaVersion', N'Description') IS NULL
    ALTER TABLE [AoaiSchemaVersion] ADD [Description] NVARCHAR(200) NULL;
GO

IF COL_LENGTH(N'AoaiTokenRate', N'RateId') IS NULL
    ALTER TABLE [AoaiTokenRate] ADD [RateId] INTEGER NOT NULL IDENTITY;
IF COL_LENGTH(N'AoaiTokenRate', N'CachedPromptTokenRate') IS NULL
    ALTER TABLE [AoaiTokenRate] ADD [CachedPromptTokenRate] NUMERIC(27, 18) NULL;
IF COL_LENGTH(N'AoaiTokenRate', N'Currency') IS NULL
    ALTER TABLE [AoaiTokenRate] ADD [Currency] NVARCHAR(3) NOT NULL DEFAULT 'USD';
IF COL_LENGTH(N'AoaiTokenRate', N'EffectiveFrom') IS NULL
    ALTER TABLE [AoaiTokenRate] ADD [EffectiveFrom] DATETIME NULL;
IF COL_LENGTH(N'AoaiTokenRate', N'EffectiveTo') IS NULL
    ALTER TABLE [AoaiTokenRate] ADD [EffectiveTo] DATETIME NULL;
IF COL_LENGTH(N'AoaiTokenRate', N'Source') IS NULL
    ALTER TABLE [AoaiTokenRate] ADD [Source] NVARCHAR(200) NULL;
GO

IF COL_LENGTH(N'AoaiUsageDaily', N'Cost') IS NULL
    ALTER TABLE [AoaiUsageDaily] ADD [Cost] NUMERIC(38, 12) NULL;
GO

IF COL_LENGTH(N'ApimAoaiToken', N'Id') IS NULL
    ALTER TABLE [ApimAoaiToken] ADD [Id] BIGINT NOT NULL IDENTITY;
IF COL_LENGTH(N'ApimAoaiToken', N'RequestId') IS NULL
    ALTER TABLE [ApimAoaiToken] ADD [RequestId] NVARCHAR(64) NULL;
IF COL_LENGTH(N'ApimAoaiToken', N'EventVersion') IS NULL
    ALTER TABLE [ApimAoaiToken] ADD [EventVersion] SMALLINT NULL;
IF COL_LENGTH(N'ApimAoaiToken', N'Operation') IS NULL
    ALTER TABLE [ApimAoaiToken] ADD [Operation] NVARCHAR(16) NULL;
IF COL_LENGTH(N'ApimAoaiToken', N'DeploymentName') IS NULL
    ALTER TABLE [ApimAoaiToken] ADD [DeploymentName] NVARCHAR(100) NULL;
IF COL_LENGTH(N'ApimAoaiToken', N'ApiVersion') IS NULL
    ALTER TABLE [ApimAoaiToken] ADD [ApiVersion] NVARCHAR(40) NULL;
IF COL_LENGTH(N'ApimAoaiToken', N'StatusCode') IS NULL
    ALTER TABLE [ApimAoaiToken] ADD [StatusCode] SMALLINT NULL;
IF COL_LENGTH(N'ApimAoaiToken', N'ReportedModel') IS NULL
    ALTER TABLE [ApimAoaiToken] ADD [ReportedModel] NVARCHAR(100) NULL;
IF COL_LENGTH(N'ApimAoaiToken', N'CachedTokens') IS NULL
    ALTER TABLE [ApimAoaiToken] ADD [CachedTokens] INTEGER NOT NULL DEFAULT 0;
IF COL_LENGTH(N'ApimAoaiToken', N'ReasoningTokens') IS NULL
    ALTER TABLE [ApimAoaiToken] ADD [ReasoningTokens] INTEGER NOT NULL DEFAULT 0;
IF COL_LENGTH(N'ApimAoaiToken', N'UsageSource') IS NULL
    ALTER TABLE [ApimAoaiToken] ADD [UsageSource] NVARCHAR(16) NULL;
IF COL_LENGTH(N'ApimAoaiToken', N'EstimateEncoding') IS NULL
    ALTER TABLE [ApimAoaiToken] ADD [EstimateEncoding] NVARCHAR(20) NULL;
IF COL_LENGTH(N'ApimAoaiToken', N'EstimateQuality') IS NULL
    ALTER TABLE [ApimAoaiToken] ADD [EstimateQuality] NVARCHAR(16) NULL;
IF COL_LENGTH(N'ApimAoaiToken', N'ModelKnown') IS NULL
    ALTER TABLE [ApimAoaiToken] ADD [ModelKnown] TINYINT NOT NULL DEFAULT 1;
IF COL_LENGTH(N'ApimAoaiToken', N'Cost') IS NULL
    ALTER TABLE [ApimAoaiToken] ADD [Cost] NUMERIC(28, 12) NULL;
IF COL_LENGTH(N'ApimAoaiToken', N'Currency') IS NULL
    ALTER TABLE [ApimAoaiToken] ADD [Currency] NVARCHAR(3) NULL;
IF COL_LENGTH(N'ApimAoaiToken', N'RateId') IS NULL
    ALTER TABLE [ApimAoaiToken] ADD [RateId] INTEGER NULL;
IF COL_LENGTH(N'ApimAoaiToken', N'IngestedAtUTC') IS NULL
    ALTER TABLE [ApimAoaiToken] ADD [IngestedAtUTC] DATETIME NULL;
IF COL_LENGTH(N'ApimAoaiToken', N'PriorUsageSource') IS NULL
    ALTER TABLE [ApimAoaiToken] ADD [PriorUsageSource] NVARCHAR(16) NULL;
IF COL_LENGTH(N'ApimAoaiToken', N'PriorPromptTokens') IS NULL
    ALTER TABLE [ApimAoaiToken] ADD [PriorPromptTokens] INTEGER NULL;
IF COL_LENGTH(N'ApimAoaiToken', N'PriorCompletionTokens') IS NULL
    ALTER TABLE [ApimAoaiToken] ADD [PriorCompletionTokens] INTEGER NULL;
IF COL_LENGTH(N'ApimAoaiToken', N'PriorTotalTokens') IS NULL
    ALTER TABLE [ApimAoaiToken] ADD [PriorTotalTokens] INTEGER NULL;
IF COL_LENGTH(N'ApimAoaiToken', N'PriorModelName') IS NULL
    ALTER TABLE [ApimAoaiToken] ADD [PriorModelName] NVARCHAR(100) NULL;
IF COL_LENGTH(N'ApimAoaiToken', N'PriorCost') IS NULL
    ALTER TABLE [ApimAoaiToken] ADD [PriorCost] NUMERIC(28, 12) NULL;
IF COL_LENGTH(N'ApimAoaiToken', N'ReconciledAtUTC') IS NULL
    ALTER TABLE [ApimAoaiToken] ADD [ReconciledAtUTC] DATETIME NULL;
GO

IF COL_LENGTH(N'BusinessUnitMap', N'SubscriptionName') IS NULL
    ALTER TABLE [BusinessUnitMap] ADD [SubscriptionName] NVARCHAR(100) NULL;
IF COL_LENGTH(N'BusinessUnitMap', N'CostCentre') IS NULL
    ALTER TABLE [BusinessUnitMap] ADD [CostCentre] NVARCHAR(50) NULL;
IF COL_LENGTH(N'BusinessUnitMap', N'MonthlyBudget') IS NULL
    ALTER TABLE [BusinessUnitMap] ADD [MonthlyBudget] NUMERIC(19, 4) NULL;
GO

IF COL_LENGTH(N'IngestDeadLetter', N'Source') IS NULL
    ALTER TABLE [IngestDeadLetter] ADD [Source] NVARCHAR(200) NULL;
IF COL_LENGTH(N'IngestDeadLetter', N'RequestId') IS NULL
    ALTER TABLE [IngestDeadLetter] ADD [RequestId] NVARCHAR(64) NULL;
GO

IF COL_LENGTH(N'ReconcileState', N'LastRecords') IS NULL
    ALTER TABLE [ReconcileState] ADD [LastRecords] INTEGER NOT NULL DEFAULT 0;
IF COL_LENGTH(N'ReconcileState', N'LastUpgraded') IS NULL
    ALTER TABLE [ReconcileState] ADD [LastUpgraded] INTEGER NOT NULL DEFAULT 0;
GO

IF NOT EXISTS (SELECT 1 FROM sys.key_constraints WHERE [type] = 'PK' AND parent_object_id = OBJECT_ID(N'ApimAoaiToken'))
    ALTER TABLE [ApimAoaiToken] ADD PRIMARY KEY ([Id]);
GO

IF NOT EXISTS (SELECT 1 FROM sys.key_constraints WHERE [type] = 'PK' AND parent_object_id = OBJECT_ID(N'AoaiTokenRate'))
    ALTER TABLE [AoaiTokenRate] ADD PRIMARY KEY ([RateId]);
GO

-- 3. Fill the rows that predate the schema (RequestId IS NULL / EffectiveFrom IS NULL).
UPDATE [ApimAoaiToken] SET
    [RequestId] = CONCAT(N'legacy:', LOWER(LEFT(CONVERT(VARCHAR(64), HASHBYTES('SHA2_256', CONCAT(CONVERT(NVARCHAR(23), [ExecTimeUTC], 121), N'|', CONVERT(NVARCHAR(23), [ExecDateUTC], 121), N'|', [GatewayRegion], N'|', [GatewayServiceName], N'|', [SubscriptionId], N'|', [SubscriptionName], N'|', [UserName], N'|', [UserEmail], N'|', [ProductName], N'|', [ApiName], N'|', [OperationId], N'|', [ModelName], N'|', [IsStreaming], N'|', [PromptTokens], N'|', [CompletionTokens], N'|', [TotalTokens])), 2), 32)), N':', [Id]),
    [EventVersion] = 1,
    [Operation] = CASE LOWER([OperationId]) WHEN N'chatcompletions_create' THEN N'chat' WHEN N'completions_create' THEN N'completions' WHEN N'embeddings_create' THEN N'embeddings' ELSE N'other' END,
    [UsageSource] = CASE WHEN [IsStreaming] = 1 THEN N'estimated' ELSE N'reported' END,
    [IngestedAtUTC] = GETUTCDATE()
WHERE [RequestId] IS NULL;
GO

UPDATE [AoaiTokenRate] SET
    [CachedPromptTokenRate] = [PromptTokenRate],
    [Currency] = N'USD',
    [EffectiveFrom] = '2000-01-01T00:00:00',
    [EffectiveTo] = NULL,
    [Source] = N'original AoaiTokenRate'
WHERE [EffectiveFrom] IS NULL;
GO

-- 4. NOT NULL, now that every row has a value.
IF COLUMNPROPERTY(OBJECT_ID(N'ApimAoaiToken'), N'RequestId', 'AllowsNull') = 1
    ALTER TABLE [ApimAoaiToken] ALTER COLUMN [RequestId] NVARCHAR(64) NOT NULL;
IF COLUMNPROPERTY(OBJECT_ID(N'ApimAoaiToken'), N'EventVersion', 'AllowsNull') = 1
    ALTER TABLE [ApimAoaiToken] ALTER COLUMN [EventVersion] SMALLINT NOT NULL;
IF COLUMNPROPERTY(OBJECT_ID(N'ApimAoaiToken'), N'Operation', 'AllowsNull') = 1
    ALTER TABLE [ApimAoaiToken] ALTER COLUMN [Operation] NVARCHAR(16) NOT NULL;
IF COLUMNPROPERTY(OBJECT_ID(N'ApimAoaiToken'), N'UsageSource', 'AllowsNull') = 1
    ALTER TABLE [ApimAoaiToken] ALTER COLUMN [UsageSource] NVARCHAR(16) NOT NULL;
IF COLUMNPROPERTY(OBJECT_ID(N'ApimAoaiToken'), N'IngestedAtUTC', 'AllowsNull') = 1
    ALTER TABLE [ApimAoaiToken] ALTER COLUMN [IngestedAtUTC] DATETIME NOT NULL;
GO

IF COLUMNPROPERTY(OBJECT_ID(N'AoaiTokenRate'), N'EffectiveFrom', 'AllowsNull') = 1
    ALTER TABLE [AoaiTokenRate] ALTER COLUMN [EffectiveFrom] DATETIME NOT NULL;
GO

-- 4b. Money columns exact: NUMERIC (the original FLOAT rates, and the costs of a
--     database written before schema v5). An index that holds the column is dropped
--     first (ALTER COLUMN refuses otherwise) and created again in step 5. Each
--     conversion rewrites the table: plan it for a quiet hour on a large one.
IF EXISTS (SELECT 1 FROM sys.columns WHERE object_id = OBJECT_ID(N'AoaiTokenRate') AND name = N'PromptTokenRate' AND (TYPE_NAME(system_type_id) NOT IN (N'decimal', N'numeric') OR precision <> 27 OR scale <> 18))
    ALTER TABLE [AoaiTokenRate] ALTER COLUMN [PromptTokenRate] NUMERIC(27, 18) NOT NULL;
IF EXISTS (SELECT 1 FROM sys.columns WHERE object_id = OBJECT_ID(N'AoaiTokenRate') AND name = N'CompletionTokenRate' AND (TYPE_NAME(system_type_id) NOT IN (N'decimal', N'numeric') OR precision <> 27 OR scale <> 18))
    ALTER TABLE [AoaiTokenRate] ALTER COLUMN [CompletionTokenRate] NUMERIC(27, 18) NOT NULL;
IF EXISTS (SELECT 1 FROM sys.columns WHERE object_id = OBJECT_ID(N'AoaiTokenRate') AND name = N'CachedPromptTokenRate' AND (TYPE_NAME(system_type_id) NOT IN (N'decimal', N'numeric') OR precision <> 27 OR scale <> 18))
    ALTER TABLE [AoaiTokenRate] ALTER COLUMN [CachedPromptTokenRate] NUMERIC(27, 18) NULL;
GO

IF EXISTS (SELECT 1 FROM sys.columns WHERE object_id = OBJECT_ID(N'AoaiUsageDaily') AND name = N'Cost' AND (TYPE_NAME(system_type_id) NOT IN (N'decimal', N'numeric') OR precision <> 38 OR scale <> 12))
    ALTER TABLE [AoaiUsageDaily] ALTER COLUMN [Cost] NUMERIC(38, 12) NULL;
GO

IF EXISTS (SELECT 1 FROM sys.columns WHERE object_id = OBJECT_ID(N'ApimAoaiToken') AND name = N'Cost' AND (TYPE_NAME(system_type_id) NOT IN (N'decimal', N'numeric') OR precision <> 28 OR scale <> 12)) AND EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ix_ApimAoaiToken_Report' AND object_id = OBJECT_ID(N'ApimAoaiToken'))
    DROP INDEX [ix_ApimAoaiToken_Report] ON [ApimAoaiToken];
IF EXISTS (SELECT 1 FROM sys.columns WHERE object_id = OBJECT_ID(N'ApimAoaiToken') AND name = N'Cost' AND (TYPE_NAME(system_type_id) NOT IN (N'decimal', N'numeric') OR precision <> 28 OR scale <> 12))
    ALTER TABLE [ApimAoaiToken] ALTER COLUMN [Cost] NUMERIC(28, 12) NULL;
IF EXISTS (SELECT 1 FROM sys.columns WHERE object_id = OBJECT_ID(N'ApimAoaiToken') AND name = N'PriorCost' AND (TYPE_NAME(system_type_id) NOT IN (N'decimal', N'numeric') OR precision <> 28 OR scale <> 12))
    ALTER TABLE [ApimAoaiToken] ALTER COLUMN [PriorCost] NUMERIC(28, 12) NULL;
GO

IF EXISTS (SELECT 1 FROM sys.columns WHERE object_id = OBJECT_ID(N'AzureCostLine') AND name = N'Quantity' AND (TYPE_NAME(system_type_id) NOT IN (N'decimal', N'numeric') OR precision <> 28 OR scale <> 12))
    ALTER TABLE [AzureCostLine] ALTER COLUMN [Quantity] NUMERIC(28, 12) NOT NULL;
IF EXISTS (SELECT 1 FROM sys.columns WHERE object_id = OBJECT_ID(N'AzureCostLine') AND name = N'Cost' AND (TYPE_NAME(system_type_id) NOT IN (N'decimal', N'numeric') OR precision <> 28 OR scale <> 12))
    ALTER TABLE [AzureCostLine] ALTER COLUMN [Cost] NUMERIC(28, 12) NOT NULL;
GO

IF EXISTS (SELECT 1 FROM sys.columns WHERE object_id = OBJECT_ID(N'BusinessUnitMap') AND name = N'MonthlyBudget' AND (TYPE_NAME(system_type_id) NOT IN (N'decimal', N'numeric') OR precision <> 19 OR scale <> 4))
    ALTER TABLE [BusinessUnitMap] ALTER COLUMN [MonthlyBudget] NUMERIC(19, 4) NULL;
GO

IF EXISTS (SELECT 1 FROM sys.columns WHERE object_id = OBJECT_ID(N'ChargebackStatement') AND name = N'Cost' AND (TYPE_NAME(system_type_id) NOT IN (N'decimal', N'numeric') OR precision <> 38 OR scale <> 12))
    ALTER TABLE [ChargebackStatement] ALTER COLUMN [Cost] NUMERIC(38, 12) NOT NULL;
IF EXISTS (SELECT 1 FROM sys.columns WHERE object_id = OBJECT_ID(N'ChargebackStatement') AND name = N'EstimatedCost' AND (TYPE_NAME(system_type_id) NOT IN (N'decimal', N'numeric') OR precision <> 38 OR scale <> 12))
    ALTER TABLE [ChargebackStatement] ALTER COLUMN [EstimatedCost] NUMERIC(38, 12) NOT NULL;
GO

-- 5. Indexes (the unique RequestId index among them).
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ix_AoaiTokenRate_Model_From' AND object_id = OBJECT_ID(N'AoaiTokenRate'))
    CREATE UNIQUE INDEX [ix_AoaiTokenRate_Model_From] ON [AoaiTokenRate] ([ModelName], [EffectiveFrom]);
GO

IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'indx_ExecDate' AND object_id = OBJECT_ID(N'ApimAoaiToken'))
    CREATE INDEX [indx_ExecDate] ON [ApimAoaiToken] ([ExecDateUTC]);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'indx_ExecTime' AND object_id = OBJECT_ID(N'ApimAoaiToken'))
    CREATE INDEX [indx_ExecTime] ON [ApimAoaiToken] ([ExecTimeUTC]);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ix_ApimAoaiToken_Report' AND object_id = OBJECT_ID(N'ApimAoaiToken'))
    CREATE INDEX [ix_ApimAoaiToken_Report] ON [ApimAoaiToken] ([ExecDateUTC], [SubscriptionId], [SubscriptionName], [ModelName], [DeploymentName], [UsageSource], [Currency], [PromptTokens], [CompletionTokens], [CachedTokens], [TotalTokens], [Cost]);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ix_ApimAoaiToken_Sub_Time' AND object_id = OBJECT_ID(N'ApimAoaiToken'))
    CREATE INDEX [ix_ApimAoaiToken_Sub_Time] ON [ApimAoaiToken] ([SubscriptionId], [ExecTimeUTC]);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ux_ApimAoaiToken_RequestId' AND object_id = OBJECT_ID(N'ApimAoaiToken'))
    CREATE UNIQUE INDEX [ux_ApimAoaiToken_RequestId] ON [ApimAoaiToken] ([RequestId]);
GO

IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ux_IngestDeadLetter_RawSha256' AND object_id = OBJECT_ID(N'IngestDeadLetter'))
    CREATE UNIQUE INDEX [ux_IngestDeadLetter_RawSha256] ON [IngestDeadLetter] ([RawSha256]);
GO

-- 6. Cost of the upgraded calls at the rate in effect at ExecTimeUTC (as db upgrade).
UPDATE t SET
    [Cost] = (t.[PromptTokens] - CASE WHEN t.[CachedTokens] < t.[PromptTokens] THEN t.[CachedTokens] ELSE t.[PromptTokens] END) * r.[PromptTokenRate]
        + CASE WHEN t.[CachedTokens] < t.[PromptTokens] THEN t.[CachedTokens] ELSE t.[PromptTokens] END * COALESCE(r.[CachedPromptTokenRate], r.[PromptTokenRate])
        + t.[CompletionTokens] * r.[CompletionTokenRate],
    [Currency] = r.[Currency],
    [RateId] = r.[RateId]
FROM [ApimAoaiToken] AS t
JOIN [AoaiTokenRate] AS r ON r.[ModelName] = t.[ModelName] AND r.[EffectiveFrom] <= t.[ExecTimeUTC]
    AND (r.[EffectiveTo] IS NULL OR t.[ExecTimeUTC] < r.[EffectiveTo])
WHERE t.[Cost] IS NULL AND t.[RequestId] LIKE N'legacy:%' AND t.[UsageSource] <> N'unbilled';
GO

-- 6b. The daily rollup [AoaiUsageDaily], summed from the calls (as db upgrade),
--     once: a database at schema v4 keeps it itself (re-running the script beside live
--     ingesters must not empty it).
IF NOT EXISTS (SELECT 1 FROM [AoaiSchemaVersion] WHERE [Version] >= 4)
BEGIN
    DELETE FROM [AoaiUsageDaily];
    INSERT INTO [AoaiUsageDaily] ([ExecDateUTC], [SubscriptionId], [SubscriptionName], [ModelName], [DeploymentName], [UsageSource], [Currency], [Calls], [PricedCalls], [PromptTokens], [CompletionTokens], [CachedTokens], [ReasoningTokens], [TotalTokens], [Cost]) SELECT [ApimAoaiToken].[ExecDateUTC], coalesce([ApimAoaiToken].[SubscriptionId], '') AS coalesce_1, coalesce([ApimAoaiToken].[SubscriptionName], '') AS coalesce_2, coalesce([ApimAoaiToken].[ModelName], '') AS coalesce_3, coalesce([ApimAoaiToken].[DeploymentName], '') AS coalesce_4, coalesce([ApimAoaiToken].[UsageSource], '') AS coalesce_5, coalesce([ApimAoaiToken].[Currency], '') AS coalesce_6, count(*) AS count_1, count([ApimAoaiToken].[Cost]) AS count_2, sum(CAST([ApimAoaiToken].[PromptTokens] AS BIGINT)) AS sum_1, sum(CAST([ApimAoaiToken].[CompletionTokens] AS BIGINT)) AS sum_2, sum(CAST([ApimAoaiToken].[CachedTokens] AS BIGINT)) AS sum_3, sum(CAST([ApimAoaiToken].[ReasoningTokens] AS BIGINT)) AS sum_4, sum(CAST([ApimAoaiToken].[TotalTokens] AS BIGINT)) AS sum_5, sum([ApimAoaiToken].[Cost]) AS sum_6
FROM [ApimAoaiToken] GROUP BY [ApimAoaiToken].[ExecDateUTC], coalesce([ApimAoaiToken].[SubscriptionId], ''), coalesce([ApimAoaiToken].[SubscriptionName], ''), coalesce([ApimAoaiToken].[ModelName], ''), coalesce([ApimAoaiToken].[DeploymentName], ''), coalesce([ApimAoaiToken].[UsageSource], ''), coalesce([ApimAoaiToken].[Currency], '');
END
GO

-- 6c. The views for Power BI and other SQL readers (CREATE OR ALTER: a view that
--     exists gets this definition).
CREATE OR ALTER VIEW [vw_AoaiChargebackDaily] AS
SELECT convert(DATE, [AoaiUsageDaily].[ExecDateUTC]) AS [UsageDate], coalesce([BusinessUnitMap].[BusinessUnit], nullif([AoaiUsageDaily].[SubscriptionName], ''), nullif([AoaiUsageDaily].[SubscriptionId], ''), '(no subscription)') AS [BusinessUnit], [BusinessUnitMap].[CostCentre] AS [CostCentre], nullif([AoaiUsageDaily].[SubscriptionId], '') AS [SubscriptionId], nullif([AoaiUsageDaily].[SubscriptionName], '') AS [SubscriptionName], nullif([AoaiUsageDaily].[ModelName], '') AS [ModelName], nullif([AoaiUsageDaily].[DeploymentName], '') AS [DeploymentName], [AoaiUsageDaily].[UsageSource] AS [UsageSource], nullif([AoaiUsageDaily].[Currency], '') AS [Currency], [AoaiUsageDaily].[Calls] AS [Calls], [AoaiUsageDaily].[PricedCalls] AS [PricedCalls], [AoaiUsageDaily].[Calls] - [AoaiUsageDaily].[PricedCalls] AS [UnpricedCalls], [AoaiUsageDaily].[PromptTokens] AS [PromptTokens], [AoaiUsageDaily].[CompletionTokens] AS [CompletionTokens], [AoaiUsageDaily].[CachedTokens] AS [CachedTokens], [AoaiUsageDaily].[ReasoningTokens] AS [ReasoningTokens], [AoaiUsageDaily].[TotalTokens] AS [TotalTokens], CASE WHEN ([AoaiUsageDaily].[PricedCalls] > 0 AND ([AoaiUsageDaily].[Currency] != N'' OR [AoaiUsageDaily].[PricedCalls] = [AoaiUsageDaily].[Calls])) THEN [AoaiUsageDaily].[Cost] END AS [Cost], CASE WHEN ([AoaiUsageDaily].[UsageSource] IN (N'estimated', N'prompt_only')) THEN 1 ELSE 0 END AS [IsEstimated]
FROM [AoaiUsageDaily] LEFT OUTER JOIN [BusinessUnitMap] ON [BusinessUnitMap].[SubscriptionId] = nullif([AoaiUsageDaily].[SubscriptionId], '')
GO

CREATE OR ALTER VIEW [vw_AoaiChargebackMonthly] AS
SELECT d.[UsageMonth], d.[MonthStart], d.[BusinessUnit], max(d.[CostCentre]) AS [CostCentre], d.[Currency], sum(d.[Calls]) AS [Calls], sum(d.[PricedCalls]) AS [PricedCalls], sum(d.[UnpricedCalls]) AS [UnpricedCalls], sum(CASE WHEN (d.[IsEstimated] = 1) THEN d.[Calls] ELSE 0 END) AS [EstimatedCalls], sum(d.[PromptTokens]) AS [PromptTokens], sum(d.[CompletionTokens]) AS [CompletionTokens], sum(d.[CachedTokens]) AS [CachedTokens], sum(d.[ReasoningTokens]) AS [ReasoningTokens], sum(d.[TotalTokens]) AS [TotalTokens], CASE WHEN (sum(d.[PricedCalls]) > 0 AND (d.[Currency] IS NOT NULL OR sum(d.[UnpricedCalls]) = 0)) THEN sum(d.[Cost]) END AS [Cost], CASE WHEN (sum(d.[PricedCalls]) > 0) THEN coalesce(sum(CASE WHEN (d.[IsEstimated] = 1) THEN d.[Cost] END), 0) END AS [EstimatedCost]
FROM (SELECT convert(CHAR(7), [AoaiUsageDaily].[ExecDateUTC], 126) AS [UsageMonth], datefromparts(year([AoaiUsageDaily].[ExecDateUTC]), month([AoaiUsageDaily].[ExecDateUTC]), 1) AS [MonthStart], convert(DATE, [AoaiUsageDaily].[ExecDateUTC]) AS [UsageDate], coalesce([BusinessUnitMap].[BusinessUnit], nullif([AoaiUsageDaily].[SubscriptionName], ''), nullif([AoaiUsageDaily].[SubscriptionId], ''), '(no subscription)') AS [BusinessUnit], [BusinessUnitMap].[CostCentre] AS [CostCentre], nullif([AoaiUsageDaily].[SubscriptionId], '') AS [SubscriptionId], nullif([AoaiUsageDaily].[SubscriptionName], '') AS [SubscriptionName], nullif([AoaiUsageDaily].[ModelName], '') AS [ModelName], nullif([AoaiUsageDaily].[DeploymentName], '') AS [DeploymentName], [AoaiUsageDaily].[UsageSource] AS [UsageSource], nullif([AoaiUsageDaily].[Currency], '') AS [Currency], [AoaiUsageDaily].[Calls] AS [Calls], [AoaiUsageDaily].[PricedCalls] AS [PricedCalls], [AoaiUsageDaily].[Calls] - [AoaiUsageDaily].[PricedCalls] AS [UnpricedCalls], [AoaiUsageDaily].[PromptTokens] AS [PromptTokens], [AoaiUsageDaily].[CompletionTokens] AS [CompletionTokens], [AoaiUsageDaily].[CachedTokens] AS [CachedTokens], [AoaiUsageDaily].[ReasoningTokens] AS [ReasoningTokens], [AoaiUsageDaily].[TotalTokens] AS [TotalTokens], CASE WHEN ([AoaiUsageDaily].[PricedCalls] > 0 AND ([AoaiUsageDaily].[Currency] != N'' OR [AoaiUsageDaily].[PricedCalls] = [AoaiUsageDaily].[Calls])) THEN [AoaiUsageDaily].[Cost] END AS [Cost], CASE WHEN ([AoaiUsageDaily].[UsageSource] IN (N'estimated', N'prompt_only')) THEN 1 ELSE 0 END AS [IsEstimated]
FROM [AoaiUsageDaily] LEFT OUTER JOIN [BusinessUnitMap] ON [BusinessUnitMap].[SubscriptionId] = nullif([AoaiUsageDaily].[SubscriptionId], '')) AS d GROUP BY d.[UsageMonth], d.[MonthStart], d.[BusinessUnit], d.[Currency]
GO

CREATE OR ALTER VIEW [vw_AoaiPricedCalls] AS
SELECT [ApimAoaiToken].[Id], [ApimAoaiToken].[RequestId], [ApimAoaiToken].[ExecTimeUTC], convert(DATE, [ApimAoaiToken].[ExecDateUTC]) AS [UsageDate], coalesce([BusinessUnitMap].[BusinessUnit], nullif([ApimAoaiToken].[SubscriptionName], ''), nullif([ApimAoaiToken].[SubscriptionId], ''), '(no subscription)') AS [BusinessUnit], [BusinessUnitMap].[CostCentre] AS [CostCentre], nullif([ApimAoaiToken].[SubscriptionId], '') AS [SubscriptionId], nullif([ApimAoaiToken].[SubscriptionName], '') AS [SubscriptionName], [ApimAoaiToken].[UserName], [ApimAoaiToken].[UserEmail], [ApimAoaiToken].[ModelName], [ApimAoaiToken].[DeploymentName], [ApimAoaiToken].[Operation], [ApimAoaiToken].[UsageSource], CASE WHEN ([ApimAoaiToken].[UsageSource] IN (N'estimated', N'prompt_only')) THEN 1 ELSE 0 END AS [IsEstimated], [ApimAoaiToken].[PromptTokens], [ApimAoaiToken].[CompletionTokens], [ApimAoaiToken].[CachedTokens], [ApimAoaiToken].[ReasoningTokens], [ApimAoaiToken].[TotalTokens], [ApimAoaiToken].[Cost], CASE WHEN ([ApimAoaiToken].[Cost] IS NOT NULL) THEN [ApimAoaiToken].[Currency] END AS [Currency], CASE WHEN ([ApimAoaiToken].[Cost] IS NOT NULL) THEN 'priced' ELSE 'unpriced' END AS [PriceStatus], [ApimAoaiToken].[RateId]
FROM [ApimAoaiToken] LEFT OUTER JOIN [BusinessUnitMap] ON [BusinessUnitMap].[SubscriptionId] = nullif([ApimAoaiToken].[SubscriptionId], '')
GO

-- 7. Record the migration.
IF NOT EXISTS (SELECT 1 FROM [AoaiSchemaVersion] WHERE [Version] = 5)
    INSERT INTO [AoaiSchemaVersion] ([Version], [AppliedAtUTC], [Description])
    VALUES (5, GETUTCDATE(), N'upgraded in place from the original APIM-AOAI-Proxy schema (sql/migrate_from_original.sql)');
GO

SET NOEXEC OFF;
GO
