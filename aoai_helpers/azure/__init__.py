"""Azure itself: APIM policies, provisioning and clean-up (``apim``), the ingestion function
(``functions``), the in-memory ARM for dry runs (``dryrun``, its provider listing
``dryrun_providers``) and the RBAC roles a spec needs (``roles``). Sign-in is the top-level
``aoai_helpers.auth``. Imports ``core``, ``db``, ``eventlog``, ``pipeline`` and the top level;
never ``local`` or above.
"""
