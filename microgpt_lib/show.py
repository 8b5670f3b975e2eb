"""Show library source inside a notebook, so the book teaches the code that actually runs."""

from __future__ import annotations

import inspect
import os
from typing import Any

# Bigger sweeps (more sizes, more steps, more repeats) run only when MICROGPT_FULL=1; otherwise
# chapters keep to about 90 seconds on 2 cores and show the recorded results for the rest.
FULL: bool = os.environ.get("MICROGPT_FULL", "") == "1"


def source(obj: Any) -> str:
    """The source text of a function, class, method or module."""
    try:
        return inspect.getsource(obj)
    except (TypeError, OSError) as error:
        raise TypeError(f"cannot show the source of {obj!r}: {error}") from None


def show_source(*objs: Any) -> Any:
    """Display the source of each object as highlighted Python (plain text outside Jupyter)."""
    text = "\n\n".join(source(obj).rstrip() for obj in objs)
    try:
        from IPython.display import Code
    except ImportError:
        return text
    return Code(text, language="python")
