-- The schema the ORIGINAL APIM-AOAI-Proxy project created (its DBScript/aoaieventdb.sql, as
-- SSMS scripts it), restated here as the test fixture for `db upgrade`: the two tables with
-- their columns and Azure SQL types (ARCHITECTURE.md section 4), its two nonclustered
-- indexes, and the rates it provisioned. Statements end in ';' so each parses on its own.
-- tests/test_migrate.py parses this file with sqlglot (read="tsql") and checks that the
-- SQLite/PostgreSQL translations the tests create, and the models, match it.

CREATE TABLE [dbo].[AoaiTokenRate](
	[ModelName] [nvarchar](100) NOT NULL,
	[PromptTokenRate] [float] NOT NULL,
	[CompletionTokenRate] [float] NOT NULL
) ON [PRIMARY];
GO

INSERT INTO [dbo].[AoaiTokenRate] ([ModelName], [PromptTokenRate], [CompletionTokenRate]) VALUES ('gpt-35-turbo', 1.5E-06, 2E-06);
INSERT INTO [dbo].[AoaiTokenRate] ([ModelName], [PromptTokenRate], [CompletionTokenRate]) VALUES ('gpt-35-turbo-16k', 3E-06, 4E-06);
INSERT INTO [dbo].[AoaiTokenRate] ([ModelName], [PromptTokenRate], [CompletionTokenRate]) VALUES ('gpt-4', 3E-05, 6E-05);
INSERT INTO [dbo].[AoaiTokenRate] ([ModelName], [PromptTokenRate], [CompletionTokenRate]) VALUES ('gpt-4-32k', 6E-05, 0.00012);
INSERT INTO [dbo].[AoaiTokenRate] ([ModelName], [PromptTokenRate], [CompletionTokenRate]) VALUES ('text-davinci-003', 2E-06, 2E-06);
INSERT INTO [dbo].[AoaiTokenRate] ([ModelName], [PromptTokenRate], [CompletionTokenRate]) VALUES ('text-embedding-ada-002', 1E-07, 0);
GO

CREATE TABLE [dbo].[ApimAoaiToken](
	[ExecTimeUTC] [datetime] NOT NULL,
	[ExecDateUTC] [datetime] NOT NULL,
	[GatewayRegion] [nvarchar](100) NULL,
	[GatewayServiceName] [nvarchar](150) NULL,
	[SubscriptionId] [nvarchar](50) NULL,
	[SubscriptionName] [nvarchar](100) NULL,
	[UserName] [nvarchar](50) NULL,
	[UserEmail] [nvarchar](50) NULL,
	[ProductName] [nvarchar](100) NULL,
	[ApiName] [nvarchar](100) NULL,
	[OperationId] [nvarchar](100) NULL,
	[ModelName] [nvarchar](100) NULL,
	[IsStreaming] [tinyint] NOT NULL,
	[PromptTokens] [int] NOT NULL,
	[CompletionTokens] [int] NOT NULL,
	[TotalTokens] [int] NOT NULL
) ON [PRIMARY];
GO

CREATE NONCLUSTERED INDEX [indx_ExecDate] ON [dbo].[ApimAoaiToken]
(
	[ExecDateUTC] ASC
) WITH (STATISTICS_NORECOMPUTE = OFF, DROP_EXISTING = OFF, ONLINE = OFF, OPTIMIZE_FOR_SEQUENTIAL_KEY = OFF) ON [PRIMARY];
GO

CREATE NONCLUSTERED INDEX [indx_ExecTime] ON [dbo].[ApimAoaiToken]
(
	[ExecTimeUTC] ASC
) WITH (STATISTICS_NORECOMPUTE = OFF, DROP_EXISTING = OFF, ONLINE = OFF, OPTIMIZE_FOR_SEQUENTIAL_KEY = OFF) ON [PRIMARY];
GO
