"""Type a sentence, see what a text CNN's filters do with it (lecture 05).

    from dlcourse.widgets.text import filter_explorer
    filter_explorer(model, vocab, "the movie was not very good")

`sentence_activations` computes what is shown (no browser needed): the padded words, each
window size's filter outputs o over the positions, the pooled vector c and the predicted
class probabilities. `plot_activations` draws them; `filter_explorer` wraps both in ipywidgets.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dlcourse.text import TextCNN, Vocabulary, tokenize


@dataclass
class SentenceActivations:
    words: list[str]                # the sentence as the model sees it (unknown words -> <unk>)
    maps: dict[int, torch.Tensor]   # window size -> (filters, positions) outputs o
    pooled: torch.Tensor            # c: (filters * len(windows),), max over time
    probabilities: torch.Tensor     # softmax of the logits: (n_classes,)


def sentence_activations(model: TextCNN, vocab: Vocabulary, sentence: str) -> SentenceActivations:
    """Run one sentence through `model` (eval mode, no graph) and keep every intermediate."""
    tokens = tokenize(sentence)
    if not tokens:
        raise ValueError("type at least one word")
    ids = vocab.encode_batch([tokens], min_len=max(model.windows))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            maps = model.feature_maps(ids)
            logits = model.out(torch.cat([o.amax(dim=-1) for o in maps], dim=1))
    finally:
        model.train(was_training)
    return SentenceActivations(vocab.decode(ids[0]), {n: o[0] for n, o in zip(model.windows, maps)},
                               torch.cat([o[0].amax(dim=-1) for o in maps]), logits[0].softmax(-1))


def strongest(act: SentenceActivations) -> tuple[int, int, str, float]:
    """The largest pooled value: (window size, filter, the n-gram it fired on, its value)."""
    best = None
    for n, o in act.maps.items():
        value, flat = o.max(), int(o.argmax())
        if best is None or value > best[3]:
            filt, pos = divmod(flat, o.shape[1])
            best = (n, filt, " ".join(act.words[pos : pos + n]), float(value))
    return best


def summary(act: SentenceActivations, labels=("negative", "positive")) -> str:
    """One line: the prediction, its probability, and the strongest filter and its n-gram."""
    k = int(act.probabilities.argmax())
    n, filt, ngram, value = strongest(act)
    return (f"prediction: {labels[k]} (p = {act.probabilities[k]:.2f}); strongest filter: "
            f"window {n} f{filt} = {value:.2f} on '{ngram}'")


def plot_activations(act: SentenceActivations, fig=None):
    """One heat map per window size (filters x positions, labelled with each window's first
    word), and the pooled vector c as bars."""
    import matplotlib.pyplot as plt

    n_maps = len(act.maps)
    if fig is None:
        fig = plt.figure(figsize=(8, 1.6 * n_maps + 1.6))
    axes = fig.subplots(n_maps + 1, 1, gridspec_kw={"height_ratios": [2] * n_maps + [1.2]})
    for ax, (n, o) in zip(axes, act.maps.items()):
        ax.imshow(o.numpy(), cmap="coolwarm", vmin=-1, vmax=1, aspect="auto")
        starts = [" ".join(act.words[i : i + n]) for i in range(o.shape[1])]
        ax.set_xticks(range(o.shape[1]), starts, rotation=30, ha="right", fontsize=7)
        ax.set_yticks(range(o.shape[0]), [f"f{j}" for j in range(o.shape[0])], fontsize=7)
        ax.set_title(f"window {n}: o = tanh(W x + b) at each position", fontsize=9)
    bars = axes[-1]
    bars.bar(range(len(act.pooled)), act.pooled.numpy(), color="tab:purple")
    bars.set_ylim(-1, 1)
    bars.set_title("max over time: c", fontsize=9)
    bars.set_xticks(range(len(act.pooled)), [f"{n}:f{j}" for n, o in act.maps.items() for j in range(o.shape[0])],
                    fontsize=6, rotation=90)
    fig.tight_layout()
    return fig


def filter_explorer(model: TextCNN, vocab: Vocabulary, sentence: str = "the movie was not very good",
                    labels=("negative", "positive")):
    """A text box: each filter's activations over the positions, the pooled vector and the
    prediction, redrawn when the sentence changes (on Enter or leaving the box)."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    box = widgets.Text(value=sentence, description="sentence", continuous_update=False,
                       layout=widgets.Layout(width="70%"))
    line = widgets.HTML()
    picture = widgets.Output()

    def show(text: str) -> None:
        with picture:
            picture.clear_output(wait=True)
            try:
                act = sentence_activations(model, vocab, text)
            except ValueError as error:
                line.value = f"<b>{error}</b>"
                return
            line.value = summary(act, labels)
            fig = plot_activations(act)
            display(fig)
            plt.close(fig)

    box.observe(lambda change: show(change["new"]), names="value")
    show(sentence)
    container = widgets.VBox([box, line, picture])
    container.add_class("dlcourse-widget")
    return container
