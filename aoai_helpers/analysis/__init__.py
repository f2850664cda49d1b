"""What finance reads: chargeback queries, budgets, statements, text, XLSX/CSV export,
charts and the HTML report. Imports ``core``, ``db``, ``pipeline`` (provisional rows).
"""
