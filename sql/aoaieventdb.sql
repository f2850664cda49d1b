-- apim-aoai-proxy schema v5 (mssql), generated from aoai_helpers.db.tables.
-- Regenerate with: python -m aoai_helpers db ddl --dialect mssql

CREATE TABLE [AoaiSchemaVersion] (
	[Version] INTEGER NOT NULL,
	[AppliedAtUTC] DATETIME NOT NULL,
	[Description] NVARCHAR(200) NULL,
	PRIMARY KEY ([Version])
)
GO

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
)
GO

CREATE UNIQUE INDEX [ix_AoaiTokenRate_Model_From] ON [AoaiTokenRate] ([ModelName], [EffectiveFrom])
GO

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
)
GO

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
)
GO

CREATE INDEX [indx_ExecDate] ON [ApimAoaiToken] ([ExecDateUTC])
GO

CREATE INDEX [indx_ExecTime] ON [ApimAoaiToken] ([ExecTimeUTC])
GO

CREATE INDEX [ix_ApimAoaiToken_Report] ON [ApimAoaiToken] ([ExecDateUTC], [SubscriptionId], [SubscriptionName], [ModelName], [DeploymentName], [UsageSource], [Currency], [PromptTokens], [CompletionTokens], [CachedTokens], [TotalTokens], [Cost])
GO

CREATE INDEX [ix_ApimAoaiToken_Sub_Time] ON [ApimAoaiToken] ([SubscriptionId], [ExecTimeUTC])
GO

CREATE UNIQUE INDEX [ux_ApimAoaiToken_RequestId] ON [ApimAoaiToken] ([RequestId])
GO

CREATE TABLE [BusinessUnitMap] (
	[SubscriptionId] NVARCHAR(50) NOT NULL,
	[SubscriptionName] NVARCHAR(100) NULL,
	[BusinessUnit] NVARCHAR(100) NOT NULL,
	[CostCentre] NVARCHAR(50) NULL,
	[MonthlyBudget] NUMERIC(19, 4) NULL,
	PRIMARY KEY ([SubscriptionId])
)
GO

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
)
GO

CREATE UNIQUE INDEX [ux_IngestDeadLetter_RawSha256] ON [IngestDeadLetter] ([RawSha256])
GO

CREATE TABLE [ReconcileState] (
	[Source] NVARCHAR(200) NOT NULL,
	[WatermarkUTC] DATETIME NOT NULL,
	[UpdatedAtUTC] DATETIME NOT NULL,
	[LastRecords] INTEGER NOT NULL DEFAULT 0,
	[LastUpgraded] INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY ([Source])
)
GO

-- Views for Power BI and other SQL readers (db init)
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

-- Issued chargeback statements (created by report --issue)
CREATE TABLE [ChargebackStatement] (
	[Month] NVARCHAR(7) NOT NULL,
	[Line] INTEGER NOT NULL,
	[BusinessUnit] NVARCHAR(100) NOT NULL,
	[CostCentre] NVARCHAR(50) NULL,
	[Calls] BIGINT NOT NULL,
	[PromptTokens] BIGINT NOT NULL,
	[CompletionTokens] BIGINT NOT NULL,
	[TotalTokens] BIGINT NOT NULL,
	[Cost] NUMERIC(38, 12) NOT NULL,
	[Currency] NVARCHAR(5) NULL,
	[EstimatedCost] NUMERIC(38, 12) NOT NULL,
	[UnpricedCalls] BIGINT NOT NULL,
	[EstimatedCalls] BIGINT NOT NULL,
	[IssuedAtUTC] DATETIME NOT NULL,
	PRIMARY KEY ([Month], [Line])
)
GO

-- Azure's cost details (created by bill import)
CREATE TABLE [AzureCostLine] (
	[Id] INTEGER NOT NULL IDENTITY,
	[ImportId] VARCHAR(36) NOT NULL,
	[ImportedAtUTC] DATETIME NOT NULL,
	[SourceFile] NVARCHAR(260) NOT NULL,
	[BillingMonth] NVARCHAR(7) NOT NULL,
	[UsageDate] DATETIME NOT NULL,
	[CostType] NVARCHAR(16) NOT NULL,
	[SubscriptionId] NVARCHAR(50) NULL,
	[ResourceId] NVARCHAR(400) NULL,
	[MeterId] NVARCHAR(64) NULL,
	[MeterName] NVARCHAR(200) NOT NULL,
	[MeterSubCategory] NVARCHAR(200) NULL,
	[ModelName] NVARCHAR(100) NULL,
	[TokenKind] NVARCHAR(16) NULL,
	[Quantity] NUMERIC(28, 12) NOT NULL,
	[UnitOfMeasure] NVARCHAR(50) NULL,
	[Tokens] BIGINT NULL,
	[Cost] NUMERIC(28, 12) NOT NULL,
	[Currency] NVARCHAR(3) NOT NULL,
	PRIMARY KEY ([Id])
)
GO

CREATE INDEX [ix_AzureCostLine_Month] ON [AzureCostLine] ([BillingMonth], [CostType])
GO

-- Event Hubs checkpoints of consume (created when consumer.checkpoint_store is database)
CREATE TABLE [EventHubCheckpoint] (
	[Namespace] VARCHAR(255) NOT NULL,
	[EventHub] VARCHAR(256) NOT NULL,
	[ConsumerGroup] VARCHAR(64) NOT NULL,
	[PartitionId] VARCHAR(32) NOT NULL,
	[EventOffset] VARCHAR(100) NOT NULL,
	[SequenceNumber] BIGINT NOT NULL,
	[UpdatedAtUTC] DATETIME NOT NULL,
	CONSTRAINT [pk_EventHubCheckpoint] PRIMARY KEY ([Namespace], [EventHub], [ConsumerGroup], [PartitionId])
)
GO

CREATE TABLE [EventHubOwnership] (
	[Namespace] VARCHAR(255) NOT NULL,
	[EventHub] VARCHAR(256) NOT NULL,
	[ConsumerGroup] VARCHAR(64) NOT NULL,
	[PartitionId] VARCHAR(32) NOT NULL,
	[OwnerId] VARCHAR(128) NOT NULL,
	[ETag] VARCHAR(64) NOT NULL,
	[LastModifiedTime] FLOAT NOT NULL,
	CONSTRAINT [pk_EventHubOwnership] PRIMARY KEY ([Namespace], [EventHub], [ConsumerGroup], [PartitionId])
)
GO
