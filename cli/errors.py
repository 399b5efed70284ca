"""CLI: the one funnel that turns coded errors into a clean ``[code] message`` line."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import click

from protocol.errors import XRoadError


def _verbose() -> bool:
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    return bool(obj and obj.get("verbose"))


@contextlib.contextmanager
def coded_errors() -> Iterator[None]:
    """Turn coded errors into one clean line: ``[code] message``.

    OS errors (a port in use, an unreadable file) become one line too; the
    traceback shows only with ``--verbose``.
    """
    try:
        yield
    except XRoadError as err:
        if _verbose():
            logging.getLogger("cli").exception("command failed")
        raise click.ClickException(f"[{err.full_code}] {err.message}") from err
    except OSError as err:
        if _verbose():
            logging.getLogger("cli").exception("command failed")
        raise click.ClickException(str(err)) from err
