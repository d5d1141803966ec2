"""Word embeddings: word2vec's skip-gram and CBOW with negative sampling, nearest neighbours
and analogies (lecture 09), trained on the generated corpus of `dlcourse.word_corpus` (whose
names this module re-exports).

The corpus's words vary along known attributes (gender, royalty, age; country, capital,
language), so we know which analogies *should* hold (`word_corpus.analogy_questions`).

    corpus = generate_corpus(4000, generator=torch.Generator().manual_seed(0))
    vocab = Vocabulary.from_sentences(corpus.sentences)
    ids = [vocab.encode(s) for s in corpus.sentences]
    model, losses = train_word2vec(ids, vocab.counts, mode="skipgram", generator=g)
    analogy_accuracy(model.embeddings(), vocab, analogy_questions())
"""
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from dlcourse.word_corpus import (  # noqa: F401 -- re-exported: the lecture's embeddings.PEOPLE, ...
    AGE_VERBS, AGE_WORDS, AMBIGUOUS_TEMPLATES, COUNTRIES, PEOPLE, PERSON_TEMPLATES, PLACE_TEMPLATES,
    PRONOUNS, ROYAL_PLACES, ROYAL_THINGS, TAGS, TAG_NAMES, Corpus, analogy_questions,
    generate_corpus)


# ------------------------------------------------------------------ vocabulary
@dataclass
class Vocabulary:
    """Word <-> id, ids sorted by decreasing count (ties alphabetically); `counts[i]` is the
    number of occurrences of word i."""

    itos: list[str]
    counts: torch.Tensor
    stoi: dict[str, int] = field(init=False)

    def __post_init__(self):
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def from_sentences(cls, sentences) -> "Vocabulary":
        counter = Counter(w for s in sentences for w in s)
        ordered = sorted(counter, key=lambda w: (-counter[w], w))
        return cls(ordered, torch.tensor([counter[w] for w in ordered], dtype=torch.long))

    def __len__(self) -> int:
        return len(self.itos)

    def __getitem__(self, word: str) -> int:
        """The id of `word`; a KeyError names the word if it never occurs in the corpus."""
        if word not in self.stoi:
            raise KeyError(f"{word!r} is not in the vocabulary of {len(self.itos)} words")
        return self.stoi[word]

    def encode(self, words) -> list[int]:
        """Words (a list, or a string split on spaces) -> ids."""
        return [self[w] for w in (words.split() if isinstance(words, str) else words)]


# ------------------------------------------------------------------ training examples
def _check_window(window) -> None:
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise ValueError(f"window must be a positive int, got {window!r}")


def skipgram_pairs(sentences, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Skip-gram's (center, context) pairs: every word with every other word of its sentence
    at distance 1..window, never across sentences.

    sentences: lists of word ids -> (centers (P,), contexts (P,)), int64, in reading order
    (center by center, contexts left to right). A word at position i of a sentence of
    length n has min(i, window) + min(n - 1 - i, window) contexts. Lecture 09, "Skip-gram".

    >>> centers, contexts = skipgram_pairs([[7, 8, 9]], window=1)
    >>> list(zip(centers.tolist(), contexts.tolist()))
    [(7, 8), (8, 7), (8, 9), (9, 8)]
    """
    _check_window(window)
    centers, contexts = [], []
    for s in sentences:
        for i, c in enumerate(s):
            for j in range(max(0, i - window), min(len(s), i + window + 1)):
                if j != i:
                    centers.append(c)
                    contexts.append(s[j])
    return torch.tensor(centers, dtype=torch.long), torch.tensor(contexts, dtype=torch.long)


def cbow_examples(sentences, window: int, pad_id: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """CBOW's examples: predict each word from the words around it (distance 1..window).

    sentences: lists of word ids -> (contexts (P, 2*window), targets (P,)), int64. Row p
    lists target p's context ids left to right, padded with `pad_id` at the end where the
    sentence is shorter; words without any context (one-word sentences) are skipped.
    Lecture 09, "CBOW".
    """
    _check_window(window)
    rows, targets = [], []
    for s in sentences:
        for i, t in enumerate(s):
            ctx = [s[j] for j in range(max(0, i - window), min(len(s), i + window + 1)) if j != i]
            if ctx:
                rows.append(ctx + [pad_id] * (2 * window - len(ctx)))
                targets.append(t)
    if not rows:
        return torch.empty(0, 2 * window, dtype=torch.long), torch.empty(0, dtype=torch.long)
    return torch.tensor(rows, dtype=torch.long), torch.tensor(targets, dtype=torch.long)


def noise_distribution(counts: torch.Tensor, power: float = 0.75) -> torch.Tensor:
    """Negative-sampling distribution P_n(w) = count(w)^power / sum_v count(v)^power.

    counts: (V,) -> (V,) float64 probabilities. power = 0.75 (word2vec's choice) lifts rare
    words above their share of the corpus; power = 1 is the unigram distribution.

    >>> noise_distribution(torch.tensor([16, 81, 1])).tolist()  # 16^0.75 = 8, 81^0.75 = 27
    [0.2222..., 0.75, 0.0277...]
    """
    counts = torch.as_tensor(counts)
    if counts.dim() != 1 or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError("counts must be a 1-D tensor of non-negative counts with a positive sum")
    weights = counts.to(torch.float64) ** power
    return weights / weights.sum()


def negative_sampling_loss(center: torch.Tensor, context: torch.Tensor, negatives: torch.Tensor,
                           reduction: str = "mean") -> torch.Tensor:
    """word2vec's negative-sampling loss for a true pair and K noise words:

        loss = -log sigma(u_o . v_c) - sum_k log sigma(-u_k . v_c)

    center: (N, D) input vectors v_c (for CBOW, the mean of the context's vectors);
    context: (N, D) output vectors u_o of the true word; negatives: (N, K, D) output vectors
    u_k of the noise words. Returns (N,) with reduction="none", else the mean or sum.
    -log sigma(x) is computed as softplus(-x), which never overflows. Lecture 09.
    """
    if center.dim() != 2 or context.shape != center.shape:
        raise ValueError(f"center and context must both be (N, D), got {tuple(center.shape)} and {tuple(context.shape)}")
    if negatives.dim() != 3 or negatives.shape[0] != center.shape[0] or negatives.shape[2] != center.shape[1]:
        raise ValueError(f"negatives must be (N, K, D) = ({center.shape[0]}, K, {center.shape[1]}), "
                         f"got {tuple(negatives.shape)}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    positive = (center * context).sum(dim=1)                      # (N,)
    negative = torch.einsum("nkd,nd->nk", negatives, center)      # (N, K)
    loss = F.softplus(-positive) + F.softplus(negative).sum(dim=1)
    return loss if reduction == "none" else (loss.mean() if reduction == "mean" else loss.sum())


# ------------------------------------------------------------------ the model
class Word2Vec(nn.Module):
    """Two tables of vectors: `inputs` (V, D), the word's own vectors v_w (the embedding we keep),
    and `outputs` (V, D), the vectors u_w it has as a context or noise word."""

    def __init__(self, vocab_size: int, embedding_dim: int, generator: torch.Generator | None = None):
        super().__init__()
        if vocab_size < 1 or embedding_dim < 1:
            raise ValueError(f"vocab_size and embedding_dim must be positive, got {vocab_size} and {embedding_dim}")
        bound = 0.5 / embedding_dim
        self.inputs = nn.Parameter((torch.rand(vocab_size, embedding_dim, generator=generator) * 2 - 1) * bound)
        self.outputs = nn.Parameter(torch.zeros(vocab_size, embedding_dim))

    def embeddings(self) -> torch.Tensor:
        """The learned word vectors (V, D), detached."""
        return self.inputs.detach()

    def skipgram_loss(self, centers, contexts, negatives) -> torch.Tensor:
        """Mean loss of predicting each context word from its center word.

        centers, contexts: (N,) ids; negatives: (N, K) ids of noise words."""
        return negative_sampling_loss(self.inputs[centers], self.outputs[contexts], self.outputs[negatives])

    def cbow_loss(self, contexts, targets, negatives, pad_id: int = -1) -> torch.Tensor:
        """Mean loss of predicting each target from the mean of its context words' vectors.

        contexts: (N, C) ids padded with `pad_id`; targets: (N,); negatives: (N, K)."""
        mask = (contexts != pad_id).unsqueeze(-1).to(self.inputs.dtype)        # (N, C, 1)
        summed = (self.inputs[contexts.clamp(min=0)] * mask).sum(dim=1)        # (N, D)
        mean = summed / mask.sum(dim=1).clamp(min=1)
        return negative_sampling_loss(mean, self.outputs[targets], self.outputs[negatives])


def train_word2vec(sentences, counts, mode: str = "skipgram", embedding_dim: int = 24, window: int = 2,
                   num_negatives: int = 5, epochs: int = 5, batch_size: int = 512, lr: float = 0.01,
                   generator: torch.Generator | None = None, device=None, progress: bool = True):
    """Train skip-gram or CBOW with negative sampling (Adam); return (model, mean loss per epoch).

    sentences: lists of word ids; counts: (V,) occurrences per id (for the noise distribution).
    Each epoch shuffles the examples and draws fresh noise words from `generator`.
    """
    if mode not in ("skipgram", "cbow"):
        raise ValueError(f"mode must be 'skipgram' or 'cbow', got {mode!r}")
    if epochs < 1 or batch_size < 1 or num_negatives < 1:
        raise ValueError("epochs, batch_size and num_negatives must be at least 1")
    device = torch.device("cpu") if device is None else torch.device(device)
    noise = noise_distribution(counts).to(device)
    if mode == "skipgram":
        inputs, targets = skipgram_pairs(sentences, window)
    else:
        inputs, targets = cbow_examples(sentences, window)
    inputs, targets = inputs.to(device), targets.to(device)
    model = Word2Vec(len(counts), embedding_dim, generator=generator).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = model.skipgram_loss if mode == "skipgram" else model.cbow_loss
    losses, n = [], len(targets)
    bar = tqdm(range(epochs), desc=mode, disable=not progress)
    for _ in bar:
        order = torch.randperm(n, generator=generator).to(device)
        negatives = torch.multinomial(noise.cpu(), n * num_negatives, replacement=True,
                                      generator=generator).view(n, num_negatives).to(device)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            loss = loss_fn(inputs[idx], targets[idx], negatives[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        losses.append(total / n)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return model, losses


# ------------------------------------------------------------------ using the vectors
def cosine_similarities(embeddings: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """cos(query, e_w) for every row e_w: embeddings (V, D), query (D,) -> (V,)."""
    if embeddings.dim() != 2 or query.shape != embeddings.shape[1:]:
        raise ValueError(f"expected embeddings (V, D) and query (D,), got {tuple(embeddings.shape)} and {tuple(query.shape)}")
    return F.normalize(embeddings, dim=1) @ F.normalize(query, dim=0)


def nearest_neighbours(embeddings: torch.Tensor, query: torch.Tensor, k: int = 5, exclude=()) -> list[tuple[int, float]]:
    """The k ids with the largest cosine similarity to `query` (a (D,) vector), best first,
    skipping the ids in `exclude`; returns [(id, cosine), ...]."""
    sims = cosine_similarities(embeddings, query).clone()
    if len(exclude):
        sims[torch.as_tensor(list(exclude), dtype=torch.long, device=sims.device)] = float("-inf")
    k = min(k, len(sims) - len(set(exclude)))
    values, ids = sims.topk(k)
    return list(zip(ids.tolist(), values.tolist()))


def analogy(embeddings: torch.Tensor, a: int, b: int, c: int, k: int = 1, exclude_query: bool = True):
    """a : b :: c : ?  by 3CosAdd: the words closest (cosine) to v_b - v_a + v_c.

    The three query words are excluded unless exclude_query=False (then the answer is often
    b or c itself). Returns [(id, cosine), ...] best first. Lecture 09, "Analogies".
    """
    e = F.normalize(embeddings, dim=1)
    target = e[b] - e[a] + e[c]
    return nearest_neighbours(embeddings, target, k, exclude=(a, b, c) if exclude_query else ())


def analogy_accuracy(embeddings: torch.Tensor, vocab: Vocabulary, questions, exclude_query: bool = True) -> float:
    """Share of questions (a, b, c, d) whose top answer to a : b :: c : ? is d.

    questions: a list of 4-tuples of words, or a dict of such lists (all are pooled)."""
    if isinstance(questions, dict):
        questions = [q for qs in questions.values() for q in qs]
    if not questions:
        raise ValueError("no questions to evaluate")
    correct = 0
    for a, b, c, d in questions:
        (best, _), = analogy(embeddings, vocab[a], vocab[b], vocab[c], k=1, exclude_query=exclude_query)
        correct += best == vocab[d]
    return correct / len(questions)


def pca_2d(embeddings: torch.Tensor) -> torch.Tensor:
    """Project (V, D) vectors onto their two principal directions -> (V, 2).

    Centre the rows, take the SVD X = U S V^T, return X V[:, :2]; each axis's sign is fixed
    so that its largest-magnitude coordinate is positive (so runs agree)."""
    if embeddings.dim() != 2 or embeddings.shape[1] < 2:
        raise ValueError(f"embeddings must be (V, D) with D >= 2, got {tuple(embeddings.shape)}")
    x = embeddings - embeddings.mean(dim=0)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    coords = x @ vh[:2].T
    signs = torch.sign(coords.gather(0, coords.abs().argmax(dim=0, keepdim=True)))
    return coords * signs


# ------------------------------------------------------------------ anything2vec: walks on a graph
def random_walks(triples, walks_per_node: int = 10, walk_length: int = 4,
                 generator: torch.Generator | None = None, relations: bool = True) -> list[list[str]]:
    """Turn a graph into sentences for word2vec (DeepWalk, graph2vec, RDF2Vec; deck 003's anything2vec).

    triples: (subject, predicate, object) edges, followed in both directions; from every node,
    `walks_per_node` walks of `walk_length` hops. With relations=True a walk reads like RDF2Vec's,
    node, predicate, node, ...; with False it lists nodes only. A node without edges gives a walk of
    itself alone. Lecture 09.

    >>> random_walks([("berlin", "capital_of", "germany")], walks_per_node=1, walk_length=1)
    [['berlin', 'capital_of', 'germany'], ['germany', 'capital_of', 'berlin']]
    """
    if walks_per_node < 1 or walk_length < 1:
        raise ValueError(f"walks_per_node and walk_length must be at least 1, got {walks_per_node}, {walk_length}")
    neighbours: dict[str, list[tuple[str, str]]] = {}
    for s, p, o in triples:
        neighbours.setdefault(s, []).append((p, o))
        neighbours.setdefault(o, []).append((p, s))
    walks = []
    for _ in range(walks_per_node):
        for start in neighbours:
            walk, node = [start], start
            for _ in range(walk_length):
                options = neighbours[node]
                if not options:
                    break
                p, node = options[int(torch.randint(len(options), (1,), generator=generator))]
                walk += [p, node] if relations else [node]
            walks.append(walk)
    return walks
