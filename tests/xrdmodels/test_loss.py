"""Training objectives (A.5) against independent NumPy / brute-force references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xrdmodels import (
    ModelOutput,
    PresenceLoss,
    assignment_loss,
    asymmetric_presence_loss,
    labels_to_multi_hot,
    model_loss,
    presence_bce_loss,
    trace_mask,
)

NONE = 230


def _log_softmax_np(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _brute_force_assignment(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample A.5 loss by enumerating every injection of the true phases into the slots, / K."""
    log_probs = _log_softmax_np(logits.astype(np.float64))
    n_slots = logits.shape[1]
    losses = []
    for lp, row in zip(log_probs, labels, strict=True):
        classes = [int(s) - 1 for s in row if s > 0]
        best = np.inf
        for slots in itertools.permutations(range(n_slots), len(classes)):
            cost = -sum(lp[k, c] for k, c in zip(slots, classes, strict=True))
            cost -= sum(lp[k, NONE] for k in range(n_slots) if k not in slots)
            best = min(best, cost)
        losses.append(best / n_slots)
    return np.array(losses)


def _random_labels(batch: int, width: int, max_phases: int, rng: np.random.Generator) -> np.ndarray:
    """Rows with 1..max_phases phases at random columns, drawn from a few space groups so duplicates occur."""
    labels = np.zeros((batch, width), dtype=np.int64)
    for b in range(batch):
        n_phases = 1 + b % max_phases
        columns = rng.choice(width, size=n_phases, replace=False)
        labels[b, columns] = rng.choice([1, 14, 62, 225, 230], size=n_phases)
    return labels


@pytest.mark.parametrize(("n_slots", "width"), [(5, 5), (5, 3), (3, 3), (4, 2)])
def test_assignment_loss_equals_brute_force(n_slots: int, width: int) -> None:
    rng = np.random.default_rng(n_slots * 10 + width)
    labels = _random_labels(30, width, min(width, n_slots), rng)
    logits = 3.0 * rng.standard_normal((30, n_slots, 231)).astype(np.float32)
    # Make some slots confident so the minimum is not just the near-uniform average.
    logits[::3, 0, 13] += 8.0
    logits[1::4, :, NONE] += 5.0
    assert any(len(set(r[r > 0])) < (r > 0).sum() for r in labels), "test data must contain duplicates"

    per_sample = assignment_loss(torch.from_numpy(logits), torch.from_numpy(labels), reduction="none")
    expected = _brute_force_assignment(logits, labels)
    np.testing.assert_allclose(per_sample.numpy(), expected, rtol=1e-5, atol=1e-6)
    mean = assignment_loss(torch.from_numpy(logits), torch.from_numpy(labels))
    assert float(mean) == pytest.approx(expected.mean(), rel=1e-5)


def test_every_phase_count_from_one_to_five_is_covered() -> None:
    rng = np.random.default_rng(11)
    labels = _random_labels(10, 5, 5, rng)
    assert sorted({int((r > 0).sum()) for r in labels}) == [1, 2, 3, 4, 5]
    logits = rng.standard_normal((10, 5, 231)).astype(np.float32)
    got = assignment_loss(torch.from_numpy(logits), torch.from_numpy(labels), reduction="none").numpy()
    np.testing.assert_allclose(got, _brute_force_assignment(logits, labels), rtol=1e-5, atol=1e-6)


def test_assignment_loss_is_invariant_to_slot_and_phase_order() -> None:
    gen = torch.Generator().manual_seed(12)
    logits = torch.randn(8, 5, 231, generator=gen) * 2.0
    labels = torch.tensor(_random_labels(8, 5, 5, np.random.default_rng(12)))
    reference = assignment_loss(logits, labels, reduction="none")
    for _ in range(5):
        slot_perm = torch.randperm(5, generator=gen)
        phase_perm = torch.randperm(5, generator=gen)
        permuted = assignment_loss(logits[:, slot_perm], labels[:, phase_perm], reduction="none")
        torch.testing.assert_close(permuted, reference, rtol=1e-6, atol=1e-6)


def test_confident_correct_slots_give_near_zero_loss() -> None:
    labels = torch.tensor([[62, 62, 0, 0, 0], [1, 2, 3, 4, 5]])
    logits = torch.full((2, 5, 231), -10.0)
    # Sample 0: two slots (in shuffled positions) say space group 62, the rest say NONE.
    logits[0, [0, 2, 4], NONE] = 10.0
    logits[0, [1, 3], 61] = 10.0
    # Sample 1: slot k says space group 5 - k.
    for k in range(5):
        logits[1, k, 4 - k] = 10.0
    assert float(assignment_loss(logits, labels)) < 1e-6
    # Turn slot 1 into a confident space group 101 while only two phases exist: it must take NONE at a cost
    # of ~20 nats (logit gap 10 - (-10)); the other slots still match. Normalised by K = 5.
    logits[0, 1, 61] = -10.0
    logits[0, 1, 100] = 10.0
    logits[0, 0, NONE], logits[0, 0, 61] = -10.0, 10.0
    assert float(assignment_loss(logits, labels, reduction="none")[0]) == pytest.approx(20.0 / 5, rel=1e-3)


def test_assignment_loss_gradients_flow_to_slot_logits() -> None:
    logits = torch.randn(4, 5, 231, requires_grad=True)
    labels = torch.tensor([[3, 0, 0, 0, 0], [7, 7, 0, 0, 0], [1, 2, 3, 0, 0], [9, 8, 7, 6, 5]])
    assignment_loss(logits, labels).backward()
    assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())
    # Each slot gets a cross-entropy gradient, which sums to zero over the classes of that slot.
    assert bool((logits.grad.abs().sum(-1) > 0).all())
    torch.testing.assert_close(logits.grad.sum(-1), torch.zeros(4, 5), rtol=0, atol=1e-6)


def test_assignment_loss_rejects_bad_labels() -> None:
    logits = torch.randn(2, 3, 231)
    with pytest.raises(ValueError, match="phases <= n_slots=3"):
        assignment_loss(logits, torch.ones(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="1..230 or 0 for padding"):
        assignment_loss(logits, torch.tensor([[231, 0, 0], [1, 0, 0]]))
    with pytest.raises(ValueError, match="integer tensor"):
        assignment_loss(logits, torch.ones(2, 3))
    with pytest.raises(ValueError, match="231 classes"):
        assignment_loss(torch.randn(2, 3, 230), torch.ones(2, 3, dtype=torch.long))


def test_multi_hot_from_hand_made_labels() -> None:
    labels = torch.tensor([[1, 230, 0, 0, 0], [5, 5, 0, 0, 0], [0, 0, 62, 0, 14]])
    hot = labels_to_multi_hot(labels)
    assert hot.shape == (3, 230)
    assert [sorted(torch.nonzero(row).flatten().tolist()) for row in hot] == [[0, 229], [4], [13, 61]]


def test_presence_bce_matches_formula_and_torch() -> None:
    targets = torch.zeros(3, 230)
    targets[0, [0, 229]] = 1.0
    targets[1, 4] = 1.0
    targets[2, [13, 61, 100]] = 1.0
    logits = torch.randn(3, 230, generator=torch.Generator().manual_seed(13)) * 3.0
    loss = presence_bce_loss(logits, targets)
    # A.5: -1/C sum_c [y log σ(ℓ) + (1 - y) log(1 - σ(ℓ))], averaged over samples.
    sigma = 1.0 / (1.0 + np.exp(-logits.double().numpy()))
    y = targets.double().numpy()
    per_sample = -(y * np.log(sigma) + (1 - y) * np.log(1 - sigma)).mean(axis=1)
    assert float(loss) == pytest.approx(per_sample.mean(), rel=1e-5)
    assert float(loss) == pytest.approx(float(F.binary_cross_entropy_with_logits(logits, targets)), rel=1e-6)
    with pytest.raises(ValueError, match=r"\(batch, 230\)"):
        presence_bce_loss(logits[:, :10], targets[:, :10])


def test_model_loss_picks_the_objective_of_the_head() -> None:
    labels = torch.tensor([[12, 0, 0, 0, 0], [62, 225, 62, 0, 0]])
    presence_logits = torch.randn(2, 230)
    presence_output = ModelOutput(set_probs=presence_logits.sigmoid(), presence_logits=presence_logits)
    expected_presence = presence_bce_loss(presence_logits, labels_to_multi_hot(labels))
    assert float(model_loss(presence_output, labels)) == pytest.approx(float(expected_presence))

    slot_logits = torch.randn(2, 5, 231)
    slot_output = ModelOutput(set_probs=torch.zeros(2, 230), slot_logits=slot_logits)
    assert float(model_loss(slot_output, labels)) == pytest.approx(
        float(assignment_loss(slot_logits, labels))
    )


def _asymmetric_reference(
    logits: np.ndarray, targets: np.ndarray, gn: float, gp: float, clip: float
) -> float:
    """Ridnik et al. (2021), eqs. 1-4, in float64 straight from the formulas."""
    p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    p_m = np.maximum(p - clip, 0.0)
    present = -((1.0 - p) ** gp) * np.log(p)
    absent = -(p_m**gn) * np.log(1.0 - p_m)
    return float(np.mean(targets * present + (1.0 - targets) * absent))


@pytest.mark.parametrize("gn, gp, clip", [(4.0, 0.0, 0.05), (2.0, 1.0, 0.1), (0.0, 0.0, 0.0)])
def test_asymmetric_loss_matches_the_formula(gn: float, gp: float, clip: float) -> None:
    gen = torch.Generator().manual_seed(3)
    logits = 4.0 * torch.randn(6, 230, generator=gen)
    targets = (torch.rand(6, 230, generator=gen) < 0.02).float()
    targets[0, 5] = 1.0
    loss = asymmetric_presence_loss(logits, targets, gn, gp, clip)
    expected = _asymmetric_reference(logits.numpy(), targets.numpy(), gn, gp, clip)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    if gn == gp == clip == 0.0:  # the asymmetric loss without its asymmetry is L_pres
        assert float(loss) == pytest.approx(float(presence_bce_loss(logits, targets)), rel=1e-6)
    with pytest.raises(ValueError, match=r"\(batch, 230\)"):
        asymmetric_presence_loss(logits[:, :10], targets[:, :10])


def test_asymmetric_loss_ignores_confident_absent_groups() -> None:
    """An absent group scored below the clip costs nothing and gets no gradient; a present one always does."""
    logits = torch.full((1, 230), -6.0, requires_grad=True)  # p = 0.0025 < 0.05
    targets = torch.zeros(1, 230)
    targets[0, 7] = 1.0
    asymmetric_presence_loss(logits, targets).backward()
    assert logits.grad is not None
    assert float(logits.grad[0, 7]) < 0.0
    assert float(logits.grad[0, :7].abs().max()) == 0.0 and float(logits.grad[0, 8:].abs().max()) == 0.0


def test_model_loss_uses_the_configured_presence_loss() -> None:
    labels = torch.tensor([[12, 0, 0, 0, 0], [62, 225, 62, 0, 0]])
    logits = torch.randn(2, 230)
    output = ModelOutput(set_probs=logits.sigmoid(), presence_logits=logits)
    spec = PresenceLoss(kind="asymmetric", gamma_negative=3.0, gamma_positive=1.0, clip=0.02)
    expected = asymmetric_presence_loss(logits, labels_to_multi_hot(labels), 3.0, 1.0, 0.02)
    assert float(model_loss(output, labels, spec)) == pytest.approx(float(expected))
    assert float(model_loss(output, labels, PresenceLoss())) == pytest.approx(
        float(presence_bce_loss(logits, labels_to_multi_hot(labels)))
    )


def _trace_mask_loop(labels: np.ndarray, weights: np.ndarray, below: float) -> np.ndarray:
    """Reference: per sample, a group is left out iff every phase holding it weighs less than `below`."""
    care = np.ones((len(labels), 230))
    for b, (row, w) in enumerate(zip(labels, weights, strict=True)):
        for group in set(int(g) for g in row if g > 0):
            if all(wk < below for g, wk in zip(row, w, strict=True) if g == group):
                care[b, group - 1] = 0.0
    return care


def test_trace_mask_matches_a_per_sample_loop() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 12, size=(64, 5))  # few groups, so phases often share one
    weights = rng.dirichlet(np.ones(5), size=64) * (labels > 0)
    mask = trace_mask(torch.from_numpy(labels), torch.from_numpy(weights).float(), 0.15)
    expected = _trace_mask_loop(labels, weights, 0.15)
    np.testing.assert_array_equal(mask.numpy(), expected)
    assert 0 < (expected == 0).sum() < (labels > 0).sum()  # the draw holds traces and non-traces


def test_model_loss_leaves_trace_groups_out_of_the_presence_loss() -> None:
    """A 4% phase's group gets no gradient and no loss; a group a heavier phase shares is kept; the mean is over
    all 230 x B terms, so the other terms weigh as in A.5's BCE."""
    labels = torch.tensor([[14, 62, 0, 0, 0], [225, 229, 225, 0, 0]])
    weights = torch.tensor([[0.96, 0.04, 0, 0, 0], [0.5, 0.47, 0.03, 0, 0]])
    logits = torch.randn(2, 230, requires_grad=True)
    output = ModelOutput(set_probs=logits.sigmoid(), presence_logits=logits)
    spec = PresenceLoss(trace_weight_below=0.05)
    loss = model_loss(output, labels, spec, weights)
    loss.backward()
    assert float(logits.grad[0, 61]) == 0.0  # group 62, a 4% trace: neither named nor denied
    assert float(logits.grad[1, 224]) < 0.0  # group 225 also held by a 50% phase: still a positive
    terms = F.binary_cross_entropy_with_logits(logits.detach(), labels_to_multi_hot(labels), reduction="none")
    terms[0, 61] = 0.0
    assert float(loss) == pytest.approx(float(terms.sum() / terms.numel()), rel=1e-6)
    asymmetric = PresenceLoss(kind="asymmetric", trace_weight_below=0.05)
    logits.grad = None
    model_loss(output, labels, asymmetric, weights).backward()
    assert float(logits.grad[0, 61]) == 0.0 and float(logits.grad[1, 224]) < 0.0
    # At 0 (A.5) every phase counts, and the weights are not needed.
    assert float(model_loss(output, labels, PresenceLoss())) == pytest.approx(
        float(presence_bce_loss(logits, labels_to_multi_hot(labels)))
    )
    with pytest.raises(ValueError, match="phase_weight"):
        model_loss(output, labels, spec)
