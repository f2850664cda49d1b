"""Events to priced rows: ingest, the event files, ``consume``, reconciliation and the
library entry points (``service``). Imports ``core``, ``db``, ``eventlog``.
"""
