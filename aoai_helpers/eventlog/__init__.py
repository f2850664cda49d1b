"""Where events and language-model records are read from: the local event log and
Event Hubs (and their checkpoints), the language-model log (local and Log Analytics).
Imports ``core``, ``db`` and the top level.
"""
