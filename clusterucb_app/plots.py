"""User text made safe for plotly figures (pure functions; no streamlit).

Plotly renders a subset of HTML in hover labels, legends and tick labels, so every string that
comes from user data goes through `escape` before it reaches a figure. The figures themselves
live in ``plots_rounds.py`` (the UCB rounds) and ``plots_teach.py`` (playground and race).
"""

from __future__ import annotations

import html
from typing import Any


def escape(text: Any) -> str:
    """User text made inert for plotly: ``&``, ``<`` and ``>`` become entities."""
    return html.escape(str(text), quote=False)
