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


def test_materials_are_drawn_from_the_read_entries_only(bench, tmp_path) -> None:
    """Generated crystals (entries/synthetic) are not drawn while the bank holds read entries; a bank of generated
    crystals only is drawn whole."""
    import zarr

    def bank(synthetic: list[bool]) -> zarr.Group:
        root = zarr.open_group(str(tmp_path / f"bank{len(synthetic)}{sum(synthetic)}.zarr"), mode="w")
        n = len(synthetic)
        entries = root.create_group("entries")
        for name, values in (
            ("id", [f"e{i}" for i in range(n)]),
            ("split", ["train"] * n),
            ("reduced_formula", ["X"] * n),
        ):
            entries.create_array(name, shape=(n,), dtype=str, chunks=(n,))[:] = np.array(values)
        entries.create_array("spacegroup_number", data=np.arange(1, n + 1, dtype=np.int64))
        entries.create_array("synthetic", data=np.array(synthetic, dtype=bool))
        return root

    mixed = bench.pick_materials(bank([False, True, True, False, True, False]), 10, 0, "all")
    assert [m.index for m in mixed] == [0, 3, 5]
    generated = bench.pick_materials(bank([True, True, True]), 10, 0, "train")
    assert [m.index for m in generated] == [0, 1, 2]
