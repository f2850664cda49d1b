"""Thin command line over the library: ``python -m aoai_helpers COMMAND …``.

The library raises :class:`~aoai_helpers.exceptions.AoaiHelpersError`; this module turns it into
one line on stderr and a non-zero exit status. Secrets (database passwords) are never printed.

Exit status: 0 success (every event stored, or set aside as a dead letter); 1 bad input or
configuration; 2 usage error (argparse); 3 database unreachable or failing; 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from aoai_helpers import __version__
from aoai_helpers.cli import (
    azure,
    bill,
    bu,
    cleanup,
    db,
    function,
    ingest,
    local,
    notebooks,
    rates,
    reconcile,
    report,
    tokens,
)
from aoai_helpers.cli._options import with_db
from aoai_helpers.exceptions import AoaiHelpersError, DatabaseError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree (also used by the test that checks every command is documented).

    Built from the command modules without importing SQLAlchemy, pydantic or pandas: each
    command imports what it needs when it runs (``--help`` stays fast).
    """
    parser = argparse.ArgumentParser(
        prog="python -m aoai_helpers",
        description="Bill Azure OpenAI usage captured by APIM back to business units.",
    )
    parser.add_argument("--version", action="version", version=f"apim-aoai-proxy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ingest.add_ingest_parser(sub)
    db.add_db_parser(sub)
    rates.add_rates_parser(sub)
    bu.add_bu_parser(sub)
    report.add_report_parser(sub)
    bill.add_bill_parser(sub)
    local.add_local_parser(sub, with_db)
    cleanup.add_destroy_parser(azure.add_provision_parser(sub))
    function.add_function_parsers(sub, with_db)
    notebooks.add_notebook_parsers(sub)
    reconcile.add_reconcile_parser(sub)
    tokens.add_tokens_parser(sub)
    return parser


#: Optional packages → the extra that installs them (a missing one is a one-line error).
_EXTRAS = {
    "uvicorn": "local",
    "httpx": "local",
    "openai": "local",
    "azure": "azure",
    "psycopg": "postgres",
    "pyodbc": "mssql",
    "pandas": "notebooks",
    "plotly": "notebooks",
    "openpyxl": "notebooks",
    "papermill": "notebooks",
    "nbconvert": "notebooks",
    "nbformat": "notebooks",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.func(args)
        return status
    except DatabaseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except AoaiHelpersError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        extra = _EXTRAS.get(missing)
        if extra is None:
            raise
        print(
            f"error: {missing} is not installed; this command needs: pip install 'apim-aoai-proxy[{extra}]'",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(
            "interrupted: batches already committed are stored; run again to continue (duplicates are skipped)",
            file=sys.stderr,
        )
        return 130
