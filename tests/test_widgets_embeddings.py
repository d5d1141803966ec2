"""The embedding explorer (dlcourse.widgets.embeddings): its tables follow the controls and agree
with a brute-force cosine search. The vectors are built by hand from three attributes
(gender, royalty, age, with different weights so that no two distances tie), so every answer
is known without training."""
import matplotlib
import pytest
import torch
import torch.nn.functional as F

from dlcourse import embeddings as E
from dlcourse.widgets import embeddings as W

matplotlib.use("Agg")

WORDS = list(E.PEOPLE) + ["palace"]


@pytest.fixture(scope="module")
def space():
    vocab = E.Vocabulary(WORDS, torch.ones(len(WORDS), dtype=torch.long))
    rows = []
    for i, w in enumerate(WORDS):
        gender, royal, young = E.PEOPLE.get(w, ("none", True, False))
        identity = torch.zeros(len(WORDS), dtype=torch.float64)
        identity[i] = 0.2
        attrs = torch.tensor([gender == "male", gender == "female", royal, not royal, young, not young],
                             dtype=torch.float64) * torch.tensor([1.0, 1.0, 0.7, 0.7, 0.4, 0.4], dtype=torch.float64)
        rows.append(torch.cat([attrs, identity]))
    return torch.stack(rows), vocab


def test_neighbour_rows_match_brute_force(space):
    vectors, vocab = space
    rows = W.neighbour_rows(vectors, vocab, "king", k=3)
    sims = F.cosine_similarity(vectors, vectors[vocab["king"]].unsqueeze(0), dim=1)
    expected = [WORDS[i] for i in sims.argsort(descending=True).tolist() if WORDS[i] != "king"][:3]
    assert [w for w, _ in rows] == expected
    assert rows[0][1] == pytest.approx(float(sims[vocab[expected[0]]]), abs=1e-12)
    assert "king" not in [w for w, _ in rows]
    # age weighs least, then royalty; palace (royal, adult, no gender) beats queen (the other gender)
    assert [w for w, _ in rows] == ["prince", "man", "palace"]


def test_analogy_rows(space):
    vectors, vocab = space
    assert W.analogy_rows(vectors, vocab, "man", "king", "woman")[0][0] == "queen"
    assert W.analogy_rows(vectors, vocab, "boy", "girl", "prince")[0][0] == "princess"
    assert W.analogy_rows(vectors, vocab, "king", "prince", "queen")[0][0] == "princess"


def test_rows_html():
    html = W.rows_html("neighbours of king", [("queen", 0.91234), ("man", 0.5)])
    assert "<b>neighbours of king</b>" in html and "<td>queen</td>" in html and "0.912" in html


def test_plot_projection_labels_every_word(space):
    import matplotlib.pyplot as plt

    vectors, _ = space
    ax = W.plot_projection(E.pca_2d(vectors), WORDS, highlight={"king"}, arrows=[("man", "king")])
    try:
        labels = [t.get_text() for t in ax.texts]
        assert sorted(w for w in labels if w) == sorted(WORDS)
    finally:
        plt.close(ax.figure)


def test_explorer_moves_with_its_controls(space):
    vectors, vocab = space
    explorer = W.EmbeddingExplorer(vectors, vocab, words=WORDS, k=3)
    assert "neighbours of king" in explorer.neighbour_table.value
    assert explorer.answers[0][0] == "queen" and "man : king :: woman : queen" in explorer.analogy_table.value

    before = explorer.neighbour_table.value
    explorer.word.value = "girl"
    assert explorer.neighbour_table.value != before and "neighbours of girl" in explorer.neighbour_table.value
    assert [w for w, _ in explorer.neighbours] == [w for w, _ in W.neighbour_rows(vectors, vocab, "girl", 3)]

    explorer.c.value = "boy"  # man : king :: boy : prince
    assert explorer.answers[0][0] == "prince"
    explorer.exclude.value = False  # the query words come back among the answers
    assert explorer.answers == W.analogy_rows(vectors, vocab, "man", "king", "boy", 3, exclude_query=False)
    assert {"king", "boy"} & {w for w, _ in explorer.answers}
    assert "man : king :: boy : " + explorer.answers[0][0] in explorer.analogy_table.value
