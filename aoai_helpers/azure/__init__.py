"""Azure itself: APIM policies and provisioning (``apim``), the ingestion function
(``functions``), sign-in (``auth``), the in-memory ARM for dry runs (``dryrun``), roles.
Imports ``core``, ``db``, ``pipeline``, ``eventlog``.
"""
