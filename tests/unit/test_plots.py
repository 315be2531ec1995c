"""plots.escape: user text reaches a plotly figure inert."""

from __future__ import annotations

from clusterucb_app import plots


def test_escape_makes_markup_inert():
    assert plots.escape("<b>evil</b> & co") == "&lt;b&gt;evil&lt;/b&gt; &amp; co"
    assert plots.escape(3) == "3"
