from __future__ import annotations

import io

from crawler.outcomes import Outcome
from crawler.progress import ProgressLine
from crawler.report import ItemReport


def test_progress_line_counts_and_keeps_logs_above_it() -> None:
    out = io.StringIO()
    line = ProgressLine(out)
    for outcome in (Outcome.IMPORTED, Outcome.IMPORTED, Outcome.INVALID):
        line.observe(ItemReport(repository="r", tag="1.0.0", outcome=outcome))
    line.draw()
    assert "imported 2" in out.getvalue() and "invalid 1" in out.getvalue()
    assert "items/s" in out.getvalue()
    line.write("a warning\n")
    assert out.getvalue().endswith("\r\x1b[2Ka warning\n")  # the status line was cleared first
    line.clear()
    assert out.getvalue().endswith("a warning\n")  # nothing shown, nothing to clear
