"""Made-up data for the demo, tests and benchmarks: sample events, priced rows,
a month of history, traffic. Imports ``core``, ``db``, ``pipeline``, ``local``.
"""
