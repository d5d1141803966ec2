"""Generated sequence tasks and the small recurrent models trained on them (lectures 07 and 08).

Nothing is downloaded: every task is drawn from a `torch.Generator`, so a seed fixes the data.

* `pad_sequences`: lists of token ids -> one (N, L) tensor, padded or cut as the slides show;
* `reversal_task`: digit strings and their reversal, for the seq2seq encoder-decoder;
* `long_range_task`: "I grew up in France ... I speak fluent ???" as a toy: the label is the
  first token, followed by `distance` distractors;
* `SequenceClassifier` (embedding -> RNN / LSTM / GRU -> linear on the last state) and
  `Seq2Seq` (encoder-decoder with teacher forcing and greedy decoding), with training loops
  that show a progress bar.

Token ids: 0 is padding (PAD), 1 begins a decoded sequence (BOS), 2 ends one (EOS), and the
digits 0-9 are ids 3-12 (`DIGIT0 + d`).
"""
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

PAD, BOS, EOS, DIGIT0 = 0, 1, 2, 3
VOCAB_SIZE = DIGIT0 + 10


# ------------------------------------------------------------------- text as ids
def pad_sequences(sequences, length: int, value: int = PAD, side: str = "left", truncate: str = "right"):
    """A list of id lists -> (N, length) long tensor, padded with `value` and cut to `length`.

    side: where padding goes ("left" as in the slides' [0 0 0 0 15 16 ...], or "right");
    truncate: which end a too-long sequence loses ("right" keeps the first `length` ids).
    Lecture 07, "Text as ids".
    >>> pad_sequences([[35, 5, 3], [7, 8, 9, 10, 11]], 4).tolist()
    [[0, 35, 5, 3], [7, 8, 9, 10]]
    """
    if side not in ("left", "right") or truncate not in ("left", "right"):
        raise ValueError(f"side and truncate must be 'left' or 'right', got {side!r} and {truncate!r}")
    if not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be a positive int, got {length!r}")
    out = torch.full((len(sequences), length), value, dtype=torch.long)
    for row, seq in enumerate(sequences):
        seq = list(seq)
        seq = seq[:length] if truncate == "right" else seq[max(0, len(seq) - length):]
        if seq:
            if side == "left":
                out[row, length - len(seq):] = torch.tensor(seq)
            else:
                out[row, :len(seq)] = torch.tensor(seq)
    return out


# --------------------------------------------------------------------- the tasks
@dataclass
class ReversalBatch:
    """src: (N, L) digit ids padded on the right with PAD; lengths: (N,);
    tgt: (N, L + 1) the reversed digits then EOS, padded with PAD."""
    src: torch.Tensor
    lengths: torch.Tensor
    tgt: torch.Tensor


def reversal_task(n: int, min_len: int, max_len: int, generator: torch.Generator | None = None) -> ReversalBatch:
    """n digit strings of uniform length in [min_len, max_len] and their reversals.

    "3 1 4" -> "4 1 3 <EOS>". Lecture 07, "seq2seq".
    """
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got {min_len} and {max_len}")
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=generator)
    digits = torch.randint(0, 10, (n, max_len), generator=generator) + DIGIT0
    positions = torch.arange(max_len)
    src = torch.where(positions < lengths[:, None], digits, PAD)
    tgt = torch.full((n, max_len + 1), PAD, dtype=torch.long)
    for row in range(n):
        k = int(lengths[row])
        tgt[row, :k] = src[row, :k].flip(0)
        tgt[row, k] = EOS
    return ReversalBatch(src, lengths, tgt)


def long_range_task(n: int, distance: int, n_classes: int = 4, n_distractors: int = 8, mention_prob: float = 0.0,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The long-term dependency of lecture 08 as a classification task.

    Each sequence is [key, d_1, ..., d_distance]: the key (one of `n_classes` tokens, ids
    1..n_classes: "I grew up in France") is the answer. Each later token is, with probability
    `mention_prob`, another key token ("... I also visited Spain ...", which must not change
    the answer), else one of `n_distractors` filler tokens (ids n_classes+1 .. n_classes+n_distractors).
    The key lies `distance` steps before the end. Returns x: (n, distance + 1) long, y: (n,) in
    [0, n_classes). Lecture 08, "A long-term dependency".
    """
    if distance < 0 or n_classes < 2 or n_distractors < 1 or not 0 <= mention_prob <= 1:
        raise ValueError(f"need distance >= 0, n_classes >= 2, n_distractors >= 1, 0 <= mention_prob <= 1; "
                         f"got {distance}, {n_classes}, {n_distractors}, {mention_prob}")
    y = torch.randint(0, n_classes, (n,), generator=generator)
    filler = torch.randint(0, n_distractors, (n, distance), generator=generator) + n_classes + 1
    mention = torch.randint(0, n_classes, (n, distance), generator=generator) + 1
    is_mention = torch.rand(n, distance, generator=generator) < mention_prob
    return torch.cat([y[:, None] + 1, torch.where(is_mention, mention, filler)], dim=1), y


# ---------------------------------------------------------------------- models
_LAYERS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class SequenceClassifier(nn.Module):
    """Embedding -> one recurrent layer -> linear layer on the last hidden state (many-to-one).

    x: (N, T) long ids -> logits (N, n_classes). cell: "rnn" (tanh), "lstm" or "gru".
    forget_bias (LSTM only): set the forget gate's total bias b_if + b_hf to this value
    (None keeps PyTorch's initialisation, uniform around 0).
    """

    def __init__(self, vocab_size: int, n_classes: int, embed: int = 16, hidden: int = 32, cell: str = "lstm",
                 forget_bias: float | None = None):
        super().__init__()
        if cell not in _LAYERS:
            raise ValueError(f"cell must be one of {sorted(_LAYERS)}, got {cell!r}")
        if forget_bias is not None and cell != "lstm":
            raise ValueError(f"forget_bias applies to the LSTM only, got cell={cell!r}")
        self.cell = cell
        self.embed = nn.Embedding(vocab_size, embed)
        self.rnn = _LAYERS[cell](embed, hidden, batch_first=True)
        self.out = nn.Linear(hidden, n_classes)
        if forget_bias is not None:
            with torch.no_grad():   # gates are stacked i, f, g, o: the forget gate is rows H:2H
                self.rnn.bias_ih_l0[hidden:2 * hidden] = forget_bias
                self.rnn.bias_hh_l0[hidden:2 * hidden] = 0.0

    def forward(self, x):
        states, _ = self.rnn(self.embed(x))
        return self.out(states[:, -1])


@dataclass
class TrainLog:
    """Loss per step and accuracy on held-out data after training."""
    losses: list = field(default_factory=list)
    accuracy: float = float("nan")


def train_sequence_classifier(model, make_batch, steps: int, lr: float = 3e-3, batch_size: int = 64,
                              clip: float | None = 1.0, test=None, progress: bool = True,
                              desc: str = "training") -> TrainLog:
    """Adam on cross-entropy with fresh batches `make_batch(batch_size) -> (x, y)`; returns a TrainLog.

    clip: max gradient norm (`nn.utils.clip_grad_norm_`) or None; test: (x, y) for the accuracy.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    log = TrainLog()
    model.train()
    for _ in tqdm(range(steps), desc=desc, disable=not progress):
        x, y = make_batch(batch_size)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        log.losses.append(loss.item())
    if test is not None:
        model.eval()
        with torch.no_grad():
            log.accuracy = (model(test[0]).argmax(dim=1) == test[1]).float().mean().item()
    return log


class Seq2Seq(nn.Module):
    """Encoder-decoder of GRUs: the encoder's last state is the only thing the decoder sees.

    Encoder: h_t = GRU(embed(x_t), h_{t-1}) over the source (padding skipped), s = h_n.
    Decoder: starts from s, reads BOS then the previous target token (teacher forcing) or
    its own previous prediction (greedy decoding), and predicts the next token.
    Lecture 07, "seq2seq".
    """

    def __init__(self, vocab_size: int = VOCAB_SIZE, embed: int = 16, hidden: int = 64):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed, padding_idx=PAD)
        self.encoder = nn.GRU(embed, hidden, batch_first=True)
        self.decoder = nn.GRU(embed, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab_size)

    def encode(self, src, lengths):
        """src (N, L), lengths (N,) -> summary s: (1, N, hidden)."""
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(src), lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        return self.encoder(packed)[1]

    def forward(self, src, lengths, tgt):
        """Teacher forcing: logits (N, L_tgt, vocab) for predicting tgt from [BOS, tgt[:-1]]."""
        inputs = torch.cat([torch.full_like(tgt[:, :1], BOS), tgt[:, :-1]], dim=1)
        states, _ = self.decoder(self.embed(inputs), self.encode(src, lengths))
        return self.out(states)

    @torch.no_grad()
    def greedy_decode(self, src, lengths, max_len: int):
        """Feed back the most likely token at each step; (N, max_len) ids (after EOS: anything)."""
        h = self.encode(src, lengths)
        token = torch.full((src.shape[0], 1), BOS, dtype=torch.long, device=src.device)
        out = []
        for _ in range(max_len):
            state, h = self.decoder(self.embed(token), h)
            token = self.out(state).argmax(dim=-1)
            out.append(token)
        return torch.cat(out, dim=1)


def seq2seq_loss(model: Seq2Seq, batch: ReversalBatch):
    """Cross-entropy of the teacher-forced predictions, padding ignored."""
    logits = model(batch.src, batch.lengths, batch.tgt)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.tgt.reshape(-1), ignore_index=PAD)


def sequence_accuracy(model: Seq2Seq, batch: ReversalBatch) -> torch.Tensor:
    """(N,) bool: the greedy decoding reproduces the whole target up to and including EOS."""
    pred = model.greedy_decode(batch.src, batch.lengths, batch.tgt.shape[1])
    relevant = batch.tgt != PAD
    return ((pred == batch.tgt) | ~relevant).all(dim=1)


def train_seq2seq(model: Seq2Seq, make_batch, steps: int, lr: float = 3e-3, clip: float = 1.0,
                  progress: bool = True, desc: str = "seq2seq") -> list:
    """Adam with gradient clipping on fresh batches `make_batch()`; returns the losses."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    model.train()
    for _ in tqdm(range(steps), desc=desc, disable=not progress):
        loss = seq2seq_loss(model, make_batch())
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        losses.append(loss.item())
    return losses


# ------------------------------------------------------------------- time series (lecture 08)
def seasonal_series(n: int, period: int = 12, trend: float = 0.02, noise: float = 0.1,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """A generated time series with deck 003's three parts: a long-term trend, a seasonal effect and
    random fluctuation, s_t = trend * t + sin(2 pi t / period) + noise * e_t with e_t ~ N(0, 1).

    -> (n,) float32. Lecture 08, "More from the decks: time series".
    """
    if n < 1 or period < 1:
        raise ValueError(f"n and period must be at least 1, got n = {n}, period = {period}")
    t = torch.arange(n, dtype=torch.float32)
    return trend * t + torch.sin(2 * torch.pi * t / period) + noise * torch.randn(n, generator=generator)


def sliding_windows(series, window: int, horizon: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn a series into a supervised task: the last `window` values predict the value `horizon`
    steps after them, X[j] = s[j : j + window], y[j] = s[j + window + horizon - 1].

    series: (T,) -> X (T - window - horizon + 1, window), y (T - window - horizon + 1,). Lecture 08.

    >>> X, y = sliding_windows(torch.arange(6.), window=3)
    >>> X.tolist(), y.tolist()
    ([[0.0, 1.0, 2.0], [1.0, 2.0, 3.0], [2.0, 3.0, 4.0]], [3.0, 4.0, 5.0])
    """
    series = torch.as_tensor(series)
    if series.dim() != 1:
        raise ValueError(f"series must be 1-D (T,), got shape {tuple(series.shape)}")
    if window < 1 or horizon < 1:
        raise ValueError(f"window and horizon must be at least 1, got {window} and {horizon}")
    n = series.numel() - window - horizon + 1
    if n < 1:
        raise ValueError(f"a series of {series.numel()} values is too short for window {window} and horizon {horizon}")
    X = series.unfold(0, window, 1)[:n]
    return X, series[window + horizon - 1:window + horizon - 1 + n]


# ------------------------------------------------------------------- error analysis (lecture 07)
def edit_distance(a, b) -> int:
    """Levenshtein distance between two token sequences: the fewest insertions, deletions and
    substitutions that turn `a` into `b` (dynamic programming, O(len(a) len(b))). Lecture 07.

    >>> edit_distance("she is a famous singer .".split(), "she is a well singer singer .".split())
    2
    """
    a, b = list(a), list(b)
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


# ------------------------------------------------------------------- POS tagging (lecture 07)
POS_LEXICON = {
    "DET": ("the", "a", "every"),
    "ADJ": ("old", "young", "quick", "green"),
    "NOUN": ("man", "dog", "fish", "boat", "book", "duck"),
    "VERB": ("sees", "likes", "reads", "paints"),
    # words that are a noun after a determiner and a verb after a noun
    "AMBIG": ("fish", "duck", "book"),
}
POS_TAGS = ("DET", "ADJ", "NOUN", "VERB")


def pos_tagging_task(n: int, generator: torch.Generator | None = None) -> list[tuple[list[str], list[str]]]:
    """n generated sentences "DET (ADJ) NOUN VERB DET (ADJ) NOUN" with one tag per word: the n-to-n
    task of decks 000/001. "fish", "duck" and "book" are nouns after a determiner or adjective and verbs
    after a noun, so a tagger must use the words before, not the word alone. Lecture 07.

    -> [(words, tags), ...], each a list of equal length.
    """
    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=generator))]

    out = []
    for _ in range(n):
        words, tags = [], []
        for part in ("subject", "verb", "object"):
            if part == "verb":
                verbs = POS_LEXICON["VERB"] + POS_LEXICON["AMBIG"]
                words.append(pick(verbs)); tags.append("VERB")
                continue
            words.append(pick(POS_LEXICON["DET"])); tags.append("DET")
            if torch.rand(1, generator=generator).item() < 0.5:
                words.append(pick(POS_LEXICON["ADJ"])); tags.append("ADJ")
            words.append(pick(POS_LEXICON["NOUN"])); tags.append("NOUN")
        out.append((words, tags))
    return out
