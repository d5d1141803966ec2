"""Every number a notebook's prose states is computed by that notebook, or marked as a quotation.

The convention, for everyone who writes lectures/*.ipynb and solutions/*/*.ipynb: a number you
write in a markdown cell (a decimal such as 0.8706, any number of three or more digits such as
1,347, a percentage, a ratio such as 45x, a scale such as 110M), in a worked example or an answer
key too, must be printed by a code cell of the same notebook or appear there as a number literal
(a setting the notebook runs with, or the value an assert checks); it matches a computed number
that rounds to it at the precision you wrote. A number quoted from a deck or a paper is marked by a
parenthesised citation in the same sentence that starts with "deck", "decks" or "paper":
"GoogLeNet calls it a panda with 57.7 % confidence (paper: Goodfellow et al., 2015)." Years, deck,
lecture and section numbers, dimensions (8x8) and names (conv2d) do not count, and neither does a
number spelled out in words, so write a computed number in digits ("3 million", not "a million").
The rules in full are in `dlcourse.prose`; `python -m dlcourse.prose lectures/*.ipynb` lists what fails.
"""
import math

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from dlcourse import prose
from nbgrader_harness import REPO

NOTEBOOKS = sorted((REPO / "lectures").glob("*.ipynb")) + sorted((REPO / "solutions").glob("*/*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[str(p.relative_to(REPO).with_suffix("")) for p in NOTEBOOKS])
def test_numbers_in_prose_are_computed_or_quoted(path):
    flagged = prose.unsupported(nbformat.read(path, as_version=4))
    assert not flagged, (f"{path.relative_to(REPO)}: {len(flagged)} number(s) in the text that the notebook "
                         "neither computes nor marks as a quotation:\n" + "\n".join(f"  {n}" for n in flagged))


def _notebook(markdown: str, source: str = "", printed: str = ""):
    cell = new_code_cell(source, outputs=[new_output("stream", name="stdout", text=printed)] if printed else [])
    return new_notebook(cells=[new_markdown_cell(markdown), cell])


def _flagged(markdown: str, source: str = "", printed: str = "") -> list[str]:
    return [n.text for n in prose.unsupported(_notebook(markdown, source, printed))]


def _lstm_step_from_biases():
    """The worked example of one LSTM step: zero weights, gate biases i, f, g, o = 1, 2, 3, 4, c = 0.5."""
    sigmoid = lambda a: 1 / (1 + math.exp(-a))  # noqa: E731
    c = sigmoid(2) * 0.5 + sigmoid(1) * math.tanh(3)
    return c, sigmoid(4) * math.tanh(c)


def test_a_slip_in_a_worked_example_is_caught():
    c, h = _lstm_step_from_biases()
    printed = f"c' = {c:.4f}, h' = {h:.4f}\n"
    assert printed == "c' = 1.1678, h' = 0.8088\n"
    slip = "Example: $c' = \\sigma(2) \\cdot 0.5 + \\sigma(1) \\tanh(3)$, so c' ≈ 0.8706 and h' ≈ 0.6904."
    source = "c = sigmoid(2) * 0.5 + sigmoid(1) * math.tanh(3)\nprint(f\"c' = {c:.4f}, h' = {h:.4f}\")"
    assert _flagged(slip, source, printed) == ["0.8706", "0.6904"]
    right = slip.replace("0.8706", "1.1678").replace("0.6904", "0.8088")
    assert _flagged(right, source, printed) == []
    assert _flagged(right.replace("1.1678", "1.168"), source, printed) == []      # fewer digits: still a rounding
    assert _flagged(right.replace("1.1678", "1.17"), source, printed) == []
    assert _flagged(right.replace("1.1678", "1.1679"), source, printed) == ["1.1679"]


def test_a_number_an_assert_checks_counts_and_a_comment_or_string_does_not():
    text = "The output is 0.8706."
    assert _flagged(text, "assert abs(c - 0.8706) < 1e-4") == []
    assert _flagged(text, "c = f(x)  # 0.8706") == ["0.8706"]
    assert _flagged(text, "print('0.8706')") == ["0.8706"]          # a string in the source, not an output


def test_a_quotation_marker_exempts_its_own_sentence_only():
    text = ("GoogLeNet calls the image a panda with 57.7 % confidence (paper: Goodfellow et al., 2015). "
            "Our CNN keeps 22.4 % of its accuracy.")
    assert _flagged(text, printed="accuracy 0.224\n") == []
    assert _flagged(text, printed="accuracy 0.300\n") == ["22.4 %"]
    assert _flagged(text.replace(" (paper: Goodfellow et al., 2015)", "")) == ["57.7 %", "22.4 %"]
    assert _flagged("The slide's pre-activation is 0.8 (deck 002).") == []
    assert _flagged("The slide's pre-activation is 0.8 (see the deck).") == ["0.8"]
    assert _flagged("| 13.6 million | Small (deck 001) |\n| 93.6 million | Original |") == ["93.6 million"]
    assert _flagged("We count 543.6 billion. **The slide's 526 billion** is off (deck 003).") == ["543.6 billion"]


@pytest.mark.parametrize("text, counted", [
    ("trained on the 1,347-image split, 450 for testing", ["1,347", "450"]),
    ("45x faster, 36 % lower, 1e-3 apart, 8.3 million pixels, 110M parameters", ["45x", "36 %", "1e-3", "8.3 million", "110M"]),
    ("about $6.9 \\times 10^{13}$ weights and $65{,}536$ filters", ["6.9 \\times 10^{13}", "65,536"]),
    ("decks 000 and 001, lecture 05, section 5.2, Algorithm 2.1 (Kingma and Ba, 2015)", []),
    ("8x8 digits, 224x224x3 images, conv2d and word2vec, ResNet-152, torch 2.13.0", []),
    ("a window of $2M + 1$ entries, 2 filters, 64 pixels", []),
    ("see [the paper](https://arxiv.org/abs/1412.6572) <!-- 0.123 -->", []),
])
def test_which_numbers_count(text, counted):
    assert [n.text for n in prose.stated_numbers(text)] == counted


def test_rounding_and_percentages():
    assert _flagged("the output is 0.664", printed="0.6640\n") == []
    assert _flagged("the output is 0.67", printed="0.6640\n") == ["0.67"]
    assert _flagged("36% lower", printed="0.3604\n") == []
    assert _flagged("36% lower", printed="(36% lower)\n") == []
    assert _flagged("37% lower", printed="0.3604\n") == ["37%"]
    assert _flagged("1,347 training images", printed="x (1347, 64)\n") == []
    assert _flagged("1,797 training images", printed="x (1347, 64)\n") == ["1,797"]
    assert _flagged("about 8.3 million pixels", printed="8,294,400 pixels\n") == []
    assert _flagged("BERT-base has 109.5M parameters", printed="109,482,240 parameters\n") == []


def test_the_command_line_lists_what_fails(tmp_path, capsys):
    c, h = _lstm_step_from_biases()
    path = tmp_path / "example.ipynb"
    nbformat.write(_notebook("So c' ≈ 0.8706 and h' ≈ 0.6904.", printed=f"c' = {c:.4f}, h' = {h:.4f}\n"), path)
    assert prose.main([str(path)]) == 1
    out = capsys.readouterr().out
    assert "2 number(s)" in out and "'0.8706'" in out and "'0.6904'" in out
    nbformat.write(_notebook("So c' ≈ 1.1678 and h' ≈ 0.8088.", printed=f"c' = {c:.4f}, h' = {h:.4f}\n"), path)
    assert prose.main([str(path)]) == 0
