"""One-off maintenance tool that wrote ``tables.csv`` from the seed paper texts.

It is not imported by :mod:`urbanlib.paper`; nothing at run time reads the paper
texts. It exists so that the transcription can be audited and redone::

    python tools/transcribe_paper.py ../shared/papers urbanlib/paper/tables.csv

Each table block is located by its first row label and the printed cells are
split on tabs exactly as extracted from the PDF. Cells are never repaired: a
damaged cell keeps the value as printed (where it parses) and gets a flag.
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

COLUMNS = ["paper", "table", "city", "model", "setting", "task", "metric", "value", "raw", "flag", "note"]
METRICS3 = ["R2", "RMSE", "MAE"]
UC_TASKS = ["carbon", "population", "gdp"]


def _cells(line: str) -> list[str]:
    """Split a tab-separated table line into stripped cells, dropping trailing empties."""
    cells = [c.strip() for c in line.rstrip("\n").split("\t")]
    while cells and cells[-1] == "":
        cells.pop()
    return cells


def _block(lines: list[str], first_label: str, n_rows: int, after: int = 0) -> tuple[int, list[list[str]]]:
    """Return (index, rows) of the first ``n_rows`` lines starting at a line whose first cell is ``first_label``."""
    for i in range(after, len(lines)):
        if _cells(lines[i])[:1] == [first_label]:
            return i, [_cells(x) for x in lines[i : i + n_rows]]
    raise ValueError(f"table block starting with {first_label!r} not found")


def _parse(raw: str, table_precision: int | None) -> tuple[str, str, str]:
    """Turn a printed cell into (value, flag, note) without repairing it."""
    text = raw
    note = ""
    if "<u>" in text:
        text = re.sub(r"</?u>", "", text)
        note = "underlined (second best) in the paper; markup removed"
    if text in {"_", "-", "–", ""}:
        return "", "missing", "printed as a dash: not available"
    percent = text.endswith("%")
    core = text.rstrip("%")
    if re.fullmatch(r"\d{1,3}(,\d{3})+", core):
        return core.replace(",", ""), "", "thousands separator"
    try:
        float(core)
    except ValueError:
        return "", "ocr_damaged", "unparseable"
    if core.startswith("."):
        return core, "ocr_damaged", "leading digit lost in extraction; value kept as printed"
    if table_precision and not percent and "." in core and len(core.split(".")[1]) != table_precision:
        return (
            core,
            "ocr_damaged",
            f"printed with {len(core.split('.')[1])} decimals, table uses {table_precision}",
        )
    return core, "", note


def _row(paper, table, city, model, setting, task, metric, raw, precision=3, flag="", note=""):
    value, auto_flag, auto_note = _parse(raw, precision)
    return {
        "paper": paper,
        "table": table,
        "city": city,
        "model": model,
        "setting": setting,
        "task": task,
        "metric": metric,
        "value": value,
        "raw": raw,
        "flag": flag or auto_flag,
        "note": "; ".join(x for x in (auto_note, note) if x),
    }


def _model_table(rows, paper, table, city, columns, improvement_suffix=True, precision=3):
    """Rows (model, cells...) of a results table -> tidy records; ``columns`` = [(task, metric), ...]."""
    out = []
    last_model = ""
    for cells in rows:
        model, values = cells[0], cells[1:]
        if len(values) != len(columns):
            raise ValueError(
                f"{paper} table {table}: row {model!r} has {len(values)} cells, expected {len(columns)}"
            )
        if model == "Improvement":
            model = f"{last_model} improvement (%)" if improvement_suffix else "Improvement (%)"
        else:
            last_model = model
        for (task, metric), raw in zip(columns, values, strict=True):
            out.append(_row(paper, table, city, model, "", task, metric, raw, precision))
    return out


def transcribe(papers: Path) -> list[dict]:
    """Transcribe every results table of both papers into tidy records."""
    uc = (papers / "urbanclip-www2024.txt").read_text(encoding="utf-8").splitlines()
    ln = (papers / "urbanln-aaai2026.txt").read_text(encoding="utf-8").splitlines()
    out: list[dict] = []

    # UrbanCLIP Table 1: dataset statistics (coverage box and counts).
    _, rows = _block(uc, "Beijing", 4)
    for cells in rows:
        city, bl, tr, n_img, n_txt = cells
        for corner, text in (("bottom_left", bl), ("top_right", tr)):
            m = re.fullmatch(r"([\d.]+)°N([.,])\s*([\d.]+)°E", text)
            sep_note = "separator printed as '.' instead of ','" if m.group(2) == "." else ""
            out.append(
                _row(
                    "urbanclip", "1", city, "", "", "dataset", f"{corner}_lat_N", m.group(1), 2, note=sep_note
                )
            )
            out.append(
                _row(
                    "urbanclip", "1", city, "", "", "dataset", f"{corner}_lon_E", m.group(3), 2, note=sep_note
                )
            )
        for metric, raw in (("n_satellite_images", n_img), ("n_location_descriptions", n_txt)):
            rec = _row("urbanclip", "1", city, "", "", "dataset", metric, raw, None)
            if re.fullmatch(r"\d+\.\d{3}", raw):
                rec["flag"] = "ocr_damaged"
                rec["note"] = (
                    "a count printed with '.' (Shenzhen uses ','): likely a thousands separator; value kept as printed"
                )
            out.append(rec)

    # UrbanCLIP Table 2: only the Beijing and Shanghai halves survive extraction.
    _, rows = _block(uc, "Autoencoder", 8)
    cols = [(t, m) for _ in ("Beijing", "Shanghai") for t in UC_TASKS for m in METRICS3]
    for cells in rows:
        model = "Improvement (%)" if cells[0] == "Improvement" else cells[0]
        if len(cells) != 19:
            raise ValueError(f"urbanclip table 2: row {model!r} has {len(cells) - 1} cells, expected 18")
        for k, raw in enumerate(cells[1:]):
            city = "Beijing" if k < 9 else "Shanghai"
            task, metric = cols[k]
            out.append(_row("urbanclip", "2", city, model, "", task, metric, raw, None if "%" in raw else 3))
    # ... Guangzhou and Shenzhen exist only as prose numbers (Sec. 4.2).
    prose = [
        ("Beijing", "mean_over_indicators", "R2", "7.06%"),
        ("Shanghai", "mean_over_indicators", "R2", "4.75%"),
        ("Guangzhou", "mean_over_indicators", "R2", "7.25%"),
        ("Shenzhen", "mean_over_indicators", "R2", "5.49%"),
        ("all", "mean_over_indicators", "RMSE", "7.02%"),
        ("all", "mean_over_indicators", "MAE", "4.27%"),
        ("all", "carbon", "R2", "12.07%"),
        ("all", "population", "R2", "5.83%"),
        ("all", "gdp", "R2", "0.52%"),
    ]
    for city, task, metric, raw in prose:
        out.append(
            _row(
                "urbanclip",
                "2",
                city,
                "Improvement (%)",
                "",
                task,
                metric,
                raw,
                None,
                flag="prose_only",
                note="UrbanCLIP over PG-SimCLR, quoted in Sec. 4.2 prose; table half lost",
            )
        )

    # UrbanLN Table 1 (BJ), 6 (SH), 7 (SZ), 8 (NY): full three-metric tables.
    five = [(t, m) for t in ("population", "gdp", "night_light", "comments", "carbon") for m in METRICS3]
    four = [(t, m) for t in ("population", "gdp", "night_light", "carbon") for m in METRICS3]
    ny3 = [(t, m) for t in ("population", "crime", "poi_count") for m in METRICS3]
    i, rows = _block(ln, "ResNet-18", 10)
    out += _model_table(rows, "urbanln", "1", "BJ", five)
    j, rows = _block(ln, "ResNet-18", 10, after=i + 1)
    out += _model_table(rows, "urbanln", "2", "SH", [(t, "R2") for t, _ in four[::3]])
    k, rows = _block(ln, "ResNet-18", 11, after=j + 1)
    out += _model_table(rows, "urbanln", "3", "NY", [(t, "R2") for t, _ in ny3[::3]])
    a, rows = _block(ln, "ResNet-18", 10, after=k + 1)
    out += _model_table(rows, "urbanln", "6", "SH", four)
    b, rows = _block(ln, "ResNet-18", 10, after=a + 1)
    out += _model_table(rows, "urbanln", "7", "SZ", five)
    _, rows = _block(ln, "ResNet-18", 11, after=b + 1)
    out += _model_table(rows, "urbanln", "8", "NY", ny3)

    # UrbanLN Table 4: mu sensitivity, population R2; imagery labels span 4 rows each.
    start = next(n for n, line in enumerate(ln) if _cells(line)[1:2] == ["0.3"])
    for n, line in enumerate(ln[start : start + 8]):
        cells = _cells(line)
        imagery = "UrbanLN+SV" if n < 4 else "UrbanLN+SI"
        note = "imagery label printed 'Saternite'" if cells[0] == "Saternite" else ""
        for city, raw in zip(("BJ", "SH", "SZ", "NY"), cells[2:], strict=True):
            out.append(
                _row("urbanln", "4", city, imagery, f"mu={cells[1]}", "population", "R2", raw, note=note)
            )

    # UrbanLN Table 5: dataset statistics (counts of regions, images, valid test regions).
    _, rows = _block(ln, "BJ", 4)
    stat_cols = [
        "n_regions",
        "n_street_view",
        "n_satellite",
        "population",
        "gdp",
        "night_light",
        "comments",
        "carbon",
        "crime",
        "poi_count",
    ]
    for cells in rows:
        for metric, raw in zip(stat_cols, cells[1:], strict=True):
            task = "dataset" if metric.startswith("n_") else metric
            name = metric if metric.startswith("n_") else "n_valid_test_regions"
            out.append(_row("urbanln", "5", cells[0], "", "", task, name, raw, None))

    _flag_conflicts(out)
    return out


def _flag_conflicts(records: list[dict]) -> None:
    """Flag cells that two UrbanLN tables print differently (Table 2 vs 6, Table 3 vs 8, R2 only)."""
    for short, full in (("2", "6"), ("3", "8")):
        index = {
            (r["city"], r["model"], r["task"]): r
            for r in records
            if r["paper"] == "urbanln" and r["table"] == full and r["metric"] == "R2"
        }
        for r in records:
            if r["paper"] != "urbanln" or r["table"] != short:
                continue
            other = index.get((r["city"], r["model"], r["task"]))
            if other is not None and other["raw"] != r["raw"]:
                for rec, peer, peer_table in ((r, other, full), (other, r, short)):
                    rec["flag"] = "conflict"
                    extra = f"Table {peer_table} prints {peer['raw']}"
                    rec["note"] = "; ".join(x for x in (rec["note"], extra) if x)


def main(argv: list[str]) -> None:
    """Write the tidy CSV: ``python tools/transcribe_paper.py PAPERS_DIR OUT_CSV``."""
    records = transcribe(Path(argv[0]))
    with open(argv[1], "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(records)
    print(f"wrote {len(records)} rows to {argv[1]}")


if __name__ == "__main__":
    main(sys.argv[1:])
