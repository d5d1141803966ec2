"""Text CNNs (lecture 05): local filters over word windows, shared weights, max-over-time pooling.

    corpus = make_sentiment_corpus(2000, seed=0)
    vocab = Vocabulary.from_sentences(ex.tokens for ex in corpus)
    ids = vocab.encode_batch([ex.tokens for ex in corpus])        # (N, L), padded with PAD = 0
    model = TextCNN(len(vocab), dim=8, windows=(1, 3), filters=6)
    logits = model(ids)                                            # (N, 2)

The lecture's notation: word vectors w_i in R^d, a window of n words concatenated to
[w_1; ...; w_n] in R^{n d}, a filter W in R^{k x n d} with bias b in R^k, and one output per
window position i:  o_i = tanh(W [w_i; ...; w_{i+n-1}] + b) in R^k.  Max-over-time pooling
c_j = max_i o_{i,j} turns a sentence of any length into a fixed-size vector c in R^k.

The corpus is generated with known cues, so we know what a filter ought to find: a sentiment
word ("good", "awful"), a negation right before it ("not good"), an intensifier in between
("not very good"), and a negation too far away for a short window ("i did not think that the
plot was good").
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PAD, UNK = "<pad>", "<unk>"

POSITIVE = ("good", "great", "awesome", "brilliant", "fun", "moving")
NEGATIVE = ("bad", "awful", "boring", "dull", "terrible", "silly")
INTENSIFIERS = ("very", "really", "so", "truly")
SUBJECTS = ("the movie", "the film", "the plot", "the acting", "the ending", "the music")
VERBS = ("was", "is", "felt", "seemed")
OPENERS = ("", "", "honestly", "overall", "i think", "to me")
CLOSERS = ("", "", "", "in the end", "for a sunday", "at times", "from start to finish")
DISTANT_NEGATIONS = ("i did not think that {subject} was {adj}",
                     "nobody would ever say that {subject} was {adj}",
                     "i can not say that {subject} {verb} {adj}")
# the kinds of sentences, and how the label follows from the sentiment word
KINDS = ("plain", "intensified", "negated", "negated_intensified", "distant_negation")


@dataclass(frozen=True)
class Example:
    """One generated sentence: its tokens, its label (1 positive, 0 negative) and its kind."""

    tokens: tuple[str, ...]
    label: int
    kind: str

    @property
    def text(self) -> str:
        return " ".join(self.tokens)


def tokenize(text: str) -> list[str]:
    """Lower-case words (letters, digits and apostrophes); everything else separates them."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return re.findall(r"[a-z0-9']+", text.lower())


def make_sentiment_corpus(n: int, seed: int = 0, kinds: tuple[str, ...] = KINDS,
                          weights: tuple[float, ...] | None = None) -> list[Example]:
    """`n` generated review sentences with known cues; the label is the sentiment word's
    polarity, flipped when the sentence negates it (near: "not (very) good", or far:
    "i did not think that the plot was good"). Each kind is drawn with `weights`
    (default: equal shares); a seeded NumPy generator makes the corpus reproducible.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {kinds}")
    p = None if weights is None else np.asarray(weights, dtype=float) / np.sum(weights)
    if p is not None and len(p) != len(kinds):
        raise ValueError(f"one weight per kind: {len(kinds)} kinds, {len(p)} weights")
    rng = np.random.default_rng(seed)

    def pick(options):
        return options[rng.integers(len(options))]

    examples = []
    for _ in range(n):
        kind = kinds[rng.choice(len(kinds), p=p)]
        positive = bool(rng.integers(2))
        adj = pick(POSITIVE if positive else NEGATIVE)
        subject, verb = pick(SUBJECTS), pick(VERBS)
        if kind == "distant_negation":
            # the same endings as the other kinds: where the sentence stops says nothing about its label
            core = " ".join(w for w in (pick(DISTANT_NEGATIONS).format(subject=subject, verb=verb, adj=adj),
                                        pick(CLOSERS)) if w)
        else:
            middle = {"plain": "", "intensified": pick(INTENSIFIERS), "negated": "not",
                      "negated_intensified": "not " + pick(INTENSIFIERS)}[kind]
            core = " ".join(w for w in (pick(OPENERS), subject, verb, middle, adj, pick(CLOSERS)) if w)
        negated = kind in ("negated", "negated_intensified", "distant_negation")
        examples.append(Example(tuple(core.split()), int(positive != negated), kind))
    return examples


class Vocabulary:
    """Word <-> id. Id 0 is the padding word PAD, id 1 stands for any unknown word (UNK)."""

    def __init__(self, words):
        self.itos = [PAD, UNK] + [w for w in dict.fromkeys(words) if w not in (PAD, UNK)]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def from_sentences(cls, sentences) -> Vocabulary:
        """The words of `sentences` (each a list of tokens), in order of first appearance."""
        return cls(w for sentence in sentences for w in sentence)

    def __len__(self) -> int:
        return len(self.itos)

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} words, PAD=0, UNK=1)"

    def encode(self, tokens) -> list[int]:
        """Token list (or a string, tokenised first) -> ids; unknown words become UNK (1)."""
        if isinstance(tokens, str):
            tokens = tokenize(tokens)
        return [self.stoi.get(t, 1) for t in tokens]

    def decode(self, ids) -> list[str]:
        return [self.itos[int(i)] for i in ids]

    def encode_batch(self, sentences, min_len: int = 1, pad_each_side: int = 0) -> torch.Tensor:
        """Sentences -> a LongTensor (N, L) of ids, PAD (0) after the words.

        `pad_each_side` PAD ids go before and after every sentence (the deck's
        "PAD The movie was awesome PAD" is pad_each_side=1); L is the longest padded
        sentence, and at least `min_len` (so every sentence has a full window).
        """
        rows = [[0] * pad_each_side + self.encode(s) + [0] * pad_each_side for s in sentences]
        if not rows:
            raise ValueError("no sentences to encode")
        if any(len(r) == 2 * pad_each_side for r in rows):
            raise ValueError("a sentence has no words; every sentence needs at least one token")
        length = max(min_len, max(len(r) for r in rows))
        return torch.tensor([r + [0] * (length - len(r)) for r in rows], dtype=torch.long)


def ngram_set(tokens, n: int, pad: int = 1) -> set[tuple[str, ...]]:
    """The distinct n-grams of a sentence with `pad` PAD words on each side (windows made only
    of PAD left out). A text CNN with max-over-time pooling sees a sentence only through this
    set, for each of its window sizes: two sentences with the same sets get the same output."""
    words = [PAD] * pad + list(tokens) + [PAD] * pad
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)} - {(PAD,) * n}


# --------------------------------------------------------------------- one layer by hand
def local_filter(window, W, b) -> torch.Tensor:
    """The deck's local filter: tanh(W [w_1; ...; w_n] + b).

    window: (n, d) word vectors (or already concatenated, (n d,)); W: (k, n d) or (n d,);
    b: (k,) or a scalar -> (k,) (or a scalar for a 1-row W).
    """
    window, W, b = (torch.as_tensor(t) for t in (window, W, b))
    stacked = window.reshape(-1)
    if W.shape[-1] != stacked.numel():
        raise ValueError(f"W has {W.shape[-1]} columns but the window has {stacked.numel()} numbers "
                         f"(n words x d dimensions)")
    return torch.tanh(W @ stacked.to(W.dtype) + b)


def windows(x, n: int) -> torch.Tensor:
    """Every window of `n` consecutive word vectors, concatenated.

    x: (L, d) or (N, L, d) -> (L - n + 1, n d) or (N, L - n + 1, n d);
    row i is [x_i; x_{i+1}; ...; x_{i+n-1}].
    """
    x = torch.as_tensor(x)
    if x.dim() not in (2, 3):
        raise ValueError(f"x must be (L, d) or (N, L, d), got shape {tuple(x.shape)}")
    if n < 1 or x.shape[-2] < n:
        raise ValueError(f"a window of {n} words needs at least {n} positions, got {x.shape[-2]} "
                         f"(pad the sentence)")
    # unfold over positions gives (..., L - n + 1, d, n): put the words first, then flatten
    return x.unfold(-2, n, 1).transpose(-1, -2).flatten(-2)


def text_conv1d(x, W, b) -> torch.Tensor:
    """The filter applied at every position with shared weights (no padding added):

    o_i = tanh(W [x_i; ...; x_{i+n-1}] + b).
    x: (L, d) or (N, L, d); W: (k, n d); b: (k,) -> (L - n + 1, k) or (N, L - n + 1, k).
    """
    x, W, b = (torch.as_tensor(t) for t in (x, W, b))
    d = x.shape[-1]
    if W.dim() != 2 or W.shape[1] % d:
        raise ValueError(f"W must be (k, n*d) with d = {d}, got shape {tuple(W.shape)}")
    return torch.tanh(windows(x, W.shape[1] // d) @ W.T + b)


def conv1d_weight(W, d: int) -> torch.Tensor:
    """The same filter as an nn.Conv1d weight: (k, n d) -> (k, d, n) (channels = word dims)."""
    W = torch.as_tensor(W)
    k, nd = W.shape
    if nd % d:
        raise ValueError(f"W has {nd} columns, not a multiple of d = {d}")
    return W.reshape(k, nd // d, d).transpose(1, 2)


# --------------------------------------------------------------------- the model
class TextCNN(nn.Module):
    """Embedding -> one convolution per window size (tanh) -> max over time -> linear.

    ids: (N, L) LongTensor -> logits (N, n_classes). Sentences shorter than the widest
    window are padded with PAD (id 0, whose vector is kept at zero) on the right.
    """

    def __init__(self, vocab_size: int, dim: int = 8, windows: tuple[int, ...] = (1, 3), filters: int = 4,
                 n_classes: int = 2):
        super().__init__()
        if not windows or min(windows) < 1:
            raise ValueError(f"windows must be positive window sizes, got {windows}")
        self.windows = tuple(windows)
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(dim, filters, n) for n in self.windows)
        self.out = nn.Linear(filters * len(self.windows), n_classes)

    def feature_maps(self, ids: torch.Tensor) -> list[torch.Tensor]:
        """o for each window size: a list of (N, filters, L' ) tensors, L' = L - n + 1."""
        if ids.dtype != torch.long or ids.dim() != 2:
            raise TypeError(f"ids must be a (N, L) torch.long tensor, got {ids.dtype} {tuple(ids.shape)}")
        widest = max(self.windows)
        if ids.shape[1] < widest:
            ids = F.pad(ids, (0, widest - ids.shape[1]))
        x = self.embedding(ids).transpose(1, 2)  # (N, dim, L): word dimensions are channels
        return [torch.tanh(conv(x)) for conv in self.convs]

    def pooled(self, ids: torch.Tensor) -> torch.Tensor:
        """c: max over time of every feature map, concatenated: (N, filters * len(windows))."""
        return torch.cat([o.amax(dim=-1) for o in self.feature_maps(ids)], dim=1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.pooled(ids))


@dataclass(frozen=True)
class Window:
    """One n-gram of a sentence and a filter's output on it."""

    ngram: str
    activation: float
    sentence: int


def top_windows(model: TextCNN, ids: torch.Tensor, vocab: Vocabulary, window: int, filter: int,
                top: int = 5) -> list[Window]:
    """The `top` distinct n-grams on which filter `filter` of window size `window` fires most
    (highest o over every position of every sentence in `ids`). Windows made only of PAD
    are skipped."""
    if window not in model.windows:
        raise ValueError(f"the model has windows {model.windows}, not {window}")
    with torch.no_grad():
        o = model.feature_maps(ids)[model.windows.index(window)][:, filter, :]  # (N, L')
    order = torch.argsort(o.flatten(), descending=True)
    found, seen = [], set()
    for flat in order.tolist():
        s, i = divmod(flat, o.shape[1])
        words = vocab.decode(ids[s, i : i + window])
        if all(w == PAD for w in words):
            continue
        ngram = " ".join(words)
        if ngram not in seen:
            seen.add(ngram)
            found.append(Window(ngram, float(o[s, i]), s))
        if len(found) == top:
            break
    return found


# --------------------------------------------------------------------- decks 000/001: the ReLU form
def text_cnn_feature_map(x, w, b=0.0) -> torch.Tensor:
    """One filter of decks 000/001 slid over a sentence: c_i = ReLU(w · x_{i:i+h-1} + b).

    x: (L, d) stacked word vectors x_1..x_L; w: (h, d), a filter over h neighbouring words;
    b: a scalar -> (L - h + 1,), one c_i per window. `w · x_{i:i+h-1}` is the sum of the entrywise
    product of w with the h rows x_i..x_{i+h-1}. Lecture 05, "More from the decks".

    >>> x = torch.tensor([[1., 0.], [0., 1.], [1., 1.], [2., 0.]])
    >>> text_cnn_feature_map(x, torch.ones(3, 2), b=-3.0)
    tensor([1., 2.])
    """
    x, w = torch.as_tensor(x), torch.as_tensor(w)
    if x.dim() != 2 or w.dim() != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"x must be (L, d) and w (h, d) with the same d, got {tuple(x.shape)} and {tuple(w.shape)}")
    h = w.shape[0]
    if x.shape[0] < h:
        raise ValueError(f"a filter of h = {h} words needs a sentence of at least {h} words, got {x.shape[0]}")
    w = w.to(torch.promote_types(x.dtype, w.dtype))
    return torch.relu(windows(x.to(w.dtype), h) @ w.reshape(-1) + b)
