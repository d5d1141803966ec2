"""Explore trained word vectors (lecture 09): pick a word and see its nearest neighbours, or
pick an analogy a : b :: c : ? and see the answer, both on a 2-D projection of the vectors.

    from dlcourse.widgets.embeddings import EmbeddingExplorer
    EmbeddingExplorer(vectors, vocab, words=["man", "woman", "king", ...])

The pure parts are tested without a browser: `neighbour_rows` and `analogy_rows` return
what the tables show, `plot_projection` draws the picture. The arithmetic is
`dlcourse.embeddings.nearest_neighbours` and `dlcourse.embeddings.analogy`.
"""
import torch

from dlcourse import embeddings as E


def neighbour_rows(vectors: torch.Tensor, vocab: E.Vocabulary, word: str, k: int = 5) -> list[tuple[str, float]]:
    """The k words closest to `word` by cosine similarity (the word itself left out)."""
    i = vocab[word]
    return [(vocab.itos[j], c) for j, c in E.nearest_neighbours(vectors, vectors[i], k, exclude=[i])]


def analogy_rows(vectors: torch.Tensor, vocab: E.Vocabulary, a: str, b: str, c: str, k: int = 5,
                 exclude_query: bool = True) -> list[tuple[str, float]]:
    """The k best answers to a : b :: c : ? (closest to v_b - v_a + v_c)."""
    found = E.analogy(vectors, vocab[a], vocab[b], vocab[c], k=k, exclude_query=exclude_query)
    return [(vocab.itos[j], s) for j, s in found]


def rows_html(title: str, rows) -> str:
    """A small HTML table: word and cosine, best first."""
    body = "".join(f"<tr><td>{w}</td><td style='text-align:right'>{s:.3f}</td></tr>" for w, s in rows)
    return f"<b>{title}</b><table><tr><th>word</th><th>cosine</th></tr>{body}</table>"


def plot_projection(coords: torch.Tensor, words, highlight=(), arrows=(), ax=None):
    """Scatter the 2-D points `coords` (W, 2) labelled by `words`; words in `highlight` are
    drawn in orange; each (from, to) in `arrows` draws an arrow between two words. Returns ax."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    index = {w: i for i, w in enumerate(words)}
    xy = coords.detach().cpu().numpy()
    colors = ["tab:orange" if w in highlight else "tab:blue" for w in words]
    ax.scatter(xy[:, 0], xy[:, 1], c=colors, s=14)
    for w, (x, y) in zip(words, xy):
        ax.annotate(w, (x, y), fontsize=7, xytext=(2, 2), textcoords="offset points",
                    fontweight="bold" if w in highlight else "normal")
    for start, end in arrows:
        if start in index and end in index:
            (x0, y0), (x1, y1) = xy[index[start]], xy[index[end]]
            ax.annotate("", (x1, y1), (x0, y0), arrowprops={"arrowstyle": "->", "color": "tab:red", "lw": 1})
    ax.set_xticks([]), ax.set_yticks([])
    return ax


class EmbeddingExplorer:
    """Dropdowns for a word (neighbours) and for an analogy a : b :: c : ?, a checkbox for
    excluding the query words, two tables and the projection. `neighbours` and `answers`
    hold what is shown; `widget` is the box to display."""

    def __init__(self, vectors: torch.Tensor, vocab: E.Vocabulary, words=None, k: int = 5,
                 word: str = "king", analogy_words=("man", "king", "woman")):
        import ipywidgets as widgets

        self.vectors, self.vocab, self.k = vectors.detach().cpu(), vocab, k
        self.words = list(words) if words is not None else list(vocab.itos)
        sub = torch.tensor([vocab[w] for w in self.words])
        self.coords = E.pca_2d(self.vectors[sub])
        options = sorted(vocab.itos)
        self.word = widgets.Dropdown(options=options, value=word, description="word")
        a, b, c = analogy_words
        self.a = widgets.Dropdown(options=options, value=a, description="a")
        self.b = widgets.Dropdown(options=options, value=b, description="b")
        self.c = widgets.Dropdown(options=options, value=c, description="c")
        self.exclude = widgets.Checkbox(value=True, description="exclude a, b, c from the answers")
        self.neighbour_table, self.analogy_table = widgets.HTML(), widgets.HTML()
        self.picture = widgets.Output()
        for control in (self.word, self.a, self.b, self.c, self.exclude):
            control.observe(lambda _change: self.update(), names="value")
        self.widget = widgets.VBox([
            widgets.HBox([self.word, self.exclude]), widgets.HBox([self.a, self.b, self.c]),
            widgets.HBox([self.neighbour_table, self.analogy_table]), self.picture])
        self.update()

    def update(self) -> None:
        import matplotlib.pyplot as plt
        from IPython.display import display

        self.neighbours = neighbour_rows(self.vectors, self.vocab, self.word.value, self.k)
        self.answers = analogy_rows(self.vectors, self.vocab, self.a.value, self.b.value, self.c.value,
                                    self.k, exclude_query=self.exclude.value)
        self.neighbour_table.value = rows_html(f"neighbours of {self.word.value}", self.neighbours)
        self.analogy_table.value = rows_html(
            f"{self.a.value} : {self.b.value} :: {self.c.value} : {self.answers[0][0]}", self.answers)
        answer = self.answers[0][0]
        highlight = {self.word.value, *(w for w, _ in self.neighbours), self.a.value, self.b.value, self.c.value, answer}
        with self.picture:
            self.picture.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(6, 4))
            plot_projection(self.coords, self.words, highlight,
                            arrows=[(self.a.value, self.b.value), (self.c.value, answer)], ax=ax)
            ax.set_title("2-D projection (PCA); arrows a -> b and c -> answer", fontsize=9)
            display(fig)
            plt.close(fig)

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
