"""Attention and the transformer block (lecture 10, "Transformers, GPT and BERT").

Scaled dot-product attention mixes the rows of `v` with weights that say how well each
query matches each key:

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V,

where d_k is the size of one query/key vector and M is 0 where a query may look at a key and
-inf where it may not (padding, or the future in a causal language model). A query that may
look at no key at all gets zero weights and a zero output, as in
`torch.nn.functional.scaled_dot_product_attention` (a plain softmax of a row of -inf gives NaN,
and so does `torch.nn.MultiheadAttention`). Dividing by
sqrt(d_k) keeps the scores' variance near 1 when q and k have unit-variance entries, so the
softmax does not saturate as d_k grows.

Conventions follow PyTorch, so what is learned here transfers:

* `mask` is either boolean, True where attention is *allowed* (as `attn_mask` of
  `torch.nn.functional.scaled_dot_product_attention`; the opposite of `attn_mask` of
  `torch.nn.MultiheadAttention`, where True blocks), or a float tensor added to the scores;
* `causal=True` lets query i see keys 0..i only (torch's `is_causal`, a lower-triangular mask
  aligned at the top-left corner);
* `key_padding_mask` of `MultiHeadAttention` is True at the keys to *ignore* (as in
  `torch.nn.MultiheadAttention`): the opposite of BERT's `attention_mask`, where 1 marks a
  real token. `dlcourse.bert` converts between the two.

`MultiHeadAttention` and `TransformerBlock` have the parameter names of
`torch.nn.MultiheadAttention` and `torch.nn.TransformerEncoderLayer`, so a state dict loads
from one into the other (the tests do exactly that). `GPT` stacks causal blocks into a tiny
decoder-only language model and `sample` draws text from it with a temperature.
Everything runs on the device of its input.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


# -------------------------------------------------------------- scaled dot-product
def causal_mask(n_queries: int, n_keys: int | None = None, device=None) -> torch.Tensor:
    """Boolean (n_queries, n_keys) mask, True where query i may attend to key j: j <= i.

    >>> causal_mask(3).int()
    tensor([[1, 0, 0],
            [1, 1, 0],
            [1, 1, 1]], dtype=torch.int32)
    """
    n_keys = n_queries if n_keys is None else n_keys
    if n_queries < 1 or n_keys < 1:
        raise ValueError(f"n_queries and n_keys must be at least 1, got {n_queries} and {n_keys}")
    return torch.ones(n_queries, n_keys, dtype=torch.bool, device=device).tril()


def _check_qk(q, k, v=None) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() < 2:
            raise ValueError(f"{name} must have shape (..., length, features), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must have a floating-point dtype, got {t.dtype}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same feature size, got {q.shape[-1]} and {k.shape[-1]}")
    if v is not None and v.shape[-2] != k.shape[-2]:
        raise ValueError(f"k and v must have the same length, got {k.shape[-2]} and {v.shape[-2]}")


def attention_scores(q: torch.Tensor, k: torch.Tensor, mask=None, causal: bool = False) -> torch.Tensor:
    """The logits before the softmax: q k^T / sqrt(d_k), with -inf where attention is not allowed.

    q: (..., L, d_k), k: (..., S, d_k), mask broadcastable to (..., L, S) -> (..., L, S).
    """
    _check_qk(q, k)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        scores = scores.masked_fill(~causal_mask(q.shape[-2], k.shape[-2], device=q.device), float("-inf"))
    if mask is not None:
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"mask must be a torch.Tensor (bool or float), got {type(mask).__name__}")
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask.to(scores.dtype)
    return scores


def attention_weights(q: torch.Tensor, k: torch.Tensor, mask=None, causal: bool = False) -> torch.Tensor:
    """softmax(q k^T / sqrt(d_k) + M) along the keys: each row sums to 1, except the row of a
    query that may attend to no key, which is all zeros (as torch's SDPA treats it).

    q: (..., L, d_k), k: (..., S, d_k) -> (..., L, S). What the attention-map widget draws.
    """
    scores = attention_scores(q, k, mask, causal)
    blocked = torch.isneginf(scores).all(dim=-1, keepdim=True)    # a query with no key allowed
    return torch.softmax(scores.masked_fill(blocked, 0.0), dim=-1).masked_fill(blocked, 0.0)


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask=None,
                                 causal: bool = False) -> torch.Tensor:
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V.

    q: (..., L, d_k), k: (..., S, d_k), v: (..., S, d_v) -> (..., L, d_v).
    mask: bool (True = may attend) or float (added to the scores), broadcastable to (..., L, S);
    causal=True hides the future (key j > query i). Same result as
    `torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)`
    (torch accepts only one of the two at a time; here they combine), a query that may attend
    to no key included: its output is zero, as torch's.

    >>> q = torch.tensor([[1.0, 0.0]]); k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> scaled_dot_product_attention(q, k, torch.tensor([[10.0], [20.0]])).round(decimals=3)
    tensor([[13.3020]])
    """
    _check_qk(q, k, v)
    return attention_weights(q, k, mask, causal) @ v


# --------------------------------------------------------------------- multi-head
class MultiHeadAttention(nn.Module):
    """Multi-head attention with the parameters of `torch.nn.MultiheadAttention(batch_first=True)`.

    in_proj_weight (3E, E) stacks W_Q, W_K, W_V; out_proj is W_O. Each of the h heads attends
    in its own E/h-dimensional slice: head_i = Attention(X W_Q^i, X W_K^i, X W_V^i), and
    MultiHead(X) = [head_1; ...; head_h] W_O. Parameters: 4 E^2 + 4 E.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        factory = {"device": device, "dtype": dtype}
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **factory))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim, **factory)) if bias else None
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        nn.init.xavier_uniform_(self.in_proj_weight)
        if bias:
            nn.init.zeros_(self.out_proj.bias)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, E) -> (B, h, T, E/h)."""
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.embed_dim // self.num_heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor | None = None, value: torch.Tensor | None = None,
                mask=None, causal: bool = False, key_padding_mask=None):
        """query: (B, L, E); key, value: (B, S, E) (default: query, i.e. self-attention).

        mask: bool, True where a query *may attend* to a key (as in
        `F.scaled_dot_product_attention`; `nn.MultiheadAttention`'s `attn_mask` means the
        opposite, True = blocked, so pass `~mask` there), or float, added to the scores;
        broadcastable to (B, h, L, S). causal=True hides key j > query i.
        key_padding_mask: bool (B, S), True at keys to ignore (torch's convention).
        A query left with no key gets zero attention weights, so its output is out_proj's bias
        (`nn.MultiheadAttention` gives NaN there).
        Returns (out (B, L, E), weights (B, h, L, S)), the per-head attention weights.
        """
        key = query if key is None else key
        value = key if value is None else value
        if query.dim() != 3:
            raise ValueError(f"query must have shape (batch, length, embed_dim), got {tuple(query.shape)}")
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None,) * 3
        q = self._split(F.linear(query, w_q, b_q))
        k = self._split(F.linear(key, w_k, b_k))
        v = self._split(F.linear(value, w_v, b_v))
        if key_padding_mask is not None:
            keep = ~key_padding_mask.bool()[:, None, None, :]          # (B, 1, 1, S)
            mask = keep if mask is None else _combine_masks(mask, keep)
        weights = attention_weights(q, k, mask, causal)                  # (B, h, L, S)
        out = F.dropout(weights, self.dropout, training=self.training) @ v
        out = out.transpose(1, 2).reshape(query.shape[0], query.shape[1], self.embed_dim)
        return self.out_proj(out), weights


def _combine_masks(mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """An attention mask (bool: True = allowed, or float: added) and a boolean keep mask."""
    if mask.dtype == torch.bool:
        return mask & keep
    return mask + torch.zeros_like(keep, dtype=mask.dtype).masked_fill(~keep, float("-inf"))


# --------------------------------------------------------------- transformer block
class TransformerBlock(nn.Module):
    """A transformer encoder layer with the parameters of `torch.nn.TransformerEncoderLayer(batch_first=True)`.

    norm_first=False (BERT, the original transformer, "post-LN"):
        x = LayerNorm(x + SelfAttention(x));  x = LayerNorm(x + W_2 act(W_1 x + b_1) + b_2)
    norm_first=True (GPT-2 and later, "pre-LN"):
        x = x + SelfAttention(LayerNorm(x));  x = x + FFN(LayerNorm(x))
    x: (B, T, d_model) -> (B, T, d_model). Parameters: 4 d^2 + 4 d (attention)
    + 2 d d_ff + d_ff + d (feed-forward) + 4 d (two LayerNorms).
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float = 0.0,
                 activation: str = "gelu", norm_first: bool = False, layer_norm_eps: float = 1e-5,
                 device=None, dtype=None):
        super().__init__()
        if activation not in {"relu", "gelu"}:
            raise ValueError(f"activation must be 'relu' or 'gelu', got {activation!r}")
        factory = {"device": device, "dtype": dtype}
        self.self_attn = MultiHeadAttention(d_model, nhead, dropout=dropout, **factory)
        self.linear1 = nn.Linear(d_model, dim_feedforward, **factory)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, **factory)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, **factory)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, **factory)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.activation, self.norm_first = activation, norm_first

    def _attend(self, x, mask, causal, key_padding_mask):
        out, weights = self.self_attn(x, mask=mask, causal=causal, key_padding_mask=key_padding_mask)
        return self.dropout1(out), weights

    def _feed_forward(self, x):
        act = F.gelu if self.activation == "gelu" else F.relu
        return self.dropout2(self.linear2(self.dropout(act(self.linear1(x)))))

    def forward(self, x: torch.Tensor, mask=None, causal: bool = False, key_padding_mask=None,
                need_weights: bool = False):
        """x: (B, T, d_model) -> (B, T, d_model), or (that, weights (B, h, T, T)) with need_weights."""
        if self.norm_first:
            attended, weights = self._attend(self.norm1(x), mask, causal, key_padding_mask)
            x = x + attended
            x = x + self._feed_forward(self.norm2(x))
        else:
            attended, weights = self._attend(x, mask, causal, key_padding_mask)
            x = self.norm1(x + attended)
            x = self.norm2(x + self._feed_forward(x))
        return (x, weights) if need_weights else x


# ------------------------------------------------------------- a tiny GPT
class GPT(nn.Module):
    """A decoder-only (causal) language model: token + position embeddings, L pre-LN blocks with
    a causal mask, a final LayerNorm and a linear layer to next-token logits.

    h_0 = E[tokens] + P[positions];  h_l = transformer_block(h_{l-1}), l = 1..L;
    logits = LayerNorm(h_L) W^T (W tied to the token embedding, as in GPT-2).
    idx: (B, T) token ids, T <= block_size -> logits (B, T, vocab_size).
    """

    def __init__(self, vocab_size: int, block_size: int, d_model: int = 32, num_layers: int = 2,
                 nhead: int = 2, dim_feedforward: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.block_size = block_size
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(block_size, d_model)
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, nhead, dim_feedforward or 4 * d_model, dropout=dropout, norm_first=True)
            for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        for table in (self.token_embedding, self.position_embedding):
            nn.init.normal_(table.weight, std=0.02)      # GPT-2's initialisation: small logits at start

    def forward(self, idx: torch.Tensor, need_weights: bool = False):
        """idx: (B, T) -> logits (B, T, V); with need_weights also a list of (B, h, T, T) per layer."""
        if idx.dim() != 2 or idx.shape[1] > self.block_size:
            raise ValueError(f"idx must have shape (batch, T) with T <= block_size = {self.block_size}, got {tuple(idx.shape)}")
        positions = torch.arange(idx.shape[1], device=idx.device)
        h = self.token_embedding(idx) + self.position_embedding(positions)
        maps = []
        for block in self.blocks:
            h, weights = block(h, causal=True, need_weights=True)
            maps.append(weights)
        logits = self.norm(h) @ self.token_embedding.weight.T
        return (logits, maps) if need_weights else logits


@torch.no_grad()
def sample(model: GPT, prompt: torch.Tensor, num_tokens: int, temperature: float = 1.0,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Extend `prompt` (1-D ids) by `num_tokens` tokens, each drawn from softmax(logits / temperature).

    temperature -> 0 approaches greedy decoding (always the most likely token; temperature=0
    is exactly greedy); temperature > 1 flattens the distribution. Returns the 1-D ids,
    prompt included.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    was_training = model.training
    model.eval()
    ids = prompt.clone()
    for _ in range(num_tokens):
        logits = model(ids[-model.block_size:][None])[0, -1]
        if temperature == 0:
            nxt = logits.argmax().view(1)
        else:
            nxt = torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1, generator=generator)
        ids = torch.cat([ids, nxt])
    model.train(was_training)
    return ids


def train_gpt(model: GPT, tokens: torch.Tensor, *, steps: int, batch_size: int = 32, lr: float = 3e-3,
              generator: torch.Generator | None = None, progress: bool = True) -> list[float]:
    """Train on next-token prediction with Adam: random windows of `block_size + 1` tokens from the
    1-D `tokens`, inputs w[:-1], targets w[1:]. Returns the cross-entropy at every step."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be at least 1, got {steps} and {batch_size}")
    if tokens.dim() != 1 or len(tokens) <= model.block_size:
        raise ValueError(f"tokens must be 1-D and longer than block_size={model.block_size}, got {tuple(tokens.shape)}")
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    span = model.block_size + 1
    offsets = torch.arange(span)
    losses = []
    model.train()
    bar = tqdm(range(steps), desc="GPT training", disable=not progress)
    for step in bar:
        starts = torch.randint(len(tokens) - span + 1, (batch_size, 1), generator=generator)
        windows = tokens[starts + offsets].to(device)                    # (B, block_size + 1)
        logits = model(windows[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return losses
