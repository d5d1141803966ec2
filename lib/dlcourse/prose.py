"""The prose check: every number a notebook states in its text is one the notebook computes.

    python -m dlcourse.prose lectures/*.ipynb solutions/*/*.ipynb

lists, per notebook, the numbers in markdown cells that the notebook neither computes nor marks as
a quotation (exit status 1 if there are any). `tests/test_prose.py` runs the same check.

**Which numbers count.** A number in a markdown cell (math and inline code included) counts when it
has a decimal point or an exponent (0.8706, 57.7, 1e-3, $6.9 \times 10^{13}$), has at least three
digits (450, 1,347, LaTeX's 1{,}347), carries a % or a multiplier sign (36 %, 45x), or a scale
(8.3 million, 110M; in math, $2M$ is a product). Not counted: integers written with a leading zero
(deck 003, lecture 05), numbers right after a label word (section, algorithm, figure, table,
equation, lecture, deck, part, chapter), bare years 1900-2099 (write a quantity in that range with a
thousands separator: "2,000 sentences"), dimensions (8x8, 224x224x3), version numbers (2.13.0),
numbers glued to a name (conv2d, word2vec, ResNet-152), link targets and HTML comments. Numbers in
words ("a million", "two grey levels") are not read: write a computed number in digits.

**Where a number may come from.** From the same notebook: a number printed in a code cell's stored
output (cells nbval ignores included: when a re-execution changes what they print, this check fails
until the text follows), or a number literal in a code cell (a setting the notebook runs with, or the
value an assert checks; comments and strings do not count). A stated number matches a computed one that rounds to
it at the stated precision (0.664 matches 0.66402, 1.1 matches 1.0986, 450 matches 449.7); a
percentage also matches a fraction (36 % matches 0.3604). Signs are ignored.

**Quotations.** A sentence that quotes a deck or a paper carries a citation in parentheses that
starts with "deck", "decks" or "paper": "(deck 003)", "(decks 000, 001)", "(paper: Goodfellow et
al., 2015)". Its numbers are exempt; keep computed numbers out of such a sentence. A sentence ends
at ". ", "! " or "? " before a capital letter (markup such as ** or a quote may come first), at a line
break before a list item, heading or table row, or at a blank line; a table row is one sentence.

>>> [n.text for n in stated_numbers("c' = 0.8706 after 1,347 steps in 2015 (section 4.2).")]
['0.8706', '1,347']
>>> [n.text for n in stated_numbers("GoogLeNet says 57.7 % (paper: Goodfellow et al., 2015). We get 36%.")]
['36%']
>>> matches(stated_numbers("about 0.66")[0], [Decimal("0.66402")])
True
"""
from __future__ import annotations

import argparse
import io
import re
import sys
import tokenize
from bisect import bisect_left
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

# a number: thousands groups or plain digits (with dotted parts, so versions can be recognised),
# an optional exponent, then an optional % or multiplier; not inside a word or another number
_NUMBER = re.compile(r"""
    (?<![\w.,])
    (?P<num>\d{1,3}(?:,\d{3})+(?!\d|\.\d)|\d+(?:\.\d+)*)
    (?P<exp>[eE][-+]?\d+)?
    (?:\s*(?:\\times|\\cdot|×|·)\s*10\^\{?(?P<pow>[-+−]?\d+)\}?)?
    (?P<scale>\s(?:thousand|million|billion|trillion)\b|[MB](?![\w]))?
    (?P<suffix>\s?%|[x×](?![\w]))?
    (?![\w])
""", re.VERBOSE)
_SCALES = {"thousand": 3, "million": 6, "M": 6, "billion": 9, "B": 9, "trillion": 12}
_LABEL_BEFORE = re.compile(
    r"(?i)(?:\b(?:sections?|algorithms?|fig(?:ure)?s?\.?|tables?|eqs?\.|equations?|lectures?|decks?|parts?|chapters?"
    r"|cells?)|§)\s*$")
_NAME_BEFORE = re.compile(r"[A-Za-z]-$")
_QUOTATION = re.compile(r"\((?:decks?\s+\d{3}|paper\b)[^()]*\)", re.IGNORECASE)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_LINK_TARGET = re.compile(r"\]\([^)]*\)|https?://\S+")
_UNIT_START = re.compile(r"^\s*(?:[-*+]\s|\d+\.\s|#|\||```)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[(*_\"“'$]*[A-Z])")
_OUTPUT_NUMBER = re.compile(r"(?P<num>\d{1,3}(?:,\d{3})+(?!\d|\.\d)|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
                            r"(?P<scale>\s(?:thousand|million|billion|trillion)\b|[MB](?![\w]))?")


@dataclass(frozen=True)
class Stated:
    """A number stated in prose: as written, its value and the half-unit of its last digit."""

    text: str
    value: Decimal
    half_unit: Decimal
    percent: bool
    sentence: str
    cell: int = -1

    def __str__(self) -> str:
        where = f"cell {self.cell}: " if self.cell >= 0 else ""
        return f"{where}{self.text!r} in \"{_shorten(self.sentence)}\""


def _shorten(text: str, width: int = 110) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 3] + "..."


def sentences(markdown: str) -> list[str]:
    """Split a markdown cell into the units a quotation marker covers (see the module docstring)."""
    text = _LINK_TARGET.sub(" ", _COMMENT.sub(" ", markdown)).replace("{,}", ",")   # LaTeX's 8{,}000
    units: list[list[str]] = []
    for line in text.splitlines():
        if not line.strip():
            units.append([])
        elif _UNIT_START.match(line) or not units:
            units.append([line])
        else:
            units[-1].append(line)
    out = []
    for unit in units:
        joined = " ".join(part.strip() for part in unit)
        out.extend(s for s in _SENTENCE_END.split(joined) if s.strip())
    return out


def _counts(match: re.Match, text: str) -> bool:
    num, exp, suffix = match["num"], match["exp"], match["suffix"]
    before = text[:match.start()]
    if num.count(".") > 1 or _LABEL_BEFORE.search(before) or _NAME_BEFORE.search(before):
        return False
    if (match["scale"] or " ")[0] != " " and before.replace(r"\$", "").count("$") % 2:
        return False                                   # in math, 2M is 2 times a variable M
    if "." in num or exp or suffix or match["pow"] or match["scale"]:
        return True
    digits = num.replace(",", "")
    if len(digits) > 1 and digits.startswith("0"):
        return False                                   # a label such as deck 003 or lecture 05
    if "," not in num and 1900 <= int(digits) <= 2099:
        return False                                   # a year
    return len(digits) >= 3


def _shift(match: re.Match) -> int:
    """The power of ten that "x 10^13", "million" or "M" after a number multiplies it by."""
    groups = match.groupdict()
    power = int(groups["pow"].replace("−", "-")) if groups.get("pow") else 0
    return power + _SCALES.get((groups["scale"] or "").strip(), 0)


def _stated(match: re.Match, sentence: str, cell: int) -> Stated:
    value = Decimal(match["num"].replace(",", "") + (match["exp"] or ""))
    shift = _shift(match)
    return Stated(text=match.group(0).strip(), value=abs(value).scaleb(shift),
                  half_unit=Decimal(5).scaleb(value.as_tuple().exponent - 1 + shift),
                  percent=(match["suffix"] or "").strip() == "%", sentence=sentence, cell=cell)


def stated_numbers(markdown: str, cell: int = -1, quoted: bool = False) -> list[Stated]:
    """The numbers that count in a markdown text; with quoted=True, only those in quotations instead."""
    found = []
    for sentence in sentences(markdown):
        if bool(_QUOTATION.search(sentence)) != quoted:
            continue
        found.extend(_stated(m, sentence, cell) for m in _NUMBER.finditer(sentence) if _counts(m, sentence))
    return found


def _decimal(text: str) -> Decimal | None:
    try:
        value = Decimal(text.replace(",", "").replace("_", ""))
    except InvalidOperation:
        return None
    return abs(value) if value.is_finite() else None


def output_numbers(text: str) -> list[Decimal]:
    """Every number printed in an output text (a grouped 1,347 counts as 1347 and as 1 and 347;
    109.5M as 109.5 and as 109,500,000)."""
    values = []
    for m in _OUTPUT_NUMBER.finditer(text):
        value = _decimal(m["num"])
        values += [value, value.scaleb(_shift(m)) if value is not None else None]
        if "," in m["num"]:
            values += [_decimal(part) for part in m["num"].split(",")]
    return [v for v in values if v is not None]


def literal_numbers(source: str) -> list[Decimal]:
    """The number literals of a code cell's source; comments and strings are not read."""
    lines = [line if not line.lstrip().startswith(("%", "!")) else "" for line in source.splitlines()]
    values = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO("\n".join(lines) + "\n").readline):
            if tok.type == tokenize.NUMBER and not tok.string.lower().endswith("j"):
                text = tok.string.lower()
                value = int(text, 0) if text.startswith(("0x", "0o", "0b")) else text
                values.append(_decimal(str(value)))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return [v for v in values if v is not None]


def computed_numbers(nb) -> list[Decimal]:
    """Sorted numbers a notebook computes: its stored outputs and the literals of its code cells."""
    values: list[Decimal] = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        values += literal_numbers(cell.source)
        for out in cell.get("outputs", []):
            texts = [out.get("text", "")] if out.get("output_type") == "stream" else []
            data = out.get("data", {})
            texts += [data.get(kind, "") for kind in ("text/plain", "text/markdown")]
            for text in texts:
                values += output_numbers(text if isinstance(text, str) else "".join(text))
    return sorted(set(values))


def matches(stated: Stated, computed: list[Decimal]) -> bool:
    """Whether a computed number rounds to the stated one (a percentage may also be a fraction)."""
    targets = [stated.value] + ([stated.value / 100] if stated.percent else [])
    for target, half in zip(targets, [stated.half_unit, stated.half_unit / 100]):
        i = bisect_left(computed, target - half)
        if i < len(computed) and computed[i] <= target + half:
            return True
    return False


def unsupported(nb) -> list[Stated]:
    """The numbers a notebook's prose states that it neither computes nor marks as quoted."""
    computed = computed_numbers(nb)
    flagged = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            flagged += [n for n in stated_numbers(cell.source, cell=index) if not matches(n, computed)]
    return flagged


def main(argv=None) -> int:
    import nbformat

    parser = argparse.ArgumentParser(prog="python -m dlcourse.prose", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args(argv)
    status = 0
    for path in args.paths:
        flagged = unsupported(nbformat.read(Path(path), as_version=4))
        if flagged:
            status = 1
            print(f"{path}: {len(flagged)} number(s) neither computed nor quoted")
            for n in flagged:
                print(f"    {n}")
    return status


if __name__ == "__main__":
    sys.exit(main())
