"""Table text: numbers and settings as cell text, and the Markdown and LaTeX (booktabs)
table writers with their LaTeX escaping. Strings in, strings out: which rows and columns
a table has is :mod:`disentangle.report.tables`' job."""
from __future__ import annotations

import math
import re
from typing import Sequence

from disentangle.evaluation.metrics import FLAG_MARK

# LaTeX headers of the columns that are not configuration fields (the configuration's own,
# the dataset's included, come from disentangle.config.latex_names)
_LATEX_OTHER = {"data_label": "data", "n": r"$n$", "strength_name": "hyper-parameter", "strength": "strength"}


def decimals_for(values) -> int:
    """Digits after the point for a column: three significant digits of its largest
    magnitude, between 0 and 3 (accuracies 0.873, rates 12.4 nats, distortions 356)."""
    import numpy as np
    vals = np.abs(np.asarray(values, dtype=float))
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return 3
    if np.all(vals == np.round(vals)):
        return 0  # counts (active dimensions, sample sizes) stay integers
    digits = math.floor(math.log10(vals.max())) + 1
    return int(min(3, max(0, 3 - digits)))


def format_number(x, decimals: int) -> str:
    """``x`` with ``decimals`` digits; "" for a missing or infinite value."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    text = f"{x:.{decimals}f}"
    # a tiny negative estimate (e.g. I_q = -3e-6) rounds to "-0.000": print it as zero
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def format_setting(value) -> str:
    """A setting's cell: "" for a missing value, a float as %g, else its text."""
    import pandas as pd
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _numeric_columns(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[bool]:
    # a column of numbers (and blanks) is right-aligned; one with any text left-aligned
    return [any(_looks_numeric(r[i]) for r in rows if r[i]) and all(_looks_numeric(r[i]) for r in rows if r[i])
            for i in range(len(header))]


def _frame(header: Sequence[str], rows: Sequence[Sequence[str]]):
    import pandas as pd
    return pd.DataFrame([list(r) for r in rows], columns=list(header), dtype=object)


def to_markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub pipe table through pandas' own writer (DataFrame.to_markdown, i.e.
    tabulate). The cells are already formatted (mean ± std, "(k of n)", flag marks), so
    tabulate's number parsing is off: it would drop the trailing zeros of a column's
    precision."""
    align = ["right" if n else "left" for n in _numeric_columns(header, rows)]
    return _frame(header, rows).to_markdown(index=False, colalign=align, disable_numparse=True) + "\n"


def _looks_numeric(text: str) -> bool:
    return bool(re.match(r"^-?\d", text))


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}", "±": r"$\pm$", "β": r"$\beta$", "γ": r"$\gamma$"}


def latex_escape(text: str) -> str:
    """LaTeX-escape text the Styler does not escape itself: the caption and the notes
    under a table (Styler.to_latex inserts its caption verbatim)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _latex_cell(text: str) -> str:
    # "0.41 ± 0.03 (2 of 3)" -> "$0.41 \pm 0.03^{2/3}$": the ± lives in math mode; a
    # warning flag becomes a dagger after it. Other text is left for the Styler to escape.
    if text.endswith(FLAG_MARK):
        return _latex_cell(text[:-len(FLAG_MARK)]) + r"$^\dagger$"
    m = re.fullmatch(r"(-?[\d.]+)(?: ± (-?[\d.]+))?(?: \((\d+) of (\d+)\))?", text)
    if m and (m.group(2) or m.group(3)):
        cell = m.group(1) + (f" \\pm {m.group(2)}" if m.group(2) else "")
        # "(2 of 3)" becomes a compact superscript; the caption explains it
        cell += f"^{{{m.group(3)}/{m.group(4)}}}" if m.group(3) else ""
        return f"${cell}$"
    return text


def _latex_header(column: str) -> str:
    # the registry's or the configuration's LaTeX header, else the column name; either
    # goes through the Styler's "latex-math" escaping, so the LaTeX names must keep
    # their markup inside $...$ (they do: r"$\beta$-VAE score", r"$d_z$", "DCI D")
    from disentangle.config import latex_names
    from disentangle.evaluation.metrics import METRICS
    if "." in column:
        metric, key = column.split(".", 1)
        spec = METRICS.get(metric)
        if spec is not None and key in spec.latex:
            return spec.latex[key]
    return {**latex_names(), **_LATEX_OTHER}.get(column, column)


def latex_name(column: str) -> str:
    """A column's LaTeX header: the metric registry's for scores, the configuration
    field's for settings, else the escaped column name."""
    return _escape_latex_math(_latex_header(column))


def _escape_latex_math(text: str) -> str:
    # escape what lies outside $...$, as Styler's escape="latex-math" does
    parts = re.split(r"(\$[^$]*\$)", text)
    return "".join(p if p.startswith("$") and p.endswith("$") and len(p) > 1 else latex_escape(p) for p in parts)


def to_latex(header: Sequence[str], rows: Sequence[Sequence[str]], caption: str,
             label: str = "tab:disentangle", notes: Sequence[str] = ()) -> str:
    """A booktabs table through pandas' own writer (Styler.to_latex; jinja2): caption,
    label, \\small, rules, LaTeX escaping of text cells and headers outside math mode;
    mean ± std and "(k of n)" in math (:func:`_latex_cell`); ``notes`` (the flag
    footnote) as small lines under the tabular."""
    frame = _frame([_latex_header(h) for h in header], [[_latex_cell(c) for c in r] for r in rows])
    spec = "".join("r" if n else "l" for n in _numeric_columns(header, rows))
    styler = (frame.style.hide(axis="index").format(escape="latex-math")
              .format_index(escape="latex-math", axis=1)
              .set_table_styles([{"selector": "small", "props": ":;"}], overwrite=False))
    text = styler.to_latex(caption=latex_escape(caption), label=label, position="t",
                           position_float="centering", hrules=True, column_format=spec)
    if notes:
        below = "\n".join([r"\par\smallskip\footnotesize"] + [_latex_note(n) + r"\\" for n in notes])
        text = text.replace("\\end{tabular}\n", "\\end{tabular}\n" + below + "\n", 1)
    return "% requires \\usepackage{booktabs}\n" + text


def _latex_note(text: str) -> str:
    # a footnote line under the table: its leading flag mark as the cells' dagger
    if text.startswith(FLAG_MARK):
        return r"$^\dagger$" + latex_escape(text[len(FLAG_MARK):])
    return latex_escape(text)
