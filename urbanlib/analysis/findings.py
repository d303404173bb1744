"""The findings page, written from the verdict table: no sentence about a result is typed by hand.

:func:`question_sentences` gives one sentence per paper question (its headline claim's effect and
95% CI beside the paper's number, in absolute units and, for a relative claim, in %);
:func:`findings_markdown` the sections: what holds here, what is contradicted, what is underpowered,
what was tested without finding the effect, and what cannot be tested here and why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from .verdicts import VERDICTS, counts

__all__ = ["findings_markdown", "question_sentences", "summary_sentence"]

_UNIT = {"R2": "ΔR²", "RMSE": "ΔRMSE", "MAE": "ΔMAE"}


def _f(x, signed=False) -> str:
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def _p(p) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def effect_phrase(r) -> str:
    """Our effect with its CI (and in % of the baseline for a relative claim) and the paper's value, for one row."""
    if r["verdict"] == "not testable here" or not math.isfinite(r["mean_diff"]):
        return str(r["reason"])
    unit = _UNIT.get(r["metric"], "Δ")
    ours = f"ours {_f(r['mean_diff'], True)} {unit} [{_f(r['ci_low'])}, {_f(r['ci_high'])}]"
    if r["paper_units"] == "%" and math.isfinite(r["effect_paper"]):
        ours += (f" = {r['effect_paper']:+.1f}% [{r['ci_low_paper']:.1f}, {r['ci_high_paper']:.1f}] of "
                 f"{r['baseline_source']} ({r['baseline']:.3f})")
    paper = f"the paper's {r['paper_value']}" if r["paper_value"] else "no number in the paper"
    if math.isfinite(r["paper_effect_abs"]) and r["paper_units"] == "%":
        paper += f", i.e. {r['paper_effect_abs']:.3f} {unit}"
    mde = _f(r["mde"]) + (f" = {r['mde_paper']:.1f}%" if r["paper_units"] == "%" and math.isfinite(r["mde_paper"]) else "")
    stats = f"n = {int(r['n_units'])}, {_p(r['p'])}, BH {_p(r['p_bh']).removeprefix('p ')}, MDE {mde}"
    caveat = ""
    if r["verdict"] in ("supported", "contradicted") and not r["p_bh"] < 0.05:
        caveat = "; not significant after the Benjamini-Hochberg correction across claims"
    return f"{ours} against {paper} ({stats}){caveat}"


def summary_sentence(table: pd.DataFrame) -> str:
    """How many claims got each verdict, as one sentence (and how many wait for an incomplete tier)."""
    c = counts(table)
    parts = [f"{int(c[v])} {v}" for v in VERDICTS if c[v]]
    waiting = int(table["reason"].astype(str).str.contains("tier incomplete").sum())
    tail = f" ({waiting} of them because the `full` tier does not yet hold every unit it plans)" if waiting else ""
    return f"Of the {len(table)} claims of the two papers: " + ", ".join(parts) + tail + "."


def question_sentences(table: pd.DataFrame, questions: Mapping[str, str]) -> list[str]:
    """One sentence per paper question with claims in ``table`` (``question`` column), in ``questions`` order.

    The headline is the question's first tested claim in register order (its first claim if none is
    tested); the sentence adds how the question's other claims came out.
    """
    out = []
    for key, text in questions.items():
        rows = table[table["question"] == key]
        if rows.empty:
            continue
        tested = rows[rows["verdict"] != "not testable here"]
        head = (tested if not tested.empty else rows).iloc[0]
        tally = rows["verdict"].value_counts()
        rest = ", ".join(f"{int(tally[v])} {v}" for v in VERDICTS if v in tally)
        sep = ":" if head["verdict"] == "not testable here" else ","
        out.append(f"**{text}** {head['claim_id']} ({head['short']}): **{head['verdict']}**{sep} "
                   f"{effect_phrase(head)}. All {len(rows)} claims on this question: {rest}.")
    return out


def _bullets(rows: pd.DataFrame, with_effect: bool = True) -> str:
    if rows.empty:
        return "None.\n"
    lines = []
    for _, r in rows.iterrows():
        if with_effect:
            tail = effect_phrase(r) + (f"; {r['reason']}" if r["reason"] else "")
        else:
            tail = str(r["reason"])
        lines.append(f"- {r['claim_id']} {r['short']}: {tail}.")
    return "\n".join(lines) + "\n"


def findings_markdown(table: pd.DataFrame, questions: Mapping[str, str] | None = None) -> str:
    """The findings page's text (Markdown) from the verdict table.

    Args:
        table: :func:`urbanlib.analysis.verdicts.verdict_table`'s result (with ``short`` and
            ``question`` columns).
        questions: ``{question key: question text}``; None leaves out the per-question sentences.
    """
    by = {v: table[table["verdict"] == v] for v in VERDICTS}
    parts = [summary_sentence(table) + "\n"]
    if questions:
        parts += ["## The papers' questions\n", "\n\n".join(question_sentences(table, questions)) + "\n"]
    parts += ["## What holds here\n", _bullets(by["supported"]),
              "## What is contradicted here\n", _bullets(by["contradicted"]),
              "## Underpowered: the test could not have seen the paper's effect\n", _bullets(by["underpowered"]),
              "## Tested and not supported: no significant effect in the claimed direction\n", _bullets(by["not supported"]),
              "## What cannot be tested here, and why\n", _bullets(by["not testable here"], with_effect=False)]
    return "\n".join(parts)
