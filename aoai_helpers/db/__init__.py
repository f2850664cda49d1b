"""The database: every table on one ``MetaData`` (``tables``), engines and transactions
(``engine``), the schema's life cycle (``schema``), its numbered migrations (``migrations/``,
``migrate`` for ``db upgrade``, ``migrate_tsql`` for the DBAs' script), rates and business
units. Imports ``core`` and the top level.

Why a small migration registry and not Alembic: (1) no new dependency in the function's zip
(Alembic brings Mako and its own configuration and script folder); (2) the DBAs' T-SQL must stay
one guarded, idempotent script (``IF COL_LENGTH … IS NULL``, ``IF NOT EXISTS``) that can be run
again after an interruption — Alembic's offline ``--sql`` writes unguarded statements meant to
run once, in order, against a known revision; (3) deployed databases already record their
version as an integer in ``AoaiSchemaVersion`` (Version, AppliedAtUTC, Description), which the
registry reads as is, where Alembic would need its own ``alembic_version`` table stamped beside
it; (4) the migration from the original project's schema rewrites rows (legacy RequestIds,
SQLite table rebuilds) in Python, which Alembic would only wrap. A migration is a module
``migrations/vNNNN_*.py`` (``VERSION``, ``DESCRIPTION``, ``upgrade(conn, run)``); the runner
applies the pending ones in one transaction and records each.
"""
