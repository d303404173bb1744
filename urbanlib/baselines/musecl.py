"""MuseCL (Yong and Zhou, IJCAI'24): not runnable here.

MuseCL builds its contrastive pairs from human-mobility flows between regions (plus POIs and
imagery). No dataset urbanlib reads or generates has mobility flows, so the benchmark shows an
explicit "n/a" cell rather than a stand-in (UrbanLN likewise reports it on NY only).
"""

from __future__ import annotations

from .base import BaselineInputs, NotAvailable

NAME = "MuseCL"
REASON = "n/a: needs human-mobility flows, which no dataset here has"


def fit(inputs: BaselineInputs, config=None) -> NotAvailable:
    """Always :class:`NotAvailable`: MuseCL needs mobility flows."""
    return NotAvailable(NAME, REASON)
