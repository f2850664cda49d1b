"""The command line: one module per command group over library functions; no logic of
its own. May import everything.
"""
