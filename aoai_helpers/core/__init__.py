"""The pure core of the data path: events, streams, usage, tokens, model names, prices,
routes and shrinking — no I/O, no database, no network. Imports only the top level
(``exceptions``, ``spec``, ``clouds``, ``clock``, ``config``).
"""
