-- apim-aoai-proxy schema v4 (mssql), generated from aoai_helpers.db.tables.
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
	[PromptTokenRate] FLOAT NOT NULL,
	[CompletionTokenRate] FLOAT NOT NULL,
	[CachedPromptTokenRate] FLOAT NULL,
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
	[Cost] FLOAT NULL,
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
	[Cost] FLOAT NULL,
	[Currency] NVARCHAR(3) NULL,
	[RateId] INTEGER NULL,
	[IngestedAtUTC] DATETIME NOT NULL,
	[PriorUsageSource] NVARCHAR(16) NULL,
	[PriorPromptTokens] INTEGER NULL,
	[PriorCompletionTokens] INTEGER NULL,
	[PriorTotalTokens] INTEGER NULL,
	[PriorModelName] NVARCHAR(100) NULL,
	[PriorCost] FLOAT NULL,
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
	[MonthlyBudget] FLOAT NULL,
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
	[Cost] FLOAT NOT NULL,
	[Currency] NVARCHAR(5) NULL,
	[EstimatedCost] FLOAT NOT NULL,
	[UnpricedCalls] BIGINT NOT NULL,
	[EstimatedCalls] BIGINT NOT NULL,
	[IssuedAtUTC] DATETIME NOT NULL,
	PRIMARY KEY ([Month], [Line])
)
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
