"""dlcourse.attention against torch: F.scaled_dot_product_attention, nn.MultiheadAttention and
nn.TransformerEncoderLayer, in float64 (ATOL = RTOL = 1e-10 from helpers.py: a few hundred
products and one softmax per entry)."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dlcourse import attention as A
from helpers import DEVICES, assert_matches_torch


def randn(*shape, gen, device):
    return torch.randn(*shape, dtype=torch.float64, generator=gen).to(device)


# ------------------------------------------------------------------ scaled dot-product
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch, length, keys, d_k, d_v", [((), 1, 1, 1, 1), ((2,), 5, 5, 8, 3),
                                                           ((3, 2), 4, 7, 6, 5), ((1,), 9, 3, 16, 16)])
def test_matches_torch_without_mask(device, batch, length, keys, d_k, d_v):
    gen = torch.Generator().manual_seed(length * 100 + keys)
    q, k, v = randn(*batch, length, d_k, gen=gen, device=device), randn(*batch, keys, d_k, gen=gen, device=device), \
        randn(*batch, keys, d_v, gen=gen, device=device)
    assert_matches_torch(A.scaled_dot_product_attention(q, k, v), F.scaled_dot_product_attention(q, k, v))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("length, keys", [(1, 1), (6, 6), (4, 7), (5, 5)])
def test_matches_torch_causal(device, length, keys):
    gen = torch.Generator().manual_seed(keys)
    q, k, v = randn(2, 3, length, 4, gen=gen, device=device), randn(2, 3, keys, 4, gen=gen, device=device), \
        randn(2, 3, keys, 5, gen=gen, device=device)
    ours = A.scaled_dot_product_attention(q, k, v, causal=True)
    assert_matches_torch(ours, F.scaled_dot_product_attention(q, k, v, is_causal=True), what="causal")
    # and the same as an explicit boolean mask (True = may attend)
    mask = A.causal_mask(length, keys, device=device)
    assert_matches_torch(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), what="explicit mask")


@pytest.mark.parametrize("device", DEVICES)
def test_matches_torch_with_bool_and_float_masks(device):
    gen = torch.Generator().manual_seed(3)
    q, k, v = randn(2, 4, 6, gen=gen, device=device), randn(2, 5, 6, gen=gen, device=device), \
        randn(2, 5, 3, gen=gen, device=device)
    bool_mask = torch.rand(2, 4, 5, generator=gen).to(device) < 0.7
    bool_mask[..., 0] = True                                   # every query sees at least one key
    assert_matches_torch(A.scaled_dot_product_attention(q, k, v, mask=bool_mask),
                         F.scaled_dot_product_attention(q, k, v, attn_mask=bool_mask), what="bool mask")
    float_mask = randn(4, 5, gen=gen, device=device)          # broadcast over the batch
    assert_matches_torch(A.scaled_dot_product_attention(q, k, v, mask=float_mask),
                         F.scaled_dot_product_attention(q, k, v, attn_mask=float_mask), what="float mask")


@pytest.mark.parametrize("device", DEVICES)
def test_a_query_with_no_allowed_key_gets_zero_as_in_torch(device):
    """torch's scaled_dot_product_attention gives a zero output (and we zero weights) where a
    query may attend to no key at all; a plain softmax over -inf would give NaN."""
    gen = torch.Generator().manual_seed(4)
    q, k, v = randn(2, 4, 6, gen=gen, device=device), randn(2, 5, 6, gen=gen, device=device), \
        randn(2, 5, 3, gen=gen, device=device)
    bool_mask = torch.rand(2, 4, 5, generator=gen).to(device) < 0.7
    bool_mask[..., 0] = True
    bool_mask[0, 1] = False                                     # query 1 of batch 0 sees no key
    bool_mask[1, 3] = False
    float_mask = torch.zeros(2, 4, 5, dtype=torch.float64, device=device).masked_fill(~bool_mask, float("-inf"))
    for mask in (bool_mask, float_mask):
        ours = A.scaled_dot_product_attention(q, k, v, mask=mask)
        assert_matches_torch(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), what=f"{mask.dtype} mask")
    weights = A.attention_weights(q, k, mask=bool_mask)
    assert (weights[0, 1] == 0).all() and (weights[1, 3] == 0).all()
    assert torch.allclose(weights[bool_mask.any(-1)].sum(-1), torch.ones(6, dtype=torch.float64, device=device))
    q_ = q.clone().requires_grad_(True)
    A.scaled_dot_product_attention(q_, k, v, mask=bool_mask).sum().backward()
    assert torch.isfinite(q_.grad).all() and (q_.grad[0, 1] == 0).all()


@settings(deadline=None, max_examples=25)
@given(length=st.integers(1, 6), keys=st.integers(1, 6), d=st.integers(1, 9), seed=st.integers(0, 10_000),
       causal=st.booleans())
def test_weights_are_a_distribution_and_causal_hides_the_future(length, keys, d, seed, causal):
    gen = torch.Generator().manual_seed(seed)
    q, k = randn(length, d, gen=gen, device="cpu"), randn(keys, d, gen=gen, device="cpu")
    w = A.attention_weights(q, k, causal=causal)
    assert w.shape == (length, keys)
    assert torch.allclose(w.sum(-1), torch.ones(length, dtype=torch.float64), atol=1e-12)
    if causal:
        assert (w[~A.causal_mask(length, keys)] == 0).all()


def test_scale_is_sqrt_d_not_d():
    # one query, two keys; with d = 16 the two possible scalings give clearly different weights
    d = 16
    q = torch.ones(1, d, dtype=torch.float64)
    k = torch.stack([torch.ones(d), torch.zeros(d)]).double()
    w = A.attention_weights(q, k)
    assert w[0, 0].item() == pytest.approx(1 / (1 + math.exp(-d / math.sqrt(d))), rel=1e-12)
    assert abs(w[0, 0].item() - 1 / (1 + math.exp(-d / d))) > 0.2


def test_scores_have_unit_variance_after_scaling():
    # q, k with independent N(0, 1) entries: q.k has variance d, q.k / sqrt(d) variance 1
    gen = torch.Generator().manual_seed(0)
    n, d = 20_000, 64
    q, k = torch.randn(n, d, generator=gen, dtype=torch.float64), torch.randn(n, d, generator=gen, dtype=torch.float64)
    scaled = (q * k).sum(-1) / math.sqrt(d)
    # the sample variance of n = 20000 draws of a unit-variance variable (kurtosis 3 + 6/d here)
    # has standard deviation about sqrt(2 / n) = 0.01; allow 6 of them
    assert abs(scaled.var().item() - 1.0) < 0.06


@pytest.mark.parametrize("bad, message", [
    (dict(q=torch.ones(3)), "must have shape"),
    (dict(q=torch.ones(2, 3, dtype=torch.int64)), "floating-point"),
    (dict(q=torch.ones(2, 4)), "same feature size"),
    (dict(v=torch.ones(5, 3)), "same length"),
])
def test_errors(bad, message):
    args = dict(q=torch.ones(2, 3), k=torch.ones(4, 3), v=torch.ones(4, 2)) | bad
    with pytest.raises(ValueError, match=message):
        A.scaled_dot_product_attention(**args)
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        A.scaled_dot_product_attention([[1.0]], torch.ones(1, 1), torch.ones(1, 1))


# -------------------------------------------------------------------- multi-head
def _torch_mha(ours: A.MultiHeadAttention) -> nn.MultiheadAttention:
    theirs = nn.MultiheadAttention(ours.embed_dim, ours.num_heads, batch_first=True, dtype=torch.float64,
                                   device=ours.in_proj_weight.device)
    theirs.load_state_dict(ours.state_dict())                    # same parameter names and shapes
    return theirs.eval()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("embed_dim, heads, length", [(4, 1, 3), (8, 2, 5), (12, 3, 6), (16, 4, 1)])
def test_multi_head_matches_nn_multihead_attention(device, embed_dim, heads, length):
    torch.manual_seed(embed_dim)
    ours = A.MultiHeadAttention(embed_dim, heads, dtype=torch.float64, device=device).eval()
    nn.init.normal_(ours.in_proj_bias)
    theirs = _torch_mha(ours)
    gen = torch.Generator().manual_seed(heads)
    x = randn(2, length, embed_dim, gen=gen, device=device)
    out, weights = ours(x)
    ref_out, ref_weights = theirs(x, x, x, need_weights=True, average_attn_weights=False)
    assert_matches_torch(out, ref_out, what="output")
    assert_matches_torch(weights, ref_weights, what="per-head weights")

    # causal: torch's boolean attn_mask is True where attention is NOT allowed (the opposite of F.sdpa)
    out, weights = ours(x, causal=True)
    ref_out, ref_weights = theirs(x, x, x, attn_mask=~A.causal_mask(length, device=device),
                                  average_attn_weights=False)
    assert_matches_torch(out, ref_out, what="causal output")
    assert_matches_torch(weights, ref_weights, what="causal weights")


@pytest.mark.parametrize("device", DEVICES)
def test_multi_head_key_padding_and_cross_attention(device):
    torch.manual_seed(0)
    ours = A.MultiHeadAttention(8, 2, dtype=torch.float64, device=device).eval()
    theirs = _torch_mha(ours)
    gen = torch.Generator().manual_seed(1)
    q, kv = randn(3, 4, 8, gen=gen, device=device), randn(3, 6, 8, gen=gen, device=device)
    padding = torch.tensor([[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0], [0, 1, 1, 1, 1, 1]], dtype=torch.bool,
                           device=device)
    out, weights = ours(q, kv, kv, key_padding_mask=padding)
    ref_out, ref_weights = theirs(q, kv, kv, key_padding_mask=padding, average_attn_weights=False)
    assert_matches_torch(out, ref_out)
    assert_matches_torch(weights, ref_weights)
    assert (weights.masked_select(padding[:, None, None, :]) == 0).all()   # padded keys get no weight


def test_multi_head_parameter_count_and_errors():
    assert sum(p.numel() for p in A.MultiHeadAttention(24, 3).parameters()) == 4 * 24 * 24 + 4 * 24
    with pytest.raises(ValueError, match="divisible"):
        A.MultiHeadAttention(10, 3)


# --------------------------------------------------------------- transformer block
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_block_matches_transformer_encoder_layer(device, norm_first, activation):
    torch.manual_seed(5)
    kwargs = dict(d_model=12, nhead=3, dim_feedforward=20, dropout=0.0, activation=activation,
                  norm_first=norm_first, dtype=torch.float64, device=device)
    ours = A.TransformerBlock(**kwargs).eval()
    theirs = nn.TransformerEncoderLayer(batch_first=True, **kwargs).eval()
    for p in theirs.parameters():                                 # non-trivial LayerNorms and biases
        nn.init.normal_(p, std=0.3)
    ours.load_state_dict(theirs.state_dict())
    gen = torch.Generator().manual_seed(6)
    x = randn(2, 5, 12, gen=gen, device=device)
    assert_matches_torch(ours(x), theirs(x), what="plain")
    causal = A.causal_mask(5, device=device)
    assert_matches_torch(ours(x, causal=True), theirs(x, src_mask=~causal), what="causal")
    padding = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool, device=device)
    assert_matches_torch(ours(x, key_padding_mask=padding)[:, :3], theirs(x, src_key_padding_mask=padding)[:, :3],
                         what="padding (real positions)")


def test_block_errors():
    with pytest.raises(ValueError, match="activation"):
        A.TransformerBlock(8, 2, 16, activation="tanh")


# --------------------------------------------------------------------------- GPT
def test_gpt_is_causal_and_shapes():
    torch.manual_seed(0)
    model = A.GPT(vocab_size=11, block_size=7, d_model=16, num_layers=2, nhead=2).eval()
    idx = torch.randint(11, (2, 7), generator=torch.Generator().manual_seed(1))
    logits, maps = model(idx, need_weights=True)
    assert logits.shape == (2, 7, 11) and len(maps) == 2 and maps[0].shape == (2, 2, 7, 7)
    changed = idx.clone()
    changed[:, 4:] = (changed[:, 4:] + 1) % 11                   # change the future only
    assert torch.allclose(model(changed)[:, :4], logits[:, :4], atol=1e-6)
    assert not torch.allclose(model(changed)[:, 4:], logits[:, 4:], atol=1e-3)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 8, dtype=torch.long))


def test_gpt_learns_a_repeating_sequence_and_sampling(one_thread):
    torch.manual_seed(0)
    tokens = torch.arange(5).repeat(40)                          # 0 1 2 3 4 0 1 2 ...
    model = A.GPT(vocab_size=5, block_size=6, d_model=16, num_layers=1, nhead=2)
    losses = A.train_gpt(model, tokens, steps=120, batch_size=8, lr=1e-2,
                         generator=torch.Generator().manual_seed(0), progress=False)
    assert losses[0] > 1.0 and sum(losses[-10:]) / 10 < 0.1, (losses[0], losses[-10:])
    greedy = A.sample(model, torch.tensor([2, 3]), 6, temperature=0)
    assert greedy.tolist() == [2, 3, 4, 0, 1, 2, 3, 4]
    one = A.sample(model, torch.tensor([0]), 5, temperature=2.0, generator=torch.Generator().manual_seed(3))
    two = A.sample(model, torch.tensor([0]), 5, temperature=2.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(one, two)
    with pytest.raises(ValueError, match="temperature"):
        A.sample(model, torch.tensor([0]), 1, temperature=-1)
