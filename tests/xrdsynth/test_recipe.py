"""The A.1 mixture recipe: sampling distributions, fast engines against the numpy reference, contracts."""

from __future__ import annotations

import sys
from pathlib import Path

import numba
import numpy as np
import pytest
from pydantic import ValidationError

from xrdsynth.config import GridConfig, RecipeConfig
from xrdsynth.profiles import build_width_lut
from xrdsynth.recipe import (
    RELATED_PHASE_TRIES,
    SMALLEST_NOISE_SIGMA,
    PhaseLibrary,
    draw_related_phases,
    element_masks,
    generate_batch,
    render_clean_mixtures,
    render_mixtures,
    sample_materials,
    sample_microstructure,
    sample_mixture_parameters,
    sample_phase_counts,
    sample_weights,
    smallest_tail_tolerance,
    tail_tolerances,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_recipe import render_reference, synthetic_library  # noqa: E402

GRID = GridConfig()


@pytest.fixture(scope="module")
def library():
    return synthetic_library(np.random.default_rng(11), 40, GRID, peaks=(50, 300))


def test_config_rejects_bad_values_naming_the_field():
    with pytest.raises(ValidationError, match="zero_shift_deg"):
        RecipeConfig(zero_shift_deg=(0.06, -0.06))
    with pytest.raises(ValidationError, match="sum to 1"):
        RecipeConfig(phase_count_probabilities=(0.2, 0.4, 0.25, 0.1, 0.1))
    with pytest.raises(ValidationError, match="min_phase_weight"):
        RecipeConfig(min_phase_weight=0.2)
    with pytest.raises(ValidationError, match="engine"):
        RecipeConfig(engine="fast")


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"window_low_deg": (200.0, 210.0), "window_high_deg": (220.0, 230.0)}, "window_low_deg"),
        ({"window_high_deg": (80.0, 190.0)}, "window_high_deg"),
        ({"crystallite_size_log10_nm": (-3.0, 2.0)}, "crystallite_size_log10_nm"),
        ({"instrument_dv_deg2": (-0.01, 0.0)}, "instrument_dv_deg2"),
        ({"noise_sigma": (0.5, 2.0)}, "noise_sigma"),
        ({"baseline_amplitude": (-0.5, 0.1)}, "baseline_amplitude"),
        ({"floor_offset": (-5.0, -4.0)}, "floor_offset"),
        ({"floor_slope": (-3.0, 0.0)}, "floor_slope"),
        ({"preferred_orientation_clip": (0.0, 1.2)}, "preferred_orientation_clip"),
    ],
)
def test_recipe_that_cannot_give_a_measurable_pattern_is_refused(fields, named):
    with pytest.raises(ValidationError, match=named):
        RecipeConfig(**fields)


def test_recipe_is_checked_against_the_banks_grid_and_wavelength():
    from xrdsynth.config import BankConfig, check_recipe_on_grid

    check_recipe_on_grid(RecipeConfig(), GRID, 1.54184)  # A.1's recipe on A.1's grid
    # Inside 0-180° but beyond the 5-120° grid: every pattern would be all zeros.
    beyond = RecipeConfig(window_low_deg=(125.0, 130.0), window_high_deg=(150.0, 170.0))
    with pytest.raises(ValueError, match=r"recipe\.window_low_deg .* holds 0 bins"):
        check_recipe_on_grid(beyond, GRID, 1.54184)
    with pytest.raises(ValueError, match=r"recipe\.wavelength_angstrom .* 0\.71073"):
        check_recipe_on_grid(RecipeConfig(), GRID, 0.71073)
    # A grid that sees no d-spacing of 1-10 Å records no Bragg line: refused with the field to change.
    with pytest.raises(ValidationError, match=r"d-spacings 0\.0289-0\.573 Å.*two_theta_min_deg below 2\.87°"):
        BankConfig(wavelength=0.05)
    with pytest.raises(ValidationError, match="two_theta_max_deg above"):
        BankConfig(wavelength=5.0, grid=GridConfig(two_theta_min_deg=5.0, two_theta_max_deg=20.0))
    assert BankConfig(wavelength="MoKa").wavelength_angstrom == pytest.approx(0.71073, abs=1e-4)


def test_phase_counts_follow_the_categorical():
    n = 40_000
    config = RecipeConfig()
    counts = np.bincount(sample_phase_counts(np.random.default_rng(0), n, config), minlength=6)[1:]
    expected = n * np.asarray(config.phase_count_probabilities)
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 18.47  # chi-square, 4 degrees of freedom, p = 0.001


def test_materials_distinct_from_pool_and_weights_floored():
    rng = np.random.default_rng(1)
    config = RecipeConfig()
    n_phases = sample_phase_counts(rng, 20_000, config)
    pool = np.array([3, 7, 8, 20, 21, 33, 39])
    materials = sample_materials(rng, pool, n_phases)
    weights = sample_weights(rng, n_phases, config)
    for k in range(1, 6):
        rows = materials[n_phases == k]
        assert np.isin(rows[:, :k], pool).all() and (rows[:, k:] == -1).all()
        assert all(len(set(r[:k])) == k for r in rows)
        assert (weights[n_phases == k, :k] >= config.min_phase_weight - 1e-12).all()
        assert (weights[n_phases == k, k:] == 0).all()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-12)
    # Every pool member is drawn about equally often.
    frequency = np.bincount(materials[materials >= 0], minlength=40)[pool]
    assert frequency.min() > 0.9 * frequency.mean()
    with pytest.raises(ValueError, match="fewer than"):
        sample_materials(rng, pool[:2], np.array([3], dtype=np.int8))


@pytest.mark.parametrize("k", [1, 3])
def test_weighted_materials_follow_the_enumerated_set_probabilities(k):
    # Reference: every set of k distinct pool members, each with probability ∝ the product of its members'
    # weights (what independent weighted draws conditioned on distinctness give), summed into each member's
    # chance of being in the mixture.
    from itertools import combinations

    pool = np.array([2, 5, 9, 11, 17, 30])
    weight = np.array([1.0, 0.25, 1.0, 0.25, 0.5, 2.0])
    sets = list(combinations(range(pool.size), k))
    set_probability = np.array([np.prod(weight[list(c)]) for c in sets])
    set_probability /= set_probability.sum()
    expected = np.zeros(pool.size)
    for c, p in zip(sets, set_probability, strict=True):
        expected[list(c)] += p
    n = 40_000
    materials = sample_materials(np.random.default_rng(7), pool, np.full(n, k, dtype=np.int8), weight)
    assert all(len(set(r[:k])) == k for r in materials) and (materials[:, k:] == -1).all()
    counts = np.array([(materials == m).sum() for m in pool])
    chi2 = (((counts - n * expected) ** 2) / (n * expected)).sum()
    assert chi2 < 18.47  # chi-square over the five possible picks, 4 degrees of freedom, p = 0.001


def test_isotype_weight_draws_relatives_less_often():
    one_phase = (1.0, 0.0, 0.0, 0.0, 0.0)
    uniform_config = RecipeConfig(phase_count_probabilities=one_phase)
    config = RecipeConfig(phase_count_probabilities=one_phase, isotype_weight=0.25)
    library = PhaseLibrary(
        peak_offsets=np.arange(9, dtype=np.int64),
        peak_two_theta_deg=np.full(8, 30.0),
        peak_intensity=np.full(8, 100.0),
        spacegroup=np.full(8, 225, dtype=np.int16),
        isotype=np.array([False, False, False, False, True, True, True, True]),
    )
    pool = np.arange(8)
    params = sample_mixture_parameters(np.random.default_rng(3), pool, 40_000, config, GRID, library)
    share = np.isin(params.phase_material[:, 0], [4, 5, 6, 7]).mean()
    assert share == pytest.approx(4 * 0.25 / (4 + 4 * 0.25), abs=0.01)
    # Weight 1 (the default) or a library without relatives keeps A.1's uniform draw, draw for draw.
    uniform = [
        sample_mixture_parameters(np.random.default_rng(4), pool, 64, c, GRID, lib).phase_material
        for c, lib in [(uniform_config, library), (config, None), (uniform_config, None)]
    ]
    np.testing.assert_array_equal(uniform[0], uniform[2])
    np.testing.assert_array_equal(uniform[1], uniform[2])


def test_synthetic_weight_draws_generated_crystals_less_often():
    # Four read entries, two substituted relatives, two random crystals: each drawn in proportion to its weight.
    one_phase = (1.0, 0.0, 0.0, 0.0, 0.0)
    config = RecipeConfig(phase_count_probabilities=one_phase, isotype_weight=0.5, synthetic_weight=0.1)
    library = PhaseLibrary(
        peak_offsets=np.arange(9, dtype=np.int64),
        peak_two_theta_deg=np.full(8, 30.0),
        peak_intensity=np.full(8, 100.0),
        spacegroup=np.full(8, 225, dtype=np.int16),
        isotype=np.array([False] * 4 + [True] * 2 + [False] * 2),
        synthetic=np.array([False] * 6 + [True] * 2),
    )
    weight = np.array([1.0] * 4 + [0.5] * 2 + [0.1] * 2)
    n = 40_000
    params = sample_mixture_parameters(np.random.default_rng(5), np.arange(8), n, config, GRID, library)
    counts = np.bincount(params.phase_material[:, 0], minlength=8)
    expected = n * weight / weight.sum()
    chi2 = (((counts - expected) ** 2) / expected).sum()
    assert chi2 < 24.32  # chi-square, 7 degrees of freedom, p = 0.001
    # Weight 1 (the default) keeps A.1's uniform draw, draw for draw, whatever the column says.
    draws = [
        sample_mixture_parameters(np.random.default_rng(4), np.arange(8), 64, c, GRID, lib).phase_material
        for c, lib in [(RecipeConfig(phase_count_probabilities=one_phase), library),
                       (RecipeConfig(phase_count_probabilities=one_phase), None)]
    ]  # fmt: skip
    np.testing.assert_array_equal(draws[0], draws[1])


def test_element_masks_hold_the_formulas_elements():
    from pymatgen.core import Composition

    formulas = ["Fe", "Ca0.5Mg0.5CO3", "Si4H31.968N8F24", "Fe1.56Ag0.44", "UO2", "Og"]
    masks = element_masks(formulas)
    for formula, (low, high) in zip(formulas, masks, strict=True):
        bits = {z + 1 for z in range(64) if int(low) >> z & 1} | {
            z + 65 for z in range(64) if int(high) >> z & 1
        }
        assert bits == {element.Z for element in Composition(formula).elements}, formula


def _related_library(formulas: list[str]) -> PhaseLibrary:
    m = len(formulas)
    return PhaseLibrary(
        peak_offsets=np.arange(m + 1, dtype=np.int64),
        peak_two_theta_deg=np.full(m, 30.0),
        peak_intensity=np.full(m, 100.0),
        spacegroup=np.full(m, 225, dtype=np.int16),
        element_mask=element_masks(formulas),
    )


def test_related_phases_follow_the_enumerated_two_step_draw():
    # The first phase holds Fe and Ni (O does not count): an element of it uniformly, then a material holding that
    # element with the pool's weights, redrawn where it is the first phase itself.
    formulas = ["FeNiO2", "Fe", "Ni", "FeCr", "Cr", "H2O", "NiO", "Fe2O3"]
    weight = np.array([1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 0.1, 2.0])
    holds = {"Fe": np.isin(np.arange(8), [0, 1, 3, 7]), "Ni": np.isin(np.arange(8), [0, 2, 6])}
    one_try = sum(0.5 * weight * holds[e] / (weight * holds[e]).sum() for e in ("Fe", "Ni"))
    expected_share = np.where(np.arange(8) == 0, 0.0, one_try) / (1.0 - one_try[0])
    n = 40_000
    materials = np.full((n, 5), -1, dtype=np.int32)
    materials[:, 0], materials[:, 1] = 0, 4  # Cr: unrelated, replaced every time (p = 1)
    out = draw_related_phases(
        np.random.default_rng(3), materials, np.arange(8), weight, _related_library(formulas), 1.0
    )
    np.testing.assert_array_equal(out[:, [0, 2, 3, 4]], materials[:, [0, 2, 3, 4]])
    counts = np.bincount(out[:, 1], minlength=8)
    expected = n * expected_share
    nonzero = expected > 0
    assert not counts[~nonzero].any()
    chi2 = (((counts[nonzero] - expected[nonzero]) ** 2) / expected[nonzero]).sum()
    assert chi2 < 20.52  # chi-square, 5 degrees of freedom, p = 0.001


def test_related_phases_stay_distinct_and_keep_draws_they_cannot_replace():
    formulas = ["Fe", "FeO", "H2O", "Fe2O3", "SiO2", "Al2O3"]
    library = _related_library(formulas)
    materials = np.array([[0, 4, 5, -1, -1], [2, 4, -1, -1, -1], [4, 0, -1, -1, -1]] * 200, dtype=np.int32)
    out = draw_related_phases(np.random.default_rng(0), materials, np.arange(6), None, library, 1.0)
    fe = out[0::3]
    related = np.isin(fe[:, 1:3], [1, 3])
    assert (related | (fe[:, 1:3] == materials[0, 1:3])).all() and (fe[:, 1] != fe[:, 2]).all()
    # A slot keeps its draw only when RELATED_PHASE_TRIES tries all hit a phase already there.
    assert related.mean() > 1 - 10 * (2 / 3) ** RELATED_PHASE_TRIES
    np.testing.assert_array_equal(out[1::3], materials[1::3])  # water: no element but H and O
    # Silica's only relative is itself: the independent draw stays after RELATED_PHASE_TRIES tries.
    np.testing.assert_array_equal(out[2::3], materials[2::3])
    # A pool with no element but H and O: nothing to relate by.
    water = np.array([[0, 1, 2, -1, -1]] * 10, dtype=np.int32)
    only_water = _related_library(["H2O", "H2O2", "O2"])
    np.testing.assert_array_equal(
        draw_related_phases(np.random.default_rng(0), water, np.arange(3), None, only_water, 1.0), water
    )
    no_elements = PhaseLibrary(
        peak_offsets=library.peak_offsets,
        peak_two_theta_deg=library.peak_two_theta_deg,
        peak_intensity=library.peak_intensity,
        spacegroup=library.spacegroup,
    )
    with pytest.raises(ValueError, match="element_mask"):
        draw_related_phases(np.random.default_rng(0), materials, np.arange(6), None, no_elements, 0.5)


def test_related_phases_change_nothing_but_the_materials():
    formulas = ["Fe", "FeO", "Fe2O3", "Ni", "NiO", "Cu", "Cu2O", "SiO2", "Al2O3", "CaCO3"] * 3
    library = _related_library(formulas)
    draws = {
        p: sample_mixture_parameters(
            np.random.default_rng(8),
            np.arange(30),
            2000,
            RecipeConfig(related_phase_probability=p),
            GRID,
            library,
        )
        for p in (0.0, 0.5)
    }
    off, on = draws[0.0], draws[0.5]
    np.testing.assert_array_equal(off.n_phases, on.n_phases)
    np.testing.assert_array_equal(off.phase_weight, on.phase_weight)
    np.testing.assert_array_equal(off.standard_normal, on.standard_normal)
    for name in off.params:
        np.testing.assert_array_equal(off.params[name], on.params[name], err_msg=name)
    changed = (off.phase_material != on.phase_material).any(axis=1)
    assert 0.2 < changed.mean() < 0.7
    np.testing.assert_array_equal(off.phase_material[:, 0], on.phase_material[:, 0])
    with pytest.raises(ValidationError, match="related_phase_probability"):
        RecipeConfig(related_phase_probability=1.5)


@pytest.mark.parametrize("balance", [0.5, 1.0])
def test_space_group_balance_evens_draws_over_groups(balance):
    # Six materials of Fm-3m, two of P2_1/c: material weight n^-b gives each group a share proportional to n^(1-b).
    one_phase = (1.0, 0.0, 0.0, 0.0, 0.0)
    library = PhaseLibrary(
        peak_offsets=np.arange(9, dtype=np.int64),
        peak_two_theta_deg=np.full(8, 30.0),
        peak_intensity=np.full(8, 100.0),
        spacegroup=np.array([225] * 6 + [14] * 2, dtype=np.int16),
    )
    config = RecipeConfig(phase_count_probabilities=one_phase, space_group_balance=balance)
    params = sample_mixture_parameters(np.random.default_rng(5), np.arange(8), 40_000, config, GRID, library)
    first = params.phase_material[:, 0]
    share_225 = np.isin(first, np.arange(6)).mean()
    assert share_225 == pytest.approx(
        6 ** (1 - balance) / (6 ** (1 - balance) + 2 ** (1 - balance)), abs=0.01
    )
    # Within a group the draw stays uniform.
    per_material = np.bincount(first, minlength=8)[:6] / first.size
    np.testing.assert_allclose(per_material, share_225 / 6, atol=0.01)


def test_two_phase_weights_are_affine_dirichlet():
    # K = 2, α = 1: w_1 = 0.03 + 0.94·U(0, 1), so its mean is 0.5 and its variance 0.94²/12.
    rng = np.random.default_rng(2)
    w = sample_weights(rng, np.full(50_000, 2, dtype=np.int8), RecipeConfig())[:, 0]
    assert w.min() >= 0.03 and w.max() <= 0.97
    assert w.mean() == pytest.approx(0.5, abs=0.005)
    assert w.var() == pytest.approx(0.94**2 / 12, rel=0.03)


def test_every_sampled_parameter_lies_in_its_range(library):
    config = RecipeConfig()
    parameters = sample_mixture_parameters(np.random.default_rng(3), np.arange(40), 3000, config, GRID)
    p = parameters.params
    slots = np.arange(5)[None, :] < parameters.n_phases[:, None]
    ranges = {
        "zero_shift_deg": config.zero_shift_deg,
        "instrument_du_deg2": config.instrument_du_deg2,
        "instrument_dv_deg2": config.instrument_dv_deg2,
        "instrument_dw_deg2": config.instrument_dw_deg2,
        "window_low_deg": config.window_low_deg,
        "window_high_deg": config.window_high_deg,
        "baseline_coefficients": config.baseline_coefficient,
        "baseline_amplitude": config.baseline_amplitude,
        "floor_offset": config.floor_offset,
        "floor_slope": config.floor_slope,
        "noise_sigma": config.noise_sigma,
    }
    for name, (lo, hi) in ranges.items():
        assert lo <= p[name].min() and p[name].max() <= hi, name
        if hi > lo:  # the draw covers the range
            assert p[name].min() < lo + 0.01 * (hi - lo) and p[name].max() > hi - 0.01 * (hi - lo), name
    assert p["baseline_coefficients"].shape == (3000, config.baseline_order + 1)
    strain, size = p["microstrain"][slots], p["crystallite_size_nm"][slots]
    assert 0 <= strain.min() and strain.max() <= 0.0025
    assert 100.0 <= size.min() and size.max() <= 10**2.4
    # Log-uniform: log10 L is uniform, so its mean is the midpoint 2.2.
    assert np.log10(size).mean() == pytest.approx(2.2, abs=0.01)
    applied = p["orientation_applied"][slots]
    assert applied.mean() == pytest.approx(0.6, abs=0.02)
    assert not p["orientation_applied"][~slots].any()
    strength = p["orientation_strength"][slots][applied]
    assert -0.18 <= strength.min() and strength.max() <= 0.18
    for name in ("microstrain", "crystallite_size_nm", "orientation_strength"):
        assert (p[name][~slots] == 0).all(), name


def test_microstructure_uses_the_config_ranges():
    config = RecipeConfig(microstrain=(0.001, 0.002), crystallite_size_log10_nm=(1.0, 1.5))
    p = sample_microstructure(np.random.default_rng(4), np.full(500, 5, dtype=np.int8), config)
    assert 0.001 <= p["microstrain"].min() and p["microstrain"].max() <= 0.002
    assert 10.0 <= p["crystallite_size_nm"].min() and p["crystallite_size_nm"].max() <= 10**1.5


@pytest.mark.parametrize("baseline_mode", ["multiplicative", "additive"])
@pytest.mark.parametrize("pre_mix_normalization", ["strongest_line", "total_intensity"])
def test_exact_engine_matches_numpy_reference(library, baseline_mode, pre_mix_normalization):
    # Tail truncation is the only approximation of the exact engine; a tiny tolerance leaves float rounding.
    config = RecipeConfig(
        tail_tolerance_sigma=1e-6, baseline_mode=baseline_mode, pre_mix_normalization=pre_mix_normalization
    )
    parameters = sample_mixture_parameters(np.random.default_rng(5), np.arange(40), 6, config, GRID)
    fast, _ = render_mixtures(parameters, library, config, GRID)
    reference = render_reference(parameters, library, config, GRID)
    np.testing.assert_allclose(fast, reference, atol=2e-5, rtol=1e-5)


def test_default_tail_cut_is_below_the_noise():
    # Against the untruncated reference, on sticks of realistic number (50-400 per phase): the dropped tails
    # and skipped weak sticks leave a smooth deficit before normalisation. Bound it by the sample's own noise
    # std and by A.1's smallest std (docs/physics.md states both bounds).
    library = synthetic_library(np.random.default_rng(12), 200, GRID, peaks=(50, 400), with_dense=False)
    config = RecipeConfig()
    parameters = sample_mixture_parameters(np.random.default_rng(6), np.arange(200), 12, config, GRID)
    fast, _ = render_clean_mixtures(parameters, library, config, GRID)
    reference = render_reference(parameters, library, config, GRID, clean=True)
    deviation = np.abs(fast - reference).max(axis=1)
    own = (deviation / parameters.params["noise_sigma"]).max()
    smallest = deviation.max() / SMALLEST_NOISE_SIGMA
    print(f"default tail cut vs reference: max |Δ| = {own:.3f} σ (own), {smallest:.3f} σ_min")
    assert own < 0.3 and smallest < 0.6
    # The cut is the only approximation that matters: a 100x smaller one is 10x closer.
    tight = config.model_copy(update={"tail_tolerance_sigma": config.tail_tolerance_sigma / 100})
    closer = np.abs(render_clean_mixtures(parameters, library, tight, GRID)[0] - reference).max()
    assert closer < 0.1 * deviation.max()
    # After normalisation the deviation stays below each pattern's own normalised noise std, too.
    pattern, _ = render_mixtures(parameters, library, config, GRID)
    normalised, levels = render_reference(parameters, library, config, GRID, return_levels=True)
    ratio = np.abs(pattern - normalised).max(axis=1) / (parameters.params["noise_sigma"] / levels)
    assert ratio.max() < 0.5


def test_tail_tolerance_scales_with_the_noise():
    config = RecipeConfig(tail_tolerance_sigma=0.02)
    np.testing.assert_allclose(tail_tolerances(np.array([0.001, 0.0025, 0.0]), config), [2e-5, 5e-5, 1.6e-5])


def _lut_and_exact(library, config: RecipeConfig, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised patterns (float64) of the same drawn parameters from the LUT and the exact engine."""
    parameters = sample_mixture_parameters(np.random.default_rng(seed), np.arange(40), n, config, GRID)
    lut, _ = render_mixtures(parameters, library, config.model_copy(update={"engine": "lut"}), GRID)
    exact, _ = render_mixtures(parameters, library, config.model_copy(update={"engine": "exact"}), GRID)
    return lut.astype(np.float64), exact.astype(np.float64)


def test_lut_engine_matches_exact_engine_per_bin(library):
    # Noise-free patterns at the default 32 levels, zero shifts of the full ±0.06° range. Measured on 256 such
    # patterns: per-sample max |Δ| / max <= 0.0022 (median 0.0007), top-20 bins within 0.0037 (median 0.0012);
    # before sub-bin kernels and shifting the sticks it was 0.31 and -31%..+52%.
    config = RecipeConfig(noise_sigma=(0.0, 0.0))
    lut, exact = _lut_and_exact(library, config, 64, 7)
    worst = np.abs(lut - exact).max(axis=1) / exact.max(axis=1)
    top = np.argsort(exact, axis=1)[:, -20:]
    top_exact = np.take_along_axis(exact, top, axis=1)
    top_error = np.abs(np.take_along_axis(lut, top, axis=1) - top_exact) / top_exact
    print(f"LUT vs exact: max |Δ|/max {worst.max():.4f}, top-20 relative {top_error.max():.4f}")
    assert worst.max() < 0.005
    assert top_error.max() < 0.0075


def test_lut_engine_error_falls_with_levels(library):
    config = RecipeConfig(noise_sigma=(0.0, 0.0))
    errors = {}
    for levels in (2, 4, 32):
        lut, exact = _lut_and_exact(library, config.model_copy(update={"lut_levels": levels}), 8, 7)
        errors[levels] = float(np.abs(lut - exact).max())
    print("LUT vs exact, max |Δ| (normalised units) by lut_levels:", errors)
    assert errors[2] > errors[4] > errors[32]


def test_lut_support_covers_every_stick_of_the_recipe(library):
    # The tables reach lut_support_bins from a stick, bounded from the recipe's largest area and widths and
    # its smallest cut; a table over the whole grid (noise σ from a range starting at 0) renders the same.
    config = RecipeConfig(engine="lut")
    parameters = sample_mixture_parameters(np.random.default_rng(12), np.arange(40), 16, config, GRID)
    bounded, _ = render_clean_mixtures(parameters, library, config, GRID)
    unbounded = config.model_copy(update={"noise_sigma": (0.0, config.noise_sigma[1])})
    assert smallest_tail_tolerance(unbounded) == 0.0
    whole, _ = render_clean_mixtures(parameters, library, unbounded, GRID)
    assert build_width_lut(config, GRID, smallest_tail_tolerance(config)).max_offset < GRID.n_bins // 4
    np.testing.assert_allclose(bounded, whole, rtol=1e-12, atol=1e-15)


def test_lut_engine_renders_the_sticks_not_the_dense_profiles(library):
    bare = PhaseLibrary(
        library.peak_offsets, library.peak_two_theta_deg, library.peak_intensity, library.spacegroup
    )
    config = RecipeConfig(engine="lut")
    with_dense = generate_batch(np.random.default_rng(0), library, np.arange(40), 4, config, GRID)
    without = generate_batch(np.random.default_rng(0), bare, np.arange(40), 4, config, GRID)
    assert with_dense.pattern.tobytes() == without.pattern.tobytes()


@pytest.mark.parametrize("engine", ["exact", "lut"])
def test_batch_contract_and_normalisation(library, engine):
    config = RecipeConfig(engine=engine)
    pool = np.arange(5, 35)
    batch = generate_batch(np.random.default_rng(8), library, pool, 32, config, GRID)
    assert batch.pattern.dtype == np.float32 and batch.pattern.shape == (32, GRID.n_bins)
    assert batch.window_bins.dtype == np.int32 and batch.n_phases.dtype == np.int8
    assert batch.phase_material.dtype == np.int32 and batch.phase_spacegroup.dtype == np.int16
    assert batch.phase_weight.dtype == np.float32
    centers = GRID.centers_deg()
    for s in range(32):
        lo, hi = batch.window_bins[s]
        inside = (centers >= batch.params["window_low_deg"][s]) & (
            centers <= batch.params["window_high_deg"][s]
        )
        assert np.array_equal(np.flatnonzero(inside), np.arange(lo, hi))
        assert (batch.pattern[s, :lo] == 0).all() and (batch.pattern[s, hi:] == 0).all()
        values = batch.pattern[s, lo:hi].astype(np.float64)
        assert values.min() >= 0.0
        assert np.percentile(values, 99) == pytest.approx(1.0, rel=1e-6)
        k = batch.n_phases[s]
        m = batch.phase_material[s]
        assert np.isin(m[:k], pool).all() and (m[k:] == -1).all()
        np.testing.assert_array_equal(batch.phase_spacegroup[s, :k], library.spacegroup[m[:k]])
        assert (batch.phase_spacegroup[s, k:] == 0).all()
    np.testing.assert_allclose(batch.phase_weight.sum(axis=1), 1.0, rtol=1e-6)
    assert not any(name.startswith("_") for name in batch.params)
    for value in batch.params.values():
        assert value.shape[0] == 32


@pytest.mark.parametrize("engine", ["exact", "lut"])
def test_deterministic_across_thread_counts(library, engine):
    config = RecipeConfig(engine=engine)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = generate_batch(np.random.default_rng(9), library, np.arange(40), 16, config, GRID)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = generate_batch(np.random.default_rng(9), library, np.arange(40), 16, config, GRID)
    finally:
        numba.set_num_threads(threads)
    assert one.pattern.tobytes() == many.pattern.tobytes()
    for name in one.params:
        assert one.params[name].tobytes() == many.params[name].tobytes(), name
    other = generate_batch(np.random.default_rng(10), library, np.arange(40), 16, config, GRID)
    assert one.pattern.tobytes() != other.pattern.tobytes()
