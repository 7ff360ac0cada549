"""Shapes, masking, RoPE, slot read-outs and gradients of the xrdmodels networks (A.2-A.4)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from xrdmodels import N_SPACE_GROUPS, ModelConfig, SpaceGroupModel, model_loss, preset
from xrdmodels.metrics import slot_set_scores
from xrdmodels.models.encoders import TokenCNNEncoder, TransformerEncoder, apply_rope, rope_tables
from xrdmodels.models.frontend import CNNFrontEnd
from xrdmodels.models.heads import (
    PhaseClusterHead,
    PresenceHead,
    slot_noisy_or_probs,
    slot_union_scores,
)

VARIANTS = list(itertools.product(["transformer", "cnn"], ["presence", "phase_cluster"]))


def _window_mask(batch: int, n_bins: int, generator: torch.Generator) -> torch.Tensor:
    """Per-sample contiguous measurement windows [lo, hi), like the A.1 windowing."""
    lo = torch.randint(0, n_bins // 4, (batch, 1), generator=generator)
    hi = torch.randint(n_bins // 2, n_bins, (batch, 1), generator=generator)
    bins = torch.arange(n_bins)[None, :]
    return (bins >= lo) & (bins < hi)


def _small_model(encoder: str, head: str, seed: int = 0) -> SpaceGroupModel:
    torch.manual_seed(seed)
    return SpaceGroupModel(preset("small", encoder=encoder, head=head))


# --- configuration ---------------------------------------------------------------------------------------


def test_paper_preset_matches_appendix_a() -> None:
    cfg = preset("paper")
    assert (cfg.n_bins, cfg.two_theta_min_deg, cfg.two_theta_max_deg) == (2048, 5.0, 120.0)
    assert cfg.cnn_channels == [64, 128, 256, 256] and cfg.cnn_strides == [2, 2, 2, 2]
    assert cfg.branch_kernel_sizes == [3, 7, 15] and cfg.branch_dilations == [1, 2, 4]
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.ffn_dim) == (18, 768, 12, 4096)
    assert (cfg.dropout, cfg.cnn_dropout) == (0.1, 0.1)
    assert cfg.token_cnn_kernel_size == 7 and cfg.token_cnn_dilations == [1, 2, 4, 8]
    assert cfg.n_slots == 5
    assert cfg.n_tokens == 2048 // 16


def test_small_preset_and_overrides() -> None:
    cfg = preset("small", encoder="cnn", head="presence")
    assert cfg.cnn_channels == [16, 32, 64, 64]
    assert (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.ffn_dim) == (64, 2, 4, 128)
    assert (cfg.encoder, cfg.head) == ("cnn", "presence")


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"cnn_strides": [2, 2]}, "one stride per stage"),
        ({"branch_dilations": [1, 2]}, "same length"),
        ({"n_heads": 5}, "divisible"),
        ({"token_cnn_kernel_size": 4}, "odd"),
    ],
)
def test_inconsistent_config_is_rejected(overrides: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        preset("small", **overrides)


def test_unknown_preset_and_field() -> None:
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        preset("huge")
    with pytest.raises(ValidationError):
        ModelConfig(d_modle=64)  # type: ignore[call-arg]


# --- shapes -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("encoder", "head"), VARIANTS)
def test_small_output_shapes(encoder: str, head: str) -> None:
    model = _small_model(encoder, head).eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(3, 2048, generator=gen)
    with torch.no_grad():
        out = model(x, _window_mask(3, 2048, gen))
    assert out.set_probs.shape == (3, N_SPACE_GROUPS)
    assert bool(((out.set_probs >= 0) & (out.set_probs <= 1)).all())
    if head == "presence":
        assert out.presence_logits is not None and out.presence_logits.shape == (3, 230)
        assert out.slot_logits is None and out.slot_gates is None
    else:
        assert out.presence_logits is None
        assert out.slot_logits is not None and out.slot_logits.shape == (3, 5, 231)
        assert out.slot_gates is not None and out.slot_gates.shape == (3, 5)
        assert out.slots is not None and out.slots.shape == (3, 5, 64)
        assert out.slot_union_scores is not None and out.slot_union_scores.shape == (3, 230)


def _expected_transformer_parameters(cfg: ModelConfig) -> int:
    """Hand count from the A.3 sizes: per layer q/kv/out projections, FFN, two LayerNorms; one final LN."""
    d, f = cfg.d_model, cfg.ffn_dim
    attention = 4 * d * d + 4 * d
    ffn = d * f + f + f * d + d
    layer_norms = 2 * 2 * d
    return cfg.n_layers * (attention + ffn + layer_norms) + 2 * d


def _expected_frontend_parameters(cfg: ModelConfig) -> int:
    """Hand count from the A.2 sizes: branches, BN, 1x1 mix, 1x1 shortcut per stage; token projection; MLP."""
    total, c_in = 0, 1
    n_branches = len(cfg.branch_kernel_sizes)
    for c_out in cfg.cnn_channels:
        total += sum(c_in * c_out * k + c_out for k in cfg.branch_kernel_sizes)
        total += 2 * n_branches * c_out  # BatchNorm affine
        total += n_branches * c_out * c_out + c_out  # 1x1 mix
        total += c_in * c_out + c_out  # strided 1x1 shortcut (every paper stage has stride 2)
        c_in = c_out
    d = cfg.d_model
    total += cfg.cnn_channels[-1] * d + d  # projection to tokens
    total += (2 * d + d) + (d * d + d)  # conditioning MLP 2 -> d -> d
    return total


def test_paper_preset_parameter_count() -> None:
    cfg = preset("paper")
    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        model = SpaceGroupModel(cfg)
    d = cfg.d_model
    slot_layer = 4 * d * d + 4 * d + 2 * d * cfg.ffn_dim + cfg.ffn_dim + d + 4 * d
    expected_head = cfg.n_slots * d + cfg.n_slot_layers * slot_layer + d * 231 + 231
    assert sum(p.numel() for p in model.frontend.parameters()) == _expected_frontend_parameters(cfg)
    assert sum(p.numel() for p in model.encoder.parameters()) == _expected_transformer_parameters(cfg)
    assert sum(p.numel() for p in model.head.parameters()) == expected_head
    print(f"paper phase-cluster Transformer: {model.num_parameters():,} parameters")


def test_paper_preset_runs_one_tiny_forward() -> None:
    torch.manual_seed(0)
    model = SpaceGroupModel(preset("paper")).eval()
    mask = torch.zeros(1, 2048, dtype=torch.bool)
    mask[:, 150:1900] = True
    with torch.no_grad():
        out = model(torch.rand(1, 2048), mask)
    assert out.slot_logits is not None and out.slot_logits.shape == (1, 5, 231)
    assert bool(torch.isfinite(out.slot_logits).all())


# --- front-end and masking ------------------------------------------------------------------------------


def test_frontend_token_mask_matches_window_reference() -> None:
    cfg = preset("small")
    frontend = CNNFrontEnd(cfg).eval()
    gen = torch.Generator().manual_seed(2)
    mask = _window_mask(4, 2048, gen)
    mask[0, 1000:1040] = False  # an interior gap wider than one token window
    with torch.no_grad():
        tokens, valid = frontend(torch.rand(4, 2048, generator=gen), mask)
    assert tokens.shape == (4, 128, cfg.d_model)
    # A token covers 16 consecutive bins; it is valid when any of them was measured (max-pooling, A.3).
    assert torch.equal(valid, mask.reshape(4, 128, 16).any(dim=-1))
    # The conditioning angle spans the global grid: first and last token centres, scaled to [-1, 1].
    centres = (np.arange(2048) + 0.5) / 2048 * 2 - 1
    token_centres = centres.reshape(128, 16).mean(axis=1)
    np.testing.assert_allclose(frontend.token_angle.numpy(), token_centres, rtol=0, atol=1e-6)


def test_frontend_rejects_wrong_shapes() -> None:
    frontend = CNNFrontEnd(preset("small"))
    with pytest.raises(ValueError, match="n_bins=2048"):
        frontend(torch.rand(2, 1000), torch.ones(2, 1000, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be a bool"):
        frontend(torch.rand(2, 2048), torch.ones(2, 2048))


@pytest.mark.parametrize(("encoder", "head"), VARIANTS)
def test_unmeasured_bins_do_not_change_outputs(encoder: str, head: str) -> None:
    model = _small_model(encoder, head).eval()
    gen = torch.Generator().manual_seed(3)
    mask = _window_mask(3, 2048, gen)
    x = torch.rand(3, 2048, generator=gen)
    x_other = torch.where(mask, x, 50.0 * torch.rand(3, 2048, generator=gen))
    with torch.no_grad():
        a, b = model(x, mask), model(x_other, mask)
    torch.testing.assert_close(a.set_probs, b.set_probs, rtol=0, atol=0)


@pytest.mark.parametrize("encoder_cls", [TransformerEncoder, TokenCNNEncoder])
def test_padding_tokens_do_not_reach_valid_tokens(encoder_cls: type[torch.nn.Module]) -> None:
    torch.manual_seed(4)
    encoder = encoder_cls(preset("small")).eval()
    tokens = torch.randn(2, 40, 64)
    valid = torch.ones(2, 40, dtype=torch.bool)
    valid[0, :7] = False
    valid[0, 30:] = False
    valid[1, 15:22] = False
    changed = torch.where(valid[..., None], tokens, 10.0 * torch.randn(2, 40, 64))
    with torch.no_grad():
        z, z_changed = encoder(tokens, valid), encoder(changed, valid)
    torch.testing.assert_close(z[valid], z_changed[valid], rtol=1e-5, atol=1e-5)
    # Valid outputs do react to valid inputs, so the comparison above is not vacuous.
    with torch.no_grad():
        z_valid_changed = encoder(tokens + torch.randn_like(tokens) * valid[..., None], valid)
    assert not torch.allclose(z[valid], z_valid_changed[valid], atol=1e-3)


@pytest.mark.parametrize("head_cls", [PresenceHead, PhaseClusterHead])
def test_heads_ignore_padding_tokens(head_cls: type[torch.nn.Module]) -> None:
    torch.manual_seed(5)
    head = head_cls(preset("small")).eval()
    z = torch.randn(2, 30, 64)
    valid = torch.rand(2, 30) > 0.4
    changed = torch.where(valid[..., None], z, 10.0 * torch.randn(2, 30, 64))
    with torch.no_grad():
        a, b = head(z, valid), head(changed, valid)
    for left, right in zip(
        a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,), strict=True
    ):
        torch.testing.assert_close(left, right, rtol=1e-5, atol=1e-5)


def test_eval_outputs_do_not_depend_on_batch_mates() -> None:
    model = _small_model("transformer", "phase_cluster").eval()
    gen = torch.Generator().manual_seed(6)
    x, mask = torch.rand(3, 2048, generator=gen), _window_mask(3, 2048, gen)
    with torch.no_grad():
        batched = model(x, mask).slot_logits
        single = model(x[1:2], mask[1:2]).slot_logits
    assert batched is not None and single is not None
    torch.testing.assert_close(batched[1:2], single, rtol=1e-4, atol=1e-5)


# --- RoPE -----------------------------------------------------------------------------------------------


def test_rope_matches_complex_rotation() -> None:
    head_dim, n_pos, base = 16, 12, 10000.0
    x = torch.randn(2, n_pos, head_dim, dtype=torch.float64)
    cos, sin = rope_tables(n_pos, head_dim, base, torch.device("cpu"))
    rotated = apply_rope(x.float(), cos, sin).double()
    # Reference: channel pair (j, j + D/2) as a complex number, multiplied by exp(i * m * base^(-2j/D)).
    half = head_dim // 2
    pairs = torch.complex(x[..., :half], x[..., half:])
    freq = base ** (-2.0 * torch.arange(half, dtype=torch.float64) / head_dim)
    phase = torch.exp(1j * torch.arange(n_pos, dtype=torch.float64)[:, None] * freq[None, :])
    expected = torch.cat([(pairs * phase).real, (pairs * phase).imag], dim=-1)
    torch.testing.assert_close(rotated, expected, rtol=1e-5, atol=1e-5)


def test_rope_scores_depend_only_on_relative_position() -> None:
    head_dim = 32
    q, k = torch.randn(head_dim), torch.randn(head_dim)
    cos, sin = rope_tables(200, head_dim, 10000.0, torch.device("cpu"))

    def score(m: int, n: int) -> float:
        q_m = apply_rope(q[None], cos[m : m + 1], sin[m : m + 1])
        k_n = apply_rope(k[None], cos[n : n + 1], sin[n : n + 1])
        return float((q_m * k_n).sum())

    for m, n, shift in [(3, 10, 50), (40, 7, 120), (0, 0, 199), (17, 90, 33)]:
        assert math.isclose(score(m, n), score(m + shift, n + shift), rel_tol=1e-4, abs_tol=1e-4)
    # ...while the scores at different offsets differ (the rotation is not the identity).
    assert not math.isclose(score(3, 10), score(3, 11), rel_tol=1e-3)


# --- phase clustering -----------------------------------------------------------------------------------


def test_slot_attention_is_invariant_to_token_order() -> None:
    torch.manual_seed(7)
    head = PhaseClusterHead(preset("small")).eval()
    z, valid = torch.randn(2, 25, 64), torch.rand(2, 25) > 0.3
    perm = torch.randperm(25)
    with torch.no_grad():
        slots, logits = head(z, valid)
        slots_perm, logits_perm = head(z[:, perm], valid[:, perm])
    torch.testing.assert_close(slots, slots_perm, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, logits_perm, rtol=1e-5, atol=1e-5)


def test_slot_diversity_matches_pairwise_reference() -> None:
    slots = torch.randn(3, 5, 8)
    slots[0, 1] = -2.0 * slots[0, 0]  # anti-parallel pair: |cos| = 1
    ref = []
    for sample in slots.numpy().astype(np.float64):
        for i, j in itertools.permutations(range(5), 2):
            a, b = sample[i], sample[j]
            ref.append(abs(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert math.isclose(float(PhaseClusterHead.slot_diversity(slots)), float(np.mean(ref)), rel_tol=1e-5)


def test_slot_union_scores_reproduce_the_thresholded_rule() -> None:
    gen = torch.Generator().manual_seed(8)
    logits = 3.0 * torch.randn(6, 5, 231, generator=gen)
    logits[0, :, 17] = 20.0  # every slot votes for class 17: the score is the largest of their gates
    probs = logits.double().softmax(-1).numpy()
    scores = slot_union_scores(logits).numpy()
    # At τ = 0 too (an unvoted class once scored 0, so every class was predicted), and the whole ranking is
    # metrics.slot_set_scores', the numpy read-out evaluate and predict use.
    np.testing.assert_allclose(scores, slot_set_scores(probs), atol=1e-6)
    for tau in (0.0, 0.1, 0.5, 0.9):
        for b in range(6):
            expected = {int(np.argmax(probs[b, k, :230])) for k in range(5) if 1 - probs[b, k, 230] >= tau}
            got = {int(c) for c in np.flatnonzero(scores[b] >= tau)}
            assert got == expected, (b, tau)
    assert math.isclose(scores[0, 17], max(1 - probs[0, k, 230] for k in range(5)), rel_tol=1e-5)


def test_noisy_or_probs_match_explicit_product() -> None:
    logits = torch.randn(4, 5, 231) * 4.0
    probs = logits.double().softmax(-1)
    expected = 1.0 - torch.prod(1.0 - probs[..., :230], dim=1)
    torch.testing.assert_close(slot_noisy_or_probs(logits).double(), expected, rtol=1e-5, atol=1e-6)


# --- training signal --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("encoder", "head"), VARIANTS)
def test_gradients_reach_every_parameter(encoder: str, head: str) -> None:
    model = _small_model(encoder, head).train()
    gen = torch.Generator().manual_seed(9)
    x, mask = torch.rand(4, 2048, generator=gen), _window_mask(4, 2048, gen)
    labels = torch.tensor([[12, 0, 0, 0, 0], [225, 62, 0, 0, 0], [1, 1, 194, 0, 0], [14, 2, 62, 166, 221]])
    loss = model_loss(model(x, mask), labels)
    loss.backward()
    assert torch.isfinite(loss)
    for name, param in model.named_parameters():
        assert param.grad is not None, f"{name} got no gradient"
        assert bool(torch.isfinite(param.grad).all()), f"{name} has a non-finite gradient"
        assert float(param.grad.abs().max()) > 0.0, f"{name} has an all-zero gradient"


# --- read-outs beyond the paper (the `cpu` preset and the measured ablations) ------------------------------

READOUTS = [
    {"head": "presence", "presence_pooling": "flatten"},
    {"head": "presence", "presence_pooling": "flatten", "presence_hidden": 32},
    {"head": "presence", "presence_pooling": "attention", "angle_encoding": "fourier"},
    {"head": "phase_cluster", "slot_init": "flatten"},
    {"head": "phase_cluster", "angle_encoding": "fourier"},
]


@pytest.mark.parametrize("overrides", READOUTS, ids=lambda o: "-".join(map(str, o.values())))
def test_readouts_ignore_unmeasured_bins_and_train_every_parameter(overrides: dict[str, str]) -> None:
    torch.manual_seed(10)
    model = SpaceGroupModel(preset("small", **overrides)).eval()
    gen = torch.Generator().manual_seed(11)
    mask = _window_mask(3, 2048, gen)
    x = torch.rand(3, 2048, generator=gen)
    x_other = torch.where(mask, x, 50.0 * torch.rand(3, 2048, generator=gen))
    with torch.no_grad():
        a, b = model(x, mask), model(x_other, mask)
        c = model(torch.where(mask, torch.rand(3, 2048, generator=gen), x), mask)
    torch.testing.assert_close(a.set_probs, b.set_probs, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(a.set_probs, c.set_probs, atol=1e-4)  # measured bins do matter

    model.train()
    labels = torch.tensor([[12, 0, 0, 0, 0], [225, 62, 0, 0, 0], [14, 2, 62, 166, 221]])
    model_loss(model(x, mask), labels).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and float(param.grad.abs().max()) > 0.0, f"{name} got no gradient"


def test_fourier_angle_code_tells_every_token_apart() -> None:
    frontend = CNNFrontEnd(preset("small", angle_encoding="fourier"))
    code = frontend.angle_code
    assert code.shape == (128, 32)
    distances = torch.cdist(code, code)
    assert float(distances[~torch.eye(128, dtype=torch.bool)].min()) > 0.5


@pytest.mark.parametrize(
    ("dropout", "training", "attention_dtype"),
    [(0.0, True, torch.float32), (0.1, False, torch.float32), (0.1, True, torch.bfloat16)],
)
def test_cpu_bf16_autocast_keeps_fused_attention_in_fp32(monkeypatch, dropout, training, attention_dtype):
    """The fused CPU attention kernel (no dropout) has a slow bf16 backward, so it gets fp32 inputs under
    autocast; with attention dropout PyTorch runs unfused attention, which is faster in bf16 and stays there."""
    from xrdmodels.models import encoders

    seen = []
    real_attention = encoders.F.scaled_dot_product_attention

    def recording_attention(q, k, v, **kwargs):
        seen.append(q.dtype)
        return real_attention(q, k, v, **kwargs)

    monkeypatch.setattr(encoders.F, "scaled_dot_product_attention", recording_attention)
    torch.manual_seed(0)
    encoder = TransformerEncoder(preset("small", d_model=16, n_heads=2, n_layers=1, dropout=dropout))
    encoder.train(training)
    tokens = torch.randn(2, 8, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = encoder(tokens, torch.ones(2, 8, dtype=torch.bool))
    out.float().sum().backward()
    assert seen == [attention_dtype]
    assert torch.isfinite(tokens.grad).all()
    with torch.no_grad():
        reference = encoder(tokens, torch.ones(2, 8, dtype=torch.bool))  # fp32 throughout
    if not training:
        torch.testing.assert_close(out.float(), reference, atol=0.1, rtol=0.1)


def test_presence_hidden_layer_is_linear_gelu_linear() -> None:
    """presence_hidden = H puts Linear(pooled, H), GELU, Linear(H, 230) where A.3 has one linear layer."""
    torch.manual_seed(12)
    model = SpaceGroupModel(
        preset("small", head="presence", presence_pooling="flatten", presence_hidden=24)
    ).eval()
    first, _, second = model.head.classifier
    n_pooled = model.config.n_tokens * model.config.d_model
    assert (first.in_features, first.out_features, second.out_features) == (n_pooled, 24, N_SPACE_GROUPS)
    captured = {}

    def keep_input(_module, args, _output) -> None:  # returning None keeps the layer's output
        captured["pooled"] = args[0]

    model.head.classifier.register_forward_hook(keep_input)
    mask = torch.ones(2, 2048, dtype=torch.bool)
    with torch.no_grad():
        out = model(torch.rand(2, 2048), mask)
        hidden = F.gelu(captured["pooled"] @ first.weight.T + first.bias)
        expected = hidden @ second.weight.T + second.bias
    torch.testing.assert_close(out.presence_logits, expected, rtol=1e-5, atol=1e-5)
    single = SpaceGroupModel(preset("small", head="presence", presence_pooling="flatten"))
    assert isinstance(single.head.classifier, torch.nn.Linear)
