"""What a loader skipped or flagged, counted, so nothing is hidden silently."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


class DataError(ValueError):
    """Bad input that cannot be skipped; the message names the file, row or field."""


@dataclass
class ReportEntry:
    """One kind of problem: what happened, how often, where (a few examples)."""

    kind: str  # short machine-readable key, e.g. "missing_image", "gdp_capped"
    action: str  # "skipped", "flagged" or "kept"
    count: int
    detail: str = ""  # human-readable explanation
    examples: list[str] = field(default_factory=list)  # up to 5 file/row references


@dataclass
class LoadReport:
    """A list of counted problems; printing it tells a user exactly what was dropped and why."""

    source: str = ""
    entries: list[ReportEntry] = field(default_factory=list)

    def add(self, kind: str, action: str, count: int, detail: str = "", examples=()) -> None:
        """Record ``count`` occurrences of a problem; zero counts are ignored."""
        if count <= 0:
            return
        for e in self.entries:  # merge repeated reports of the same kind
            if e.kind == kind and e.action == action:
                e.count += int(count)
                e.examples = (e.examples + [str(x) for x in examples])[:5]
                return
        self.entries.append(ReportEntry(kind, action, int(count), detail, [str(x) for x in examples][:5]))

    def count(self, kind: str) -> int:
        """Total count of one kind of problem (0 if it never happened)."""
        return sum(e.count for e in self.entries if e.kind == kind)

    def to_frame(self) -> pd.DataFrame:
        """One row per problem kind: kind, action, count, detail, examples."""
        rows = [
            {"kind": e.kind, "action": e.action, "count": e.count, "detail": e.detail,
             "examples": "; ".join(e.examples)}
            for e in self.entries
        ]
        return pd.DataFrame(rows, columns=["kind", "action", "count", "detail", "examples"])

    def __iter__(self):
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __str__(self) -> str:
        if not self.entries:
            return f"LoadReport({self.source}): nothing skipped or flagged"
        lines = [f"LoadReport({self.source}):"]
        for e in self.entries:
            ex = f" e.g. {', '.join(e.examples[:3])}" if e.examples else ""
            lines.append(f"  {e.action:8s} {e.count:6d}  {e.kind}: {e.detail}{ex}")
        return "\n".join(lines)

    _repr_pretty_ = lambda self, p, cycle: p.text(str(self))  # noqa: E731  (IPython display)
