"""Show library source inside a notebook, so the book teaches the code that actually runs."""

from __future__ import annotations

import inspect
from typing import Any


def source(obj: Any) -> str:
    """The source text of a function, class, method or module (a numba function: its Python)."""
    try:
        return inspect.getsource(getattr(obj, "py_func", obj))
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
