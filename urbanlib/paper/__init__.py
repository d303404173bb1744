"""The two papers' published numbers, as data.

``tables.csv`` holds every results table of UrbanCLIP (WWW 2024, Tables 1-2) and
UrbanLN (AAAI 2026, Tables 1-8) in tidy form, one printed cell per row, exactly
as printed in the seed texts. Damaged or doubtful cells are kept and flagged,
never repaired (see :data:`FLAGS`). ``claims.csv`` is a register of every
quantitative or directional claim the papers make, tables or prose.

Nothing here reads the paper texts: the CSVs are package data. They were written
by ``tools/transcribe_paper.py`` (tables, a one-off tool outside the package) and by hand (claims).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import pandas as pd

from urbanlib import style as house
from urbanlib.data.report import DataError

__all__ = [
    "CLAIM_COLUMNS",
    "FLAGS",
    "PAPERS",
    "TABLE_COLUMNS",
    "TABLES",
    "load_claims",
    "load_tables",
    "published_r2",
    "plot_table",
    "table",
]

HERE = Path(__file__).parent
TABLES_CSV = HERE / "tables.csv"
CLAIMS_CSV = HERE / "claims.csv"

PAPERS = ("urbanclip", "urbanln")
TABLES = {"urbanclip": ("1", "2"), "urbanln": ("1", "2", "3", "4", "5", "6", "7", "8")}
TABLE_COLUMNS = [
    "paper",
    "table",
    "city",
    "model",
    "setting",
    "task",
    "metric",
    "value",
    "raw",
    "flag",
    "note",
]
CLAIM_COLUMNS = [
    "claim_id",
    "paper",
    "section",
    "claim",
    "quantity_a",
    "quantity_b",
    "metric",
    "direction",
    "paper_value",
    "testable_here_note",
]
FLAGS = {
    "": "clean: value as printed",
    "ocr_damaged": "the extracted text is visibly damaged (lost digit, wrong separator); value kept as printed",
    "prose_only": "the table cell is lost; the number comes from the paper's prose",
    "conflict": "two tables of the same paper print different values for this cell; both transcribed",
    "missing": "printed as a dash (not available); the value is left empty",
}
TABLE_TITLES = {
    ("urbanclip", "1"): "UrbanCLIP Table 1: dataset statistics",
    (
        "urbanclip",
        "2",
    ): "UrbanCLIP Table 2: urban indicator prediction (Beijing, Shanghai; other cities prose only)",
    ("urbanln", "1"): "UrbanLN Table 1: downstream tasks on BJ",
    ("urbanln", "2"): "UrbanLN Table 2: SH (R2)",
    ("urbanln", "3"): "UrbanLN Table 3: NY (R2)",
    ("urbanln", "4"): "UrbanLN Table 4: loss weight mu, population R2",
    ("urbanln", "5"): "UrbanLN Table 5: dataset statistics",
    ("urbanln", "6"): "UrbanLN Table 6: SH, all metrics",
    ("urbanln", "7"): "UrbanLN Table 7: SZ, all metrics",
    ("urbanln", "8"): "UrbanLN Table 8: NY, all metrics",
}


def _read(path: Path, columns: list[str]) -> pd.DataFrame:
    """Read a CSV of strings, checking the header and every row's field count."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.ParserError as err:  # a row with too many fields
        raise DataError(f"{path.name}: malformed CSV ({err})") from err
    if list(df.columns) != columns:
        raise DataError(f"{path.name}: header {list(df.columns)} != expected {columns}")
    return df


def _validate_tables(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Check vocabularies and numbers row by row; return df with a float ``value`` column."""
    values = []
    for i, row in enumerate(df.itertuples(index=False), start=2):  # line 1 is the header
        where = f"{path.name} line {i}"
        if row.paper not in TABLES:
            raise DataError(f"{where}: unknown paper {row.paper!r}")
        if row.table not in TABLES[row.paper]:
            raise DataError(f"{where}: unknown table {row.table!r} for {row.paper}")
        if row.flag not in FLAGS:
            raise DataError(f"{where}: unknown flag {row.flag!r} (allowed: {sorted(FLAGS)})")
        if row.metric == "" or row.task == "" or row.city == "":
            raise DataError(f"{where}: empty city, task or metric")
        if row.raw == "":
            raise DataError(f"{where}: empty raw cell text")
        if row.value == "":
            value = math.nan
            if row.flag not in {"missing", "ocr_damaged"}:
                raise DataError(
                    f"{where}: empty value needs flag 'missing' or 'ocr_damaged', got {row.flag!r}"
                )
        else:
            try:
                value = float(row.value)
            except ValueError:
                raise DataError(f"{where}: value {row.value!r} is not a number") from None
        values.append(value)
    out = df.copy()
    out["value"] = values
    return out


def _validate_claims(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Check that claims have ids, known papers and text."""
    seen = set()
    for i, row in enumerate(df.itertuples(index=False), start=2):
        where = f"{path.name} line {i}"
        if not row.claim_id or row.claim_id in seen:
            raise DataError(f"{where}: missing or duplicate claim_id {row.claim_id!r}")
        seen.add(row.claim_id)
        if row.paper not in PAPERS:
            raise DataError(f"{where}: unknown paper {row.paper!r}")
        for field in ("section", "claim", "quantity_a", "metric", "direction"):
            if not getattr(row, field):
                raise DataError(f"{where}: empty field {field!r}")
    return df


@lru_cache(maxsize=1)
def _packaged_tables() -> pd.DataFrame:
    return _validate_tables(_read(TABLES_CSV, TABLE_COLUMNS), TABLES_CSV)


def load_tables(path: str | Path | None = None) -> pd.DataFrame:
    """All transcribed table cells of both papers, one row per printed cell.

    Args:
        path: CSV to read; defaults to the packaged ``tables.csv``.

    Returns:
        Tidy DataFrame with columns :data:`TABLE_COLUMNS`; ``value`` is float
        (NaN for dashes), ``raw`` is the cell text as printed. Improvement rows
        are in percent, as printed.

    Raises:
        DataError: naming the file and line of a malformed row.
    """
    if path is None:
        return _packaged_tables().copy()
    return _validate_tables(_read(Path(path), TABLE_COLUMNS), Path(path))


def load_claims(path: str | Path | None = None) -> pd.DataFrame:
    """The claims register: one row per quantitative or directional claim.

    Args:
        path: CSV to read; defaults to the packaged ``claims.csv``.

    Returns:
        DataFrame with columns :data:`CLAIM_COLUMNS` (all strings).

    Raises:
        DataError: naming the file and line of a malformed row.
    """
    path = Path(path) if path else CLAIMS_CSV
    return _validate_claims(_read(path, CLAIM_COLUMNS), path)


def table(paper: str, table_id: str | int, show_flags: bool = True) -> pd.DataFrame:
    """One table in the paper's wide layout: rows models (or cities), columns task x metric.

    Args:
        paper: "urbanclip" or "urbanln".
        table_id: the table number as printed, e.g. 2 or "2".
        show_flags: if True, cells carry their printed text plus a flag marker
            (``"0.21 [ocr_damaged]"``), so the flags stay visible; if False,
            cells are floats.

    Returns:
        Wide DataFrame. Row index: (city, model[, setting]) levels that vary;
        columns: (task, metric).
    """
    table_id = str(table_id)
    if paper not in TABLES or table_id not in TABLES[paper]:
        known = {p: list(t) for p, t in TABLES.items()}
        raise KeyError(f"no table {paper!r} {table_id!r}; known: {known}")
    df = load_tables()
    df = df[(df.paper == paper) & (df.table == table_id)].copy()
    if show_flags:
        raw = df.raw.str.replace(r"</?u>", "", regex=True)  # the paper's underline markup: a note says so
        df["cell"] = [f"{r} [{f}]" if f else r for r, f in zip(raw, df.flag, strict=True)]
    else:
        df["cell"] = df.value
    index = [c for c in ("city", "model", "setting") if df[c].nunique() > 1 or (df[c] != "").all()]
    order = {k: list(dict.fromkeys(df[k])) for k in [*index, "task", "metric"]}
    wide = df.pivot_table(index=index, columns=["task", "metric"], values="cell", aggfunc="first", sort=False)
    wide = wide.reindex(columns=[c for c in _product(order["task"], order["metric"]) if c in wide.columns])
    wide.columns.names = ["task", "metric"]
    return wide.fillna("") if show_flags else wide


def _product(a: list[str], b: list[str]) -> list[tuple[str, str]]:
    return [(x, y) for x in a for y in b]


def plot_table(paper: str, table_id: str | int, metric: str = "R2"):
    """Grouped bar chart of one metric of a results table, flagged cells hatched.

    Args:
        paper: "urbanclip" or "urbanln".
        table_id: table number.
        metric: which metric's columns to draw ("R2", "RMSE", "MAE").

    Returns:
        matplotlib Figure (bars: model per task, per city if the table has several).
    """
    import matplotlib.pyplot as plt

    df = load_tables()
    df = df[(df.paper == paper) & (df.table == str(table_id)) & (df.metric == metric)]
    df = df[~df.model.str.contains("mprovement") & (df.model != "")]
    if df.empty:
        raise ValueError(f"{paper} table {table_id} has no model rows with metric {metric!r}")
    df = df.assign(group=df.city + " " + df.task + df.setting.map(lambda s: f" {s}" if s else ""))
    groups = list(dict.fromkeys(df.group))
    models = list(dict.fromkeys(df.model))
    fig, ax = plt.subplots(figsize=house.figsize(1, 1, panel_height=4.2))
    width = 0.8 / len(models)
    for j, model in enumerate(models):
        sub = df[df.model == model].set_index("group")
        for g, group in enumerate(groups):
            if group not in sub.index:
                continue
            row = sub.loc[group]
            ax.bar(
                g + j * width,
                row.value,
                width,
                color=f"C{j % 10}",
                hatch="//" if row.flag else None,
                edgecolor="black" if row.flag else None,
                label=model if g == 0 else None,
            )
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], groups, rotation=30, ha="right")
    ax.set_ylabel(metric)
    ax.set_title(
        TABLE_TITLES.get((paper, str(table_id)), f"{paper} table {table_id}") + " (hatched: flagged)"
    )
    # the legend sits below the axes, so it never covers a bar
    ax.legend(fontsize=8, ncol=min(4, len(models)), loc="upper center", bbox_to_anchor=(0.5, -0.32), frameon=False)
    fig.tight_layout()
    return fig


CITY_CODES = {"Beijing": "BJ", "Shanghai": "SH", "Shenzhen": "SZ", "New York": "NY"}  # UrbanLN's table names
IMAGE_TABLES = {"urbanclip": ("2",), "urbanln": ("1", "6", "7", "8", "2", "3")}  # tables of models on images


def published_r2(city: str, indicators: list[str] | None = None) -> pd.DataFrame:
    """The papers' R² of their image models on one city, as printed (flags kept).

    Args:
        city: a city name as the UrbanCLIP release spells it (``"Beijing"``) or UrbanLN's code (``"BJ"``).
        indicators: keep these tasks (default: every task the tables report for the city).

    Returns:
        Tidy rows ``source`` (e.g. ``"UrbanCLIP Table 2"``), ``model``, ``indicator``, ``R2``, ``flag``;
        empty when neither paper reports the city. Improvement rows are left out; a cell that two
        UrbanLN tables print is taken from the first table in :data:`IMAGE_TABLES`.
    """
    names = {city, CITY_CODES.get(city, city), *[k for k, v in CITY_CODES.items() if v == city]}
    df = load_tables()
    df = df[(df.metric == "R2") & df.city.isin(names) & (df.model != "") & ~df.model.str.contains("mprovement")]
    df = df[pd.Series([t in IMAGE_TABLES.get(p, ()) for p, t in zip(df.paper, df.table, strict=True)],
                      index=df.index, dtype=bool)]
    if indicators is not None:
        df = df[df.task.isin(list(indicators))]
    order = {(p, t): i for i, (p, t) in enumerate((p, t) for p, ts in IMAGE_TABLES.items() for t in ts)}
    df = df.assign(_o=[order[(p, t)] for p, t in zip(df.paper, df.table, strict=True)]).sort_values("_o", kind="stable")
    df = df.drop_duplicates(["paper", "model", "task"])
    source = [f"{'UrbanCLIP' if p == 'urbanclip' else 'UrbanLN'} Table {t}" for p, t in zip(df.paper, df.table,
                                                                                           strict=True)]
    return pd.DataFrame({"source": source, "model": df.model.to_numpy(), "indicator": df.task.to_numpy(),
                         "R2": df.value.to_numpy(), "flag": df.flag.to_numpy()}).reset_index(drop=True)
