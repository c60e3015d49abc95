"""What every panel of the page shares: Markdown-safe text, the failure guard, the server log."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable

import streamlit as st
import streamlit.emojis  # noqa: F401 - see below

from app.results import ComputeError, failure_reason, log
from sen.errors import StructureError

# Streamlit compiles its emoji regular expression (about 0.3 s) when the first alert with non-ASCII text
# is shown (Å, ±, σ are in ours): importing it with the app pays that once at start, not inside the first
# visitors' pages, where 20 sessions at once all waited for it (benchmarks/bench_app_ws.py).

#: The errors whose message is already one line for the user (the file's fault, or a failed step).
USER_ERRORS = (StructureError, ComputeError)


def setup_logging() -> None:
    """Send the app's log (logger ``sen_app``: failures with tracebacks, batch stops) to stderr,
    next to Streamlit's own, once per server process."""
    if not any(getattr(h, "sen_app", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.sen_app = True
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def literal(text: str) -> str:
    """Text that Markdown shows as it is: file names, error messages, symbols such as P2_12_12_1.

    Streamlit renders st.error, st.caption, ... as Markdown; escaping keeps ``_``, ``*``,
    ``[...]`` (Streamlit colour directives), ``$`` (LaTeX) and ``<`` literal.
    """
    return "".join("\\" + ch if ch in "\\`*_[]|<>~$#" else ch for ch in str(text))


def show_failure(exc: Exception, step: str, prefix: str = "") -> None:
    """One ``st.error`` line for a failure; unexpected ones are logged with their traceback."""
    if isinstance(exc, USER_ERRORS):
        reason = str(exc)
    else:
        log.error("%s failed", step, exc_info=exc)
        reason = failure_reason(step, exc)
    text = f"{prefix}{reason}" if prefix else reason[:1].upper() + reason[1:]
    st.error(literal(text))


def panel(name: str) -> Callable:
    """Decorator: a failing panel shows one error line instead of a traceback, and returns None.

    Streamlit's own control flow (StopException, RerunException) derives from BaseException and
    passes through.
    """

    def wrap(draw: Callable) -> Callable:
        @functools.wraps(draw)
        def guarded(*args, **kwargs):
            try:
                return draw(*args, **kwargs)
            except Exception as exc:  # never a traceback on the page
                show_failure(exc, f"the {name} panel")
            return None

        return guarded

    return wrap
