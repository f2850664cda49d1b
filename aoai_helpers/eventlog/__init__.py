"""Where events and language-model records are read from: the event log's interface
(``protocol``), the local event log (``local``, its format ``logfile``, its consumers sharing
partitions ``sharing``; ``eventhub`` imports them all in one), Event Hubs (``azure``) and their checkpoints (``checkpoints``), the language-model
log (``llmlog`` local, ``llmlog_azure`` Log Analytics). Imports ``core``, ``db`` and the top level.
"""
