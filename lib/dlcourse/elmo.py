"""ELMo at toy size: a bidirectional LSTM language model and the task-specific weighted sum of
its layers (lecture 09, "ELMo"; Peters et al., 2018).

* `BiLM`: a token embedding (layer 0, the same vector in every context), then L forward LSTM
  layers that read left to right and L backward LSTM layers that read right to left. The top
  forward layer predicts the next word, the top backward layer the previous word, through one
  shared softmax. Layer j's representation of token k is h_{k,j} = [forward_j ; backward_j]
  (2 * dim numbers); layer 0 is the embedding written twice, [x_k ; x_k], as ELMo does.
* `ScalarMix`: ELMo_k = gamma * sum_j s_j h_{k,j} with s = softmax(w): the weights s_j and
  the scale gamma are learned by the downstream task, the biLM stays frozen.

Shapes follow `nn.LSTM` (time first): ids (T, N), representations (L+1, T, N, 2*dim).
`BiLM.representations(..., lstm=dlcourse.rnn.lstm)` runs the same trained weights through
the course's own LSTM instead of `nn.LSTM`, so the two can be compared.
"""
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm


def batch_sentences(sentences, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Wrap each sentence (a list of word ids < vocab_size) in <s> ... </s> and pad.

    <s> = vocab_size, </s> = vocab_size + 1, padding = vocab_size + 2.
    Returns ids (T, N) with T = longest sentence + 2, and lengths (N,) counting <s> and </s>.
    """
    if not sentences:
        raise ValueError("no sentences to batch")
    lengths = torch.tensor([len(s) + 2 for s in sentences], dtype=torch.long)
    ids = torch.full((int(lengths.max()), len(sentences)), vocab_size + 2, dtype=torch.long)
    for n, s in enumerate(sentences):
        if any(not 0 <= w < vocab_size for w in s):
            raise ValueError(f"sentence {n} has an id outside [0, {vocab_size})")
        ids[: len(s) + 2, n] = torch.tensor([vocab_size, *s, vocab_size + 1], dtype=torch.long)
    return ids, lengths


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence within its own length, leaving the padding where it is.

    x: (T, N, ...), lengths: (N,) -> same shape; out[t, n] = x[lengths[n] - 1 - t, n] for
    t < lengths[n]. Applying it twice gives x back."""
    t_max, n = x.shape[:2]
    if lengths.shape != (n,) or int(lengths.max()) > t_max or int(lengths.min()) < 1:
        raise ValueError(f"lengths must be (N,) = ({n},) with values in [1, {t_max}], got {lengths.tolist()}")
    t = torch.arange(t_max, device=x.device).unsqueeze(1)                    # (T, 1)
    lengths = lengths.to(x.device).unsqueeze(0)                              # (1, N)
    index = torch.where(t < lengths, lengths - 1 - t, t)                     # (T, N)
    index = index.view(t_max, n, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(0, index)


class BiLM(nn.Module):
    """A bidirectional LSTM language model with `num_layers` layers per direction.

    vocab_size words plus <s>, </s> and padding (see `batch_sentences`); every LSTM has
    input and hidden size `dim`."""

    def __init__(self, vocab_size: int, dim: int = 32, num_layers: int = 2):
        super().__init__()
        if vocab_size < 1 or dim < 1 or num_layers < 1:
            raise ValueError(f"vocab_size, dim and num_layers must be positive, got {vocab_size}, {dim}, {num_layers}")
        self.vocab_size, self.dim, self.num_layers = vocab_size, dim, num_layers
        self.embedding = nn.Embedding(vocab_size + 3, dim, padding_idx=vocab_size + 2)
        self.forward_layers = nn.ModuleList(nn.LSTM(dim, dim) for _ in range(num_layers))
        self.backward_layers = nn.ModuleList(nn.LSTM(dim, dim) for _ in range(num_layers))
        self.softmax = nn.Linear(dim, vocab_size + 3)  # shared by the two directions

    @staticmethod
    def _run(layer: nn.LSTM, x: torch.Tensor, lstm) -> torch.Tensor:
        if lstm is None:
            return layer(x)[0]
        h0 = x.new_zeros(x.shape[1], layer.hidden_size)
        return lstm(x, h0, h0.clone(), layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0, layer.bias_hh_l0)[0]

    def directions(self, ids: torch.Tensor, lengths: torch.Tensor, lstm=None):
        """(embedding (T, N, dim), [forward layer outputs], [backward layer outputs]), each
        output (T, N, dim) aligned with the tokens. `lstm`: None for nn.LSTM, or a function
        with dlcourse.rnn.lstm's signature."""
        x = self.embedding(ids)
        forward, backward = [], []
        h = x
        for layer in self.forward_layers:
            h = self._run(layer, h, lstm)
            forward.append(h)
        h = reverse_padded(x, lengths)
        for layer in self.backward_layers:
            h = self._run(layer, h, lstm)
            backward.append(reverse_padded(h, lengths))
        return x, forward, backward

    def representations(self, ids: torch.Tensor, lengths: torch.Tensor, lstm=None) -> torch.Tensor:
        """Every layer's view of every token: (L+1, T, N, 2*dim); layer 0 is [x ; x]."""
        x, forward, backward = self.directions(ids, lengths, lstm)
        layers = [torch.cat([x, x], dim=-1)] + [torch.cat([f, b], dim=-1) for f, b in zip(forward, backward)]
        return torch.stack(layers)

    def loss(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(forward, backward) mean cross-entropy: the top forward layer at t predicts token
        t+1, the top backward layer at t predicts token t-1; padding is ignored."""
        _, forward, backward = self.directions(ids, lengths)
        t_max = ids.shape[0]
        valid = torch.arange(t_max, device=ids.device).unsqueeze(1) < lengths.to(ids.device).unsqueeze(0)
        next_targets = ids[1:].masked_fill(~valid[1:], -100)
        prev_targets = ids[:-1].masked_fill(~valid[1:], -100)  # predicted from t + 1 < length
        loss_f = F.cross_entropy(self.softmax(forward[-1][:-1]).flatten(0, 1), next_targets.flatten())
        loss_b = F.cross_entropy(self.softmax(backward[-1][1:]).flatten(0, 1), prev_targets.flatten())
        return loss_f, loss_b


def train_bilm(model: BiLM, sentences, epochs: int = 8, batch_size: int = 64, lr: float = 0.01,
               generator: torch.Generator | None = None, progress: bool = True) -> list[float]:
    """Train both directions with Adam on shuffled mini-batches; return the mean loss
    (forward + backward) / 2 of each epoch. The model's device decides where batches go."""
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be at least 1, got {epochs} and {batch_size}")
    device = next(model.parameters()).device
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    bar = tqdm(range(epochs), desc="biLM", disable=not progress)
    for _ in bar:
        model.train()
        order = torch.randperm(len(sentences), generator=generator).tolist()
        total = 0.0
        for start in range(0, len(order), batch_size):
            chunk = [sentences[i] for i in order[start:start + batch_size]]
            ids, lengths = batch_sentences(chunk, model.vocab_size)
            loss_f, loss_b = model.loss(ids.to(device), lengths.to(device))
            loss = (loss_f + loss_b) / 2
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(chunk)
        history.append(total / len(sentences))
        bar.set_postfix(loss=f"{history[-1]:.3f}")
    return history


class ScalarMix(nn.Module):
    """ELMo's task-specific combination of the biLM's L+1 layers:

        ELMo_k = gamma * sum_{j=0}^{L} s_j h_{k,j},   s = softmax(w).

    w starts at 0 (s_j = 1/(L+1), the plain average) and gamma at 1; both are learned by the
    downstream task. layers: (L+1, ..., D) -> (..., D).

    >>> mix = ScalarMix(3)
    >>> [round(x, 4) for x in mix.s.tolist()], float(mix.gamma)
    ([0.3333, 0.3333, 0.3333], 1.0)
    """

    def __init__(self, num_layers: int):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be positive, got {num_layers}")
        self.w = nn.Parameter(torch.zeros(num_layers))
        self.gamma = nn.Parameter(torch.ones(()))

    @property
    def s(self) -> torch.Tensor:
        """The softmax-normalised layer weights (L+1,): positive, summing to 1."""
        return torch.softmax(self.w, dim=0)

    def forward(self, layers: torch.Tensor) -> torch.Tensor:
        if layers.shape[0] != self.w.shape[0]:
            raise ValueError(f"expected {self.w.shape[0]} layers on axis 0, got shape {tuple(layers.shape)}")
        s = self.s.to(layers.dtype).view(-1, *([1] * (layers.dim() - 1)))
        return self.gamma * (s * layers).sum(dim=0)


class ElmoTagger(nn.Module):
    """A linear classifier on frozen biLM features: on the ScalarMix of all layers, or (with
    `layer=j`) on layer j alone, for comparison. layers (L+1, ..., D) -> logits (..., num_tags)."""

    def __init__(self, num_layers: int, dim: int, num_tags: int, layer: int | None = None):
        super().__init__()
        if layer is not None and not 0 <= layer < num_layers:
            raise ValueError(f"layer must be in [0, {num_layers}), got {layer}")
        self.layer = layer
        self.mix = ScalarMix(num_layers) if layer is None else None
        self.classifier = nn.Linear(dim, num_tags)

    def forward(self, layers: torch.Tensor) -> torch.Tensor:
        features = self.mix(layers) if self.layer is None else layers[self.layer]
        return self.classifier(features)


def train_tagger(tagger: ElmoTagger, layers: torch.Tensor, tags: torch.Tensor, epochs: int = 100,
                 lr: float = 0.05, progress: bool = True, desc: str = "tagger") -> list[float]:
    """Full-batch Adam on cross-entropy. layers: (L+1, T, N, D) frozen features; tags: (T, N)
    with -100 where there is no word (<s>, </s>, padding). Returns the loss per epoch."""
    optimizer = torch.optim.Adam(tagger.parameters(), lr=lr)
    layers = layers.detach()
    history = []
    for _ in tqdm(range(epochs), desc=desc, disable=not progress):
        loss = F.cross_entropy(tagger(layers).flatten(0, 1), tags.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return history


def word_in_context(representations: torch.Tensor, ids: torch.Tensor, word_id: int):
    """Every occurrence of `word_id` in a batch: (vectors (L+1, M, D), positions [(t, n), ...])
    with M occurrences in reading order (sentence by sentence). representations: (L+1, T, N, D)."""
    positions = [(t, n) for n in range(ids.shape[1]) for t in range(ids.shape[0]) if int(ids[t, n]) == word_id]
    if not positions:
        raise ValueError(f"word id {word_id} does not occur in the batch")
    t_idx = torch.tensor([t for t, _ in positions])
    n_idx = torch.tensor([n for _, n in positions])
    return representations[:, t_idx, n_idx], positions
