"""See where each token looks: an attention-map explorer (lecture 10, "Transformers, GPT and BERT").

    from dlcourse.widgets.attention import attention_explorer
    attention_explorer(sentences, maps)     # maps[s]: (layers, heads, T, T) for sentence s

Pick a sentence, a layer and a head; the heat map shows the weights softmax(q k^T / sqrt(d)) of
that head (row = the query token, column = the key it attends to, each row sums to 1) and the
text lists each token's strongest link. The pure parts are tested without a browser:

* `check_maps` validates a stack of attention maps against its tokens;
* `strongest_links` lists, for every query token, the key it attends to most;
* `plot_attention` draws one head's map with matplotlib.

The maps come from any model that returns its attention weights, e.g.
`dlcourse.bert.Bert.encode(..., need_weights=True)` or `dlcourse.attention.GPT(..., need_weights=True)`.
"""
import torch


def check_maps(tokens, maps) -> torch.Tensor:
    """maps as a float tensor (layers, heads, T, T) on the CPU, after checking it fits `tokens` (T words).

    A list of per-layer (heads, T, T) or (1, heads, T, T) tensors is stacked.
    """
    if isinstance(maps, (list, tuple)):
        maps = torch.stack([m.detach().reshape(m.shape[-3:]) for m in maps])
    if not isinstance(maps, torch.Tensor) or maps.dim() != 4:
        raise ValueError(f"maps must be a (layers, heads, T, T) tensor or a list of (heads, T, T) tensors, "
                         f"got {getattr(maps, 'shape', type(maps).__name__)}")
    t = len(tokens)
    if maps.shape[-2:] != (t, t):
        raise ValueError(f"maps are {tuple(maps.shape[-2:])} per head but there are {t} tokens")
    return maps.detach().to("cpu", torch.float64)


def strongest_links(tokens, weights: torch.Tensor) -> list[str]:
    """For each query token, 'query -> key (weight)' for the key with the largest weight.

    weights: (T, T), rows are queries. Ties go to the first key.
    >>> strongest_links(["a", "b"], torch.tensor([[0.9, 0.1], [0.3, 0.7]]))
    ['a -> a (0.90)', 'b -> b (0.70)']
    """
    best = weights.argmax(dim=-1).tolist()
    return [f"{tokens[i]} -> {tokens[j]} ({weights[i, j].item():.2f})" for i, j in enumerate(best)]


def plot_attention(tokens, weights: torch.Tensor, title: str = "", fig=None):
    """Heat map of one head: rows = queries, columns = keys; returns the figure."""
    import matplotlib.pyplot as plt

    if fig is None:
        fig = plt.figure(figsize=(4.2, 3.6))
    fig.clear()
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(weights.numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=7)
    ax.set_yticks(range(len(tokens)), tokens, fontsize=7)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def attention_explorer(sentences, maps):
    """An ipywidgets explorer: a sentence dropdown, layer and head sliders, the heat map and the
    strongest link of every token.

    sentences: list of token lists; maps: list (one per sentence) of (layers, heads, T, T) tensors
    or lists of per-layer tensors. Returns the widget (display it, or leave it as a cell's last
    expression).
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    if len(sentences) != len(maps) or not sentences:
        raise ValueError(f"one map stack per sentence: got {len(sentences)} sentences and {len(maps)} map stacks")
    stacks = [check_maps(tokens, m) for tokens, m in zip(sentences, maps)]
    layers, heads = stacks[0].shape[:2]
    choose = widgets.Dropdown(options=[(" ".join(s), i) for i, s in enumerate(sentences)], value=0,
                              description="sentence", layout=widgets.Layout(width="95%"))
    layer = widgets.IntSlider(min=0, max=layers - 1, value=layers - 1, description="layer")
    head = widgets.IntSlider(min=0, max=heads - 1, value=0, description="head")
    links = widgets.HTML()
    picture = widgets.Output()

    def show(_change=None) -> None:
        tokens = sentences[choose.value]
        weights = stacks[choose.value][layer.value, head.value]
        links.value = "<code>" + " &nbsp;|&nbsp; ".join(strongest_links(tokens, weights)) + "</code>"
        with picture:
            picture.clear_output(wait=True)
            fig = plot_attention(tokens, weights, f"layer {layer.value}, head {head.value}")
            display(fig)
            plt.close(fig)

    for control in (choose, layer, head):
        control.observe(show, names="value")
    show()
    return widgets.VBox([choose, widgets.HBox([layer, head]), links, picture])
