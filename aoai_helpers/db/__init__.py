"""The database: the tables, engines and transactions, rates and business units, the
schema's migrations. Imports ``core`` and the top level.
"""
