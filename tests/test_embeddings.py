"""dlcourse.embeddings: the generated corpus, word2vec's training examples and loss, analogies.

Losses are compared with a direct torch formulation (F.logsigmoid, and binary cross-entropy
with logits) in float64 with ATOL = RTOL = 1e-10 (helpers.py): a few dozen products per value.
"""
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcourse import embeddings as E
from helpers import DEVICES, assert_matches_torch


pytestmark = pytest.mark.usefixtures("one_thread")


def randn(*shape, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(device)


@pytest.fixture(scope="module")
def corpus():
    return E.generate_corpus(1500, generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------ the corpus
def test_corpus_is_deterministic_for_a_seed():
    a = E.generate_corpus(200, generator=torch.Generator().manual_seed(7))
    b = E.generate_corpus(200, generator=torch.Generator().manual_seed(7))
    c = E.generate_corpus(200, generator=torch.Generator().manual_seed(8))
    assert a == b
    assert a.sentences != c.sentences


def test_every_word_has_a_tag_and_ambiguous_words_are_tagged_by_their_sense(corpus):
    for words, tags, sense in zip(corpus.sentences, corpus.tags, corpus.senses):
        assert len(words) == len(tags) and all(t in E.TAG_NAMES for t in tags)
        for w, t in zip(words, tags):
            if w == "stick":
                assert sense in ("stick/NOUN", "stick/VERB") and t == sense.split("/")[1]
            elif w == "bank":
                assert sense in ("bank/river", "bank/money") and t == "NOUN"
            else:
                assert t == E.TAGS[w], (w, t)


def test_people_sentences_carry_their_attributes(corpus):
    """A sentence about a person uses that person's pronoun, things, places and age words only."""
    attribute_words = {
        "gender": {g: set(p) for g, p in E.PRONOUNS.items()},
        "royal": {r: set(E.ROYAL_THINGS[r]) | set(E.ROYAL_PLACES[r]) for r in (True, False)},
        "young": {y: set(E.AGE_WORDS[y]) | set(E.AGE_VERBS[y]) for y in (True, False)},
    }
    checked = Counter()
    for words, sense in zip(corpus.sentences, corpus.senses):
        people = [w for w in words if w in E.PEOPLE]
        if sense is not None or not people:
            continue
        gender, royal, young = E.PEOPLE[people[0]]
        for name, value in (("gender", gender), ("royal", royal), ("young", young)):
            opposite = [v for v in attribute_words[name] if v != value][0]
            assert not set(words) & attribute_words[name][opposite], (name, words)
            checked[name] += bool(set(words) & attribute_words[name][value])
    assert min(checked.values()) > 100  # every attribute is actually shown, many times


def test_capitals_appear_with_their_own_country_and_language(corpus):
    capital_of = {cap: c for c, (cap, _) in E.COUNTRIES.items()}
    language_of = {c: lang for c, (_, lang) in E.COUNTRIES.items()}
    seen = 0
    for words in corpus.sentences:
        countries = [w for w in words if w in E.COUNTRIES]
        capitals = [w for w in words if w in capital_of]
        if countries and capitals:
            assert capital_of[capitals[0]] == countries[0], words
            seen += 1
        languages = [w for w in words if w in {lang for _, lang in E.COUNTRIES.values()}]
        for place in countries + [capital_of[c] for c in capitals]:
            for lang in languages:
                assert lang == language_of[place], words
    assert seen > 50


def test_shares_of_sentence_kinds(corpus):
    n = len(corpus.senses)
    ambiguous = sum(s is not None for s in corpus.senses)
    # binomial(1500, 0.1): mean 150, sd 11.6; [100, 200] is more than 4 sd either way
    assert 100 <= ambiguous <= 200
    assert Counter(s.split("/")[0] for s in corpus.senses if s) .keys() == {"stick", "bank"}
    assert n == 1500


def test_generate_corpus_errors():
    with pytest.raises(ValueError, match="num_sentences must be a positive int, got 0"):
        E.generate_corpus(0)
    with pytest.raises(ValueError, match=r"ambiguous_share must be in \[0, 1\]"):
        E.generate_corpus(3, ambiguous_share=1.5)


def attribute_embeddings(vocab):
    """Ideal vectors built from the corpus's attributes: one dimension per attribute value,
    plus an identity dimension per country/capital/language triple and per word."""
    feats = ["male", "female", "royal", "common", "young", "adult", "country", "city", "language",
             *E.COUNTRIES, *vocab.itos]
    index = {f: i for i, f in enumerate(feats)}
    vectors = torch.zeros(len(vocab), len(feats), dtype=torch.float64)
    for w, i in vocab.stoi.items():
        vectors[i, index[w]] = 0.1  # a small identity part keeps the words apart
        if w in E.PEOPLE:
            g, r, y = E.PEOPLE[w]
            for f in (g, "royal" if r else "common", "young" if y else "adult"):
                vectors[i, index[f]] = 1.0
    for c, (cap, lang) in E.COUNTRIES.items():
        for w, kind in ((c, "country"), (cap, "city"), (lang, "language")):
            vectors[vocab[w], index[c]] = 1.0
            vectors[vocab[w], index[kind]] = 1.0
    return vectors


def test_analogy_questions_hold_in_the_attribute_space(corpus):
    vocab = E.Vocabulary.from_sentences(corpus.sentences)
    questions = E.analogy_questions()
    assert set(questions) == {"gender", "royalty", "age", "capital", "language"}
    assert ("man", "woman", "king", "queen") in questions["gender"]
    assert ("france", "paris", "italy", "rome") in questions["capital"]
    assert len(questions["gender"]) == 4 * 3 and len(questions["capital"]) == 8 * 7
    ideal = attribute_embeddings(vocab)
    for name, qs in questions.items():
        assert E.analogy_accuracy(ideal, vocab, qs) == 1.0, name


# ------------------------------------------------------------------ vocabulary
def test_vocabulary_orders_by_count_then_alphabet():
    vocab = E.Vocabulary.from_sentences([["b", "a", "c"], ["c", "b"], ["c"]])
    assert vocab.itos == ["c", "b", "a"] and vocab.counts.tolist() == [3, 2, 1]
    assert vocab.encode("a c") == [2, 0]
    with pytest.raises(KeyError, match="'z' is not in the vocabulary of 3 words"):
        vocab["z"]


# ------------------------------------------------------------------ training examples
def test_skipgram_pairs_example():
    centers, contexts = E.skipgram_pairs([[10, 11, 12, 13], [20, 21]], window=2)
    pairs = list(zip(centers.tolist(), contexts.tolist()))
    assert pairs == [(10, 11), (10, 12),
                     (11, 10), (11, 12), (11, 13),
                     (12, 10), (12, 11), (12, 13),
                     (13, 11), (13, 12),
                     (20, 21), (21, 20)]  # never across the two sentences
    assert centers.dtype == contexts.dtype == torch.long


def test_cbow_example():
    contexts, targets = E.cbow_examples([[10, 11, 12, 13], [5]], window=2)
    assert targets.tolist() == [10, 11, 12, 13]  # the one-word sentence has no context
    assert contexts.tolist() == [[11, 12, -1, -1], [10, 12, 13, -1], [10, 11, 13, -1], [11, 12, -1, -1]]


sentence_lists = st.lists(st.integers(1, 9), min_size=1, max_size=4)


@given(lengths=sentence_lists, window=st.integers(1, 4))
@settings(max_examples=40, deadline=None)
def test_pairs_are_exactly_the_words_within_the_window(lengths, window):
    # distinct ids per position, so every id tells its sentence and position
    sentences, start = [], 0
    for n in lengths:
        sentences.append(list(range(start, start + n)))
        start += n + 100
    where = {w: (k, i) for k, s in enumerate(sentences) for i, w in enumerate(s)}
    expected = Counter((s[i], s[j]) for s in sentences for i in range(len(s)) for j in range(len(s))
                       if 0 < abs(i - j) <= window)
    centers, contexts = E.skipgram_pairs(sentences, window)
    got = Counter(zip(centers.tolist(), contexts.tolist()))
    assert got == expected
    assert len(centers) == sum(min(i, window) + min(n - 1 - i, window) for n in lengths for i in range(n))
    for c, o in got:
        assert where[c][0] == where[o][0]  # same sentence
    # CBOW sees the same (word, context) relation, grouped by the predicted word
    ctx, targets = E.cbow_examples(sentences, window)
    from_cbow = Counter((t, o) for t, row in zip(targets.tolist(), ctx.tolist()) for o in row if o != -1)
    assert from_cbow == expected
    assert ctx.shape == (len(targets), 2 * window)
    assert len(targets) == sum(n for n in lengths if n > 1)


def test_window_errors():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="window must be a positive int"):
            E.skipgram_pairs([[1, 2]], bad)
        with pytest.raises(ValueError, match="window must be a positive int"):
            E.cbow_examples([[1, 2]], bad)


# ------------------------------------------------------------------ noise and loss
def test_noise_distribution():
    counts = torch.tensor([16, 1, 0, 81])
    p = E.noise_distribution(counts)
    expected = torch.tensor([8.0, 1.0, 0.0, 27.0], dtype=torch.float64) / 36  # 16^0.75 = 8, 81^0.75 = 27
    assert_matches_torch(p, expected)
    assert_matches_torch(E.noise_distribution(counts, power=1.0), counts.double() / 98)
    with pytest.raises(ValueError, match="non-negative counts with a positive sum"):
        E.noise_distribution(torch.tensor([0, 0]))


def direct_loss(center, context, negatives):
    """The textbook formula, term by term, with F.logsigmoid."""
    positive = F.logsigmoid((center * context).sum(-1))
    negative = F.logsigmoid(-(negatives @ center.unsqueeze(-1)).squeeze(-1)).sum(-1)
    return -(positive + negative)


@pytest.mark.parametrize("device", DEVICES)
@given(n=st.integers(1, 7), k=st.integers(1, 6), d=st.integers(1, 9), scale=st.floats(0.1, 5.0),
       seed=st.integers(0, 2**16))
@settings(max_examples=30, deadline=None)
def test_negative_sampling_loss_matches_logsigmoid(device, n, k, d, scale, seed):
    center, context = randn(n, d, device=device, seed=seed) * scale, randn(n, d, device=device, seed=seed + 1)
    negatives = randn(n, k, d, device=device, seed=seed + 2)
    expected = direct_loss(center, context, negatives)
    assert_matches_torch(E.negative_sampling_loss(center, context, negatives, reduction="none"), expected)
    assert_matches_torch(E.negative_sampling_loss(center, context, negatives), expected.mean())
    assert_matches_torch(E.negative_sampling_loss(center, context, negatives, reduction="sum"), expected.sum())
    # the same loss as binary cross-entropy: label 1 for the true pair, 0 for the noise words
    logits = torch.cat([(center * context).sum(-1, keepdim=True), (negatives @ center.unsqueeze(-1)).squeeze(-1)], dim=1)
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1
    bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").sum(dim=1)
    assert_matches_torch(E.negative_sampling_loss(center, context, negatives, reduction="none"), bce)


def test_negative_sampling_loss_is_finite_for_huge_scores():
    center = torch.tensor([[100.0, 0.0]], dtype=torch.float64)
    context = torch.tensor([[-10.0, 0.0]], dtype=torch.float64)  # score -1000: loss 1000, not inf
    negatives = torch.tensor([[[10.0, 0.0]]], dtype=torch.float64)
    loss = E.negative_sampling_loss(center, context, negatives)
    assert torch.isfinite(loss) and abs(float(loss) - 2000.0) < 1e-9


def test_negative_sampling_loss_errors():
    with pytest.raises(ValueError, match=r"center and context must both be \(N, D\)"):
        E.negative_sampling_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 1, 3))
    with pytest.raises(ValueError, match=r"negatives must be \(N, K, D\) = \(2, K, 3\)"):
        E.negative_sampling_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="reduction must be"):
        E.negative_sampling_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 1, 3), reduction="avg")


@pytest.mark.parametrize("device", DEVICES)
def test_model_losses_match_the_direct_formula(device):
    g = torch.Generator().manual_seed(3)
    model = E.Word2Vec(12, 5, generator=g).double().to(device)
    with torch.no_grad():
        model.outputs.copy_(randn(12, 5, device=device, seed=4))
    centers, contexts = torch.tensor([0, 3, 7], device=device), torch.tensor([1, 1, 11], device=device)
    negatives = torch.tensor([[2, 5], [4, 4], [0, 9]], device=device)
    v, u = model.inputs, model.outputs
    assert_matches_torch(model.skipgram_loss(centers, contexts, negatives),
                         direct_loss(v[centers], u[contexts], u[negatives]).mean())
    ctx = torch.tensor([[1, 2, -1, -1], [0, 4, 5, 6], [3, -1, -1, -1]], device=device)
    mean = torch.stack([v[[1, 2]].mean(0), v[[0, 4, 5, 6]].mean(0), v[[3]].mean(0)])
    assert_matches_torch(model.cbow_loss(ctx, contexts, negatives), direct_loss(mean, u[contexts], u[negatives]).mean())


# ------------------------------------------------------------------ analogies and neighbours
def test_analogy_excludes_the_query_words():
    vocab = E.Vocabulary(["a", "b", "c", "d", "e"], torch.ones(5, dtype=torch.long))
    vectors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.1, 0.0], [0.0, 1.0, 0.6], [0.0, 0.0, 1.0]],
                           dtype=torch.float64)
    # b - a + c is almost b itself: only the exclusion makes d the answer
    assert E.analogy(vectors, 0, 1, 2, exclude_query=False)[0][0] == 1
    assert E.analogy(vectors, 0, 1, 2)[0][0] == 3
    assert E.analogy_accuracy(vectors, vocab, [("a", "b", "c", "d")]) == 1.0
    assert E.analogy_accuracy(vectors, vocab, {"x": [("a", "b", "c", "d")]}, exclude_query=False) == 0.0


@given(v=st.integers(4, 12), d=st.integers(2, 6), seed=st.integers(0, 2**16), k=st.integers(1, 4),
       abc=st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)))
@settings(max_examples=40, deadline=None)
def test_analogy_never_answers_a_query_word_and_matches_brute_force(v, d, seed, k, abc):
    vectors = randn(v, d, seed=seed)
    a, b, c = abc
    answers = E.analogy(vectors, a, b, c, k=k)
    assert not {i for i, _ in answers} & {a, b, c}
    e = F.normalize(vectors, dim=1)
    target = e[b] - e[a] + e[c]
    sims = F.cosine_similarity(vectors, target.unsqueeze(0), dim=1)
    allowed = [i for i in range(v) if i not in (a, b, c)]
    best = max(allowed, key=lambda i: float(sims[i]))
    assert abs(answers[0][1] - float(sims[best])) < 1e-12
    assert len(answers) == min(k, len(allowed))


@pytest.mark.parametrize("device", DEVICES)
def test_nearest_neighbours_matches_torch_cosine(device):
    vectors, query = randn(20, 6, device=device), randn(6, device=device, seed=1)
    expected = F.cosine_similarity(vectors, query.unsqueeze(0), dim=1)
    assert_matches_torch(E.cosine_similarities(vectors, query), expected)
    got = E.nearest_neighbours(vectors, query, k=4, exclude=[int(expected.argmax())])
    order = expected.argsort(descending=True).tolist()
    assert [i for i, _ in got] == order[1:5]
    with pytest.raises(ValueError, match=r"expected embeddings \(V, D\) and query \(D,\)"):
        E.cosine_similarities(vectors, query[:3])


def test_pca_2d_matches_sklearn_up_to_sign():
    from sklearn.decomposition import PCA

    x = randn(30, 7) * torch.tensor([5.0, 3.0, 1.0, 1.0, 0.5, 0.2, 0.1], dtype=torch.float64)
    ours = E.pca_2d(x)
    theirs = torch.from_numpy(PCA(n_components=2).fit_transform(x.numpy()))
    signs = torch.sign((ours * theirs).sum(dim=0))
    assert_matches_torch(ours, theirs * signs, atol=1e-9, rtol=1e-9)
    assert (ours.abs().argmax(dim=0) == ours.argmax(dim=0)).all()  # each axis's extreme point is positive


# ------------------------------------------------------------------ training
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["skipgram", "cbow"])
def test_training_is_reproducible_and_the_loss_falls(device, mode):
    corpus = E.generate_corpus(300, generator=torch.Generator().manual_seed(1))
    vocab = E.Vocabulary.from_sentences(corpus.sentences)
    ids = [vocab.encode(s) for s in corpus.sentences]
    runs = [E.train_word2vec(ids, vocab.counts, mode=mode, epochs=3, batch_size=256, lr=0.03, device=device,
                             generator=torch.Generator().manual_seed(2), progress=False) for _ in range(2)]
    (m1, losses1), (m2, losses2) = runs
    assert losses1 == losses2 and torch.equal(m1.embeddings(), m2.embeddings())
    assert m1.embeddings().device.type == torch.device(device).type
    assert losses1[-1] < losses1[0]


def test_train_errors():
    with pytest.raises(ValueError, match="mode must be 'skipgram' or 'cbow'"):
        E.train_word2vec([[0, 1]], torch.tensor([1, 1]), mode="glove")


# ------------------------------------------------------------------ anything2vec: random walks
def test_random_walks_follow_edges_both_ways():
    triples = [("a", "knows", "b"), ("b", "knows", "c"), ("c", "likes", "d")]
    edges = {(s, p, o) for s, p, o in triples} | {(o, p, s) for s, p, o in triples}
    walks = E.random_walks(triples, walks_per_node=5, walk_length=3, generator=torch.Generator().manual_seed(0))
    assert len(walks) == 5 * 4 and {w[0] for w in walks} == {"a", "b", "c", "d"}
    for w in walks:
        assert len(w) == 1 + 2 * 3
        assert all((w[i], w[i + 1], w[i + 2]) in edges for i in range(0, len(w) - 2, 2))
    nodes_only = E.random_walks(triples, 2, 3, generator=torch.Generator().manual_seed(0), relations=False)
    assert all(len(w) == 4 and not {"knows", "likes"} & set(w) for w in nodes_only)
    again = E.random_walks(triples, 5, 3, generator=torch.Generator().manual_seed(0))
    assert again == walks
    with pytest.raises(ValueError):
        E.random_walks(triples, walks_per_node=0)
