"""BERT's pre-training inputs, its size, and a tiny BERT (lecture 10, "BERT").

BERT (Devlin et al., 2019) learns from unlabeled text with two tasks:

* **masked language modelling**: 15% of the (non-special) tokens are selected; of those
  80% are replaced by [MASK], 10% by a random token and 10% are left unchanged, and the model
  must predict the original token at every selected position (`mask_tokens`);
* **next-sentence prediction**: the input is "[CLS] A [SEP] B [SEP]"; half of the time B is
  the sentence that follows A, half of the time a random sentence from another document
  (`make_nsp_pairs`, `encode_pair`).

`bert_parameter_count` counts the weights of the standard architecture from its
configuration; `Bert` is the same architecture at toy size with the two pre-training heads,
built from `dlcourse.attention.TransformerBlock`.

Conventions (Hugging Face's `BertForPreTraining`, whose names we use): labels are -100 where
no prediction is made (`torch.nn.functional.cross_entropy`'s default `ignore_index`; Google's
released BERT code instead lists the masked positions, their original ids and a weight per
position, `masked_lm_positions`, `masked_lm_ids`, `masked_lm_weights`); `attention_mask` is 1 at
real tokens and 0 at padding (Google's `input_mask`); `token_type_ids` (Google's `segment_ids`)
are 0 for "[CLS] A [SEP]" and 1 for "B [SEP]". Our next-sentence label is 1 when B follows A
(Hugging Face's `BertForPreTraining` uses 0 for that).
Random draws come only from the `generator` passed in, on the input's device.
"""
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from dlcourse.attention import TransformerBlock

IGNORE_INDEX = -100
IS_NEXT, NOT_NEXT = 1, 0


# ------------------------------------------------------------------- masking
def mask_tokens(input_ids: torch.Tensor, *, mask_token_id: int, vocab_size: int, special_ids,
                mlm_probability: float = 0.15, generator: torch.Generator | None = None):
    """BERT's masked-language-model corruption. Returns (inputs, labels), both shaped like input_ids.

    Every token whose id is not in `special_ids` (nor `mask_token_id`) is selected independently
    with probability `mlm_probability`. A selected token becomes [MASK] with probability 0.8, a
    random token with probability 0.1 (uniform over the ids in [0, vocab_size) that are not
    special), and stays unchanged with probability 0.1. labels[i] is input_ids[i] where a token
    was selected and -100 elsewhere. `input_ids` itself is not modified.

    Special tokens ([CLS], [SEP], [PAD], ...) are never selected: they carry no word to predict,
    and predicting padding would teach nothing.

    >>> ids = torch.tensor([[1, 7, 8, 9, 2, 0]])
    >>> inputs, labels = mask_tokens(ids, mask_token_id=3, vocab_size=10, special_ids=[0, 1, 2, 3],
    ...                              mlm_probability=1.0, generator=torch.Generator().manual_seed(0))
    >>> labels
    tensor([[-100,    7,    8,    9, -100, -100]])
    """
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"input_ids must be a torch.Tensor of token ids, got {type(input_ids).__name__}")
    if input_ids.is_floating_point() or input_ids.dtype == torch.bool:
        raise TypeError(f"input_ids must have an integer dtype, got {input_ids.dtype}")
    if isinstance(mlm_probability, bool) or not 0.0 <= mlm_probability <= 1.0:
        raise ValueError(f"mlm_probability must be in [0, 1], got {mlm_probability}")
    device = input_ids.device
    special = torch.tensor(sorted({int(i) for i in special_ids} | {int(mask_token_id)}), device=device)
    allowed = torch.arange(vocab_size, device=device)
    allowed = allowed[~torch.isin(allowed, special)]
    if len(allowed) == 0:
        raise ValueError(f"every id in [0, {vocab_size}) is special: there is no token to draw at random")

    selected = ~torch.isin(input_ids, special)
    selected &= torch.rand(input_ids.shape, generator=generator, device=device) < mlm_probability
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))

    action = torch.rand(input_ids.shape, generator=generator, device=device)
    to_mask = selected & (action < 0.8)
    to_random = selected & (action >= 0.8) & (action < 0.9)     # the last 10% stay unchanged
    random_ids = allowed[torch.randint(len(allowed), input_ids.shape, generator=generator, device=device)]

    inputs = input_ids.clone()
    inputs[to_mask] = mask_token_id
    inputs[to_random] = random_ids[to_random].to(inputs.dtype)
    return inputs, labels


# ---------------------------------------------------------- next-sentence pairs
def make_nsp_pairs(documents, generator: torch.Generator | None = None) -> list[tuple]:
    """Sentence pairs (A, B, label) for next-sentence prediction, as BERT builds them.

    For every sentence A that has a successor in its document: with probability 1/2 B is that
    successor (label IS_NEXT = 1), otherwise B is a sentence drawn uniformly from a *different*
    document (label NOT_NEXT = 0). documents: a list (at least 2) of lists of sentences
    (any objects: word lists, id lists). Returns one pair per consecutive sentence pair.
    """
    documents = list(documents)
    if len(documents) < 2:
        raise ValueError(f"make_nsp_pairs needs at least 2 documents (B may come from another one), got {len(documents)}")
    pairs = []
    for d, doc in enumerate(documents):
        for i in range(len(doc) - 1):
            if torch.rand((), generator=generator).item() < 0.5:
                pairs.append((doc[i], doc[i + 1], IS_NEXT))
                continue
            other = torch.randint(len(documents) - 1, (), generator=generator).item()
            other += other >= d                                   # skip document d itself
            sentences = documents[other]
            j = torch.randint(len(sentences), (), generator=generator).item()
            pairs.append((doc[i], sentences[j], NOT_NEXT))
    return pairs


def encode_pair(a_ids, b_ids, *, cls_id: int, sep_id: int, pad_id: int = 0, max_length: int | None = None):
    """"[CLS] A [SEP] B [SEP]" padded to max_length. Returns (input_ids, token_type_ids, attention_mask).

    token_type_ids: 0 for [CLS], A and the first [SEP]; 1 for B and the final [SEP]; 0 at padding.
    attention_mask: 1 at the 3 + len(A) + len(B) real tokens, 0 at padding.
    All three are 1-D int64 tensors of length max_length (default: no padding).

    >>> encode_pair([7, 8], [9], cls_id=1, sep_id=2, max_length=8)
    (tensor([1, 7, 8, 2, 9, 2, 0, 0]), tensor([0, 0, 0, 0, 1, 1, 0, 0]), tensor([1, 1, 1, 1, 1, 1, 0, 0]))
    """
    a = [int(t) for t in a_ids]
    b = [int(t) for t in b_ids]
    ids = [cls_id] + a + [sep_id] + b + [sep_id]
    n = len(ids)
    max_length = n if max_length is None else max_length
    if n > max_length:
        raise ValueError(f"the pair needs {n} tokens ([CLS] A [SEP] B [SEP]) but max_length is {max_length}")
    pad = max_length - n
    input_ids = torch.tensor(ids + [pad_id] * pad)
    token_type_ids = torch.tensor([0] * (len(a) + 2) + [1] * (len(b) + 1) + [0] * pad)
    attention_mask = torch.tensor([1] * n + [0] * pad)
    return input_ids, token_type_ids, attention_mask


def pretraining_batch(pairs, vocab, *, max_length: int, mlm_probability: float = 0.15,
                      generator: torch.Generator | None = None) -> dict:
    """Stack (A words, B words, label) pairs into one masked batch for `Bert`.

    vocab: a `dlcourse.corpus.Vocab`. Returns a dict of (B, max_length) tensors input_ids,
    token_type_ids, attention_mask, labels (-100 where nothing is predicted) and the (B,)
    next_sentence_label.
    """
    rows = [encode_pair(vocab.encode(a), vocab.encode(b), cls_id=vocab["[CLS]"], sep_id=vocab["[SEP]"],
                        pad_id=vocab["[PAD]"], max_length=max_length) for a, b, _ in pairs]
    input_ids, token_type_ids, attention_mask = (torch.stack(cols) for cols in zip(*rows))
    inputs, labels = mask_tokens(input_ids, mask_token_id=vocab["[MASK]"], vocab_size=len(vocab),
                                 special_ids=vocab.special_ids, mlm_probability=mlm_probability,
                                 generator=generator)
    return {"input_ids": inputs, "token_type_ids": token_type_ids, "attention_mask": attention_mask,
            "labels": labels, "next_sentence_label": torch.tensor([label for _, _, label in pairs])}


# ------------------------------------------------------------ parameter count
def bert_parameter_count(vocab_size: int, hidden_size: int, num_layers: int, intermediate_size: int,
                         max_position: int = 512, type_vocab_size: int = 2, pooler: bool = True) -> int:
    """Weights and biases of the standard BERT encoder (no pre-training heads).

    embeddings: (V + P + T) h            token, position and segment tables
                + 2 h                    their LayerNorm (gain and bias)
    per layer:  4 (h^2 + h)              W_Q, W_K, W_V, W_O with biases
                + 2 h                    LayerNorm after attention
                + 2 h i + i + h          feed-forward h -> i -> h with biases
                + 2 h                    LayerNorm after the feed-forward
    pooler:     h^2 + h                  dense layer on [CLS] (then tanh)

    The number of heads does not matter: the heads split h, they add no weights.
    BERT-base (V=30522, h=768, L=12, i=3072) has 109,482,240; the paper rounds to 110M.

    >>> bert_parameter_count(30522, 768, 12, 3072)
    109482240
    """
    for name, value in (("vocab_size", vocab_size), ("hidden_size", hidden_size), ("num_layers", num_layers),
                        ("intermediate_size", intermediate_size), ("max_position", max_position),
                        ("type_vocab_size", type_vocab_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    h, i = hidden_size, intermediate_size
    embeddings = (vocab_size + max_position + type_vocab_size) * h + 2 * h
    layer = 4 * (h * h + h) + 2 * h + (2 * h * i + i + h) + 2 * h
    return embeddings + num_layers * layer + (h * h + h if pooler else 0)


# ------------------------------------------------------------------ a tiny BERT
class Bert(nn.Module):
    """BERT at any size: embeddings + LayerNorm, post-LN GELU transformer blocks, a pooler, and the
    two pre-training heads (masked LM, tied to the token embedding, and next-sentence prediction).

    input_ids, token_type_ids, attention_mask: (B, T) -> (mlm_logits (B, T, V), nsp_logits (B, 2)).
    The encoder without the heads has exactly `bert_parameter_count(...)` parameters.
    """

    def __init__(self, vocab_size: int, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 2,
                 intermediate_size: int | None = None, max_position: int = 64, type_vocab_size: int = 2,
                 dropout: float = 0.0):
        super().__init__()
        h = hidden_size
        self.word_embeddings = nn.Embedding(vocab_size, h)
        self.position_embeddings = nn.Embedding(max_position, h)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, h)
        self.embedding_norm = nn.LayerNorm(h, eps=1e-12)
        self.layers = nn.ModuleList(
            TransformerBlock(h, num_heads, intermediate_size or 4 * h, dropout=dropout, activation="gelu",
                             layer_norm_eps=1e-12) for _ in range(num_layers))
        self.pooler = nn.Linear(h, h)
        self.mlm_head = nn.ModuleDict({"transform": nn.Linear(h, h), "norm": nn.LayerNorm(h, eps=1e-12)})
        self.mlm_bias = nn.Parameter(torch.zeros(vocab_size))
        self.nsp_head = nn.Linear(h, 2)
        for table in (self.word_embeddings, self.position_embeddings, self.token_type_embeddings):
            nn.init.normal_(table.weight, std=0.02)      # BERT's initializer_range

    def encoder_parameter_count(self) -> int:
        """Parameters without the pre-training heads: what `bert_parameter_count` counts."""
        heads = {"mlm_bias"}
        return sum(p.numel() for name, p in self.named_parameters()
                   if name.split(".")[0] not in heads | {"mlm_head", "nsp_head"})

    def encode(self, input_ids, token_type_ids=None, attention_mask=None, need_weights: bool = False):
        """Hidden states (B, T, h); with need_weights also the attention maps, one (B, heads, T, T) per layer."""
        t = input_ids.shape[1]
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        positions = torch.arange(t, device=input_ids.device)
        x = self.embedding_norm(self.word_embeddings(input_ids) + self.position_embeddings(positions)
                                + self.token_type_embeddings(token_type_ids))
        padding = None if attention_mask is None else attention_mask == 0   # torch: True = ignore
        maps = []
        for layer in self.layers:
            x, weights = layer(x, key_padding_mask=padding, need_weights=True)
            maps.append(weights)
        return (x, maps) if need_weights else x

    def forward(self, input_ids, token_type_ids=None, attention_mask=None):
        hidden = self.encode(input_ids, token_type_ids, attention_mask)
        pooled = torch.tanh(self.pooler(hidden[:, 0]))                        # [CLS]
        z = self.mlm_head["norm"](F.gelu(self.mlm_head["transform"](hidden)))
        mlm_logits = z @ self.word_embeddings.weight.T + self.mlm_bias
        return mlm_logits, self.nsp_head(pooled)


def pretraining_loss(mlm_logits, labels, nsp_logits, next_sentence_label):
    """(MLM cross-entropy over the selected positions, NSP cross-entropy); BERT minimises their sum."""
    mlm = F.cross_entropy(mlm_logits.reshape(-1, mlm_logits.shape[-1]), labels.reshape(-1),
                          ignore_index=IGNORE_INDEX)
    return mlm, F.cross_entropy(nsp_logits, next_sentence_label)


def train_bert(model: Bert, documents, vocab, *, steps: int, batch_size: int = 32, max_length: int = 24,
               lr: float = 3e-3, generator: torch.Generator | None = None, progress: bool = True) -> dict:
    """Pre-train with Adam on fresh NSP pairs and fresh masks at every step.

    Returns {"mlm": [...], "nsp": [...]}: the two losses at every step.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be at least 1, got {steps} and {batch_size}")
    device = next(model.parameters()).device
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = {"mlm": [], "nsp": []}
    pairs = make_nsp_pairs(documents, generator=generator)
    model.train()
    bar = tqdm(range(steps), desc="BERT pre-training", disable=not progress)
    for step in bar:
        pick = torch.randint(len(pairs), (batch_size,), generator=generator).tolist()
        batch = pretraining_batch([pairs[i] for i in pick], vocab, max_length=max_length, generator=generator)
        batch = {k: v.to(device) for k, v in batch.items()}
        mlm_logits, nsp_logits = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
        mlm, nsp = pretraining_loss(mlm_logits, batch["labels"], nsp_logits, batch["next_sentence_label"])
        optimizer.zero_grad()
        (mlm + nsp).backward()
        optimizer.step()
        history["mlm"].append(mlm.item())
        history["nsp"].append(nsp.item())
        if step % 20 == 0:
            bar.set_postfix(mlm=f"{mlm.item():.3f}", nsp=f"{nsp.item():.3f}")
        if (step + 1) % max(1, len(pairs) // batch_size) == 0:
            pairs = make_nsp_pairs(documents, generator=generator)   # new random B sentences
    return history
