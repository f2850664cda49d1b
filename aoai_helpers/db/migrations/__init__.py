"""Numbered schema migrations: ``vNNNN_*.py``, one per schema version, applied in order by
:mod:`~aoai_helpers.db.migrations.runner` and recorded in ``AoaiSchemaVersion``.

``v0001_original``  v1: the original APIM-AOAI-Proxy schema migrated in place (``original``),
                    the new tables created
``v0002_reconcile`` v2: reconciliation columns and ``ReconcileState``
``v0003_estimate_quality`` v3: ``EstimateQuality`` (how sure an estimate is)
``v0004_daily_rollup`` v4: ``AoaiUsageDaily``, the daily rollup the reports read
``v0005_money_views`` v5: exact money columns (NUMERIC on SQL Server and PostgreSQL) and the
                    views for Power BI (``aoai_helpers.db.views``)

Every step is guarded (``steps``): it does only what the database lacks. Imports ``core``,
the db tables and the top level.
"""
