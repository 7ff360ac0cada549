"""The wavelength benchmark's simulated measurements (`pipelines/bench_wavelength.py`) are physically right."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline_scripts import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script(
        "bench_wavelength", "pipelines/bench_wavelength.py", register=True
    )  # for its dataclasses


def test_bank_peaks_moved_through_d_spacing_equal_peaks_computed_at_the_new_wavelength(bench) -> None:
    """The fallback for materials without a structure (Cu peaks through d-spacing, LP re-weighted) gives the
    peaks the structure itself gives at Mo Kα: same positions and, rescaled alike, same intensities."""
    from pymatgen.core import Lattice, Structure

    from xrdsynth.diffraction import compute_peaks

    rock_salt = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    cu = compute_peaks(rock_salt, 1.54184, (5.0, 120.0))
    mo = compute_peaks(rock_salt, 0.71073, (2.0, 40.0))
    two_theta, intensity = bench.peaks_through_d_spacing(
        cu.two_theta_deg, cu.d_spacing_angstrom, cu.intensity, 0.71073, (2.0, 40.0)
    )
    assert two_theta.size == mo.two_theta_deg.size > 5
    np.testing.assert_allclose(two_theta, mo.two_theta_deg, atol=1e-9)
    np.testing.assert_allclose(intensity / intensity.max(), mo.intensity / mo.intensity.max(), rtol=1e-9)


def test_rendered_peaks_keep_their_integrated_intensity(bench) -> None:
    """Each rendered peak has unit area times its intensity, whatever its width and wavelength."""
    for instrument in bench.INSTRUMENTS:
        lo, hi = instrument.two_theta_min_deg, instrument.two_theta_max_deg
        centres = np.array([lo + 0.3 * (hi - lo), lo + 0.6 * (hi - lo)])
        pattern = bench.render(instrument, centres, np.array([100.0, 40.0]))
        # Lorentzian tails beyond the axis hold under 1% of the area at these widths.
        assert pattern.sum() * instrument.step_deg == pytest.approx(140.0, rel=0.01)
        assert pattern.argmax() == np.abs(instrument.axis() - centres[0]).argmin()
