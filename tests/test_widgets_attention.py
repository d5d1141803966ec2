"""The attention-map explorer (dlcourse.widgets.attention): its pure parts, and that moving a
control changes what it shows."""
import pytest
import torch

from dlcourse.attention import attention_weights
from dlcourse.widgets import attention as watt

TOKENS = ["[CLS]", "rome", "is", "in", "italy", "[SEP]"]


def maps_for(seed, layers=2, heads=3, t=len(TOKENS)):
    """Real attention weights: softmax(q k^T / sqrt(d)) of random queries and keys."""
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(layers, heads, t, 4, generator=gen), torch.randn(layers, heads, t, 4, generator=gen)
    return attention_weights(q, k)


def test_strongest_links_follow_the_argmax():
    weights = maps_for(0)[1, 2]
    links = watt.strongest_links(TOKENS, weights)
    assert len(links) == len(TOKENS)
    for i, link in enumerate(links):
        j = int(weights[i].argmax())
        assert link == f"{TOKENS[i]} -> {TOKENS[j]} ({weights[i, j].item():.2f})"


def test_check_maps_stacks_layers_and_rejects_wrong_sizes():
    per_layer = [m[None] for m in maps_for(1)]                     # (1, heads, T, T) per layer
    stacked = watt.check_maps(TOKENS, per_layer)
    assert stacked.shape == (2, 3, 6, 6) and stacked.dtype == torch.float64
    with pytest.raises(ValueError, match="there are 5 tokens"):
        watt.check_maps(TOKENS[:5], per_layer)
    with pytest.raises(ValueError, match="layers, heads, T, T"):
        watt.check_maps(TOKENS, torch.ones(6, 6))


def test_plot_has_one_row_and_column_per_token():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = watt.plot_attention(TOKENS, maps_for(2)[0, 0], "layer 0, head 0")
    try:
        ax = fig.axes[0]
        assert [t.get_text() for t in ax.get_xticklabels()] == TOKENS
        assert ax.get_title() == "layer 0, head 0"
    finally:
        plt.close(fig)


def test_moving_the_controls_changes_the_view():
    sentences = [TOKENS, ["[CLS]", "bob", "speaks", "greek", "[SEP]"]]
    maps = [maps_for(3), maps_for(4, t=5)]
    widget = watt.attention_explorer(sentences, maps)
    choose, sliders, links, _picture = widget.children
    layer, head = sliders.children
    assert layer.value == 1 and head.value == 0
    assert links.value == "<code>" + " &nbsp;|&nbsp; ".join(watt.strongest_links(TOKENS, maps[0][1, 0])) + "</code>"
    before = links.value
    head.value = 2
    assert links.value != before
    assert "</code>" in links.value and watt.strongest_links(TOKENS, maps[0][1, 2])[0] in links.value
    choose.value = 1
    assert "greek" in links.value and "rome" not in links.value
    with pytest.raises(ValueError, match="one map stack per sentence"):
        watt.attention_explorer(sentences, maps[:1])
