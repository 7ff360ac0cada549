"""Bank store: build from mixed sources, skipped inputs, splits, resume, info, and the format itself
(peaks with their reflections, part files, the PhaseLibrary it loads)."""

from __future__ import annotations

import io
import logging
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from pymatgen.analysis.diffraction.xrd import XRDCalculator

from xrdsynth import bank as bank_mod
from xrdsynth.bank import SPLITS, Bank, BankError, PartFileError, decode_part, encode_part, split_of
from xrdsynth.bank_build import build_bank, compute_build_key
from xrdsynth.cli import main
from xrdsynth.config import BankConfig
from xrdsynth.diffraction import compute_peaks
from xrdsynth.recipe import PhaseLibrary
from xrdsynth.structures import describe, list_items, load_entry

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data" / "structures"


@pytest.fixture(scope="module")
def cif_dir(tmp_path_factory) -> Path:
    """A few real CIFs plus three bad files, in nested folders."""
    if not SHARED.exists():
        pytest.skip(f"shared structures not found at {SHARED}")
    d = tmp_path_factory.mktemp("cifs")
    (d / "sub").mkdir()
    for i, p in enumerate(sorted((SHARED / "xrd_autoanalyzer").glob("*.cif"))[:6]):
        shutil.copy(p, (d / "sub" if i % 2 else d) / p.name)
    (d / "garbage.cif").write_text("data_x\n_this is not a cif at all\n")
    (d / "empty.cif").write_text("")
    # Uranium-free but unknown element symbol: parses as nothing useful.
    (d / "zz_bad_element.cif").write_text(
        "data_bad\n_cell_length_a 4\n_cell_length_b 4\n_cell_length_c 4\n_cell_angle_alpha 90\n"
        "_cell_angle_beta 90\n_cell_angle_gamma 90\n_symmetry_space_group_name_H-M 'P 1'\n"
        "loop_\n_atom_site_label\n_atom_site_type_symbol\n_atom_site_fract_x\n_atom_site_fract_y\n"
        "_atom_site_fract_z\n_atom_site_occupancy\nXx1 Xx 0 0 0 1\n"
    )
    return d


@pytest.fixture(scope="module")
def built(cif_dir, tmp_path_factory) -> Bank:
    out = tmp_path_factory.mktemp("bank") / "bank.zarr"
    config = BankConfig(chunk_size=4)
    return build_bank([str(cif_dir), "random:1:1-12"], str(out), config, seed=3, workers=0)


def test_bank_contents_match_independent_calculation(built: Bank, cif_dir: Path) -> None:
    assert len(built) == 6 + 12
    ids = built.column("id")
    assert len(set(ids)) == len(ids)
    # Peaks stored equal a fresh calculation from the parsed structure, entry by entry.
    config = BankConfig()
    for source in (str(cif_dir), "random:1:1-12"):
        for item in list_items(source, seed=3):
            try:
                entry = load_entry(item, seed=3)
            except ValueError:
                continue
            if (
                entry.entry_id not in ids
            ):  # parsed, but failed later (no scattering factors): must be reported
                assert item.locator in {s.provenance for s in built.skipped}
                continue
            idx = int(np.flatnonzero(ids == entry.entry_id)[0])
            two_theta, d, intensity = built.peaks(idx)
            ref = compute_peaks(entry.structure, config.wavelength_angstrom, (5.0, 120.0))
            np.testing.assert_array_equal(two_theta, ref.two_theta_deg)
            np.testing.assert_array_equal(d, ref.d_spacing_angstrom)
            np.testing.assert_array_equal(intensity, ref.intensity)
            reflection_offsets, direction, weight = built.reflections(idx)
            np.testing.assert_array_equal(reflection_offsets, ref.reflection_offsets)
            np.testing.assert_array_equal(direction, ref.reflection_direction)
            np.testing.assert_array_equal(weight, ref.reflection_weight)
            info = describe(entry, config)
            assert built.column("spacegroup_number")[idx] == info.spacegroup_number
            assert built.column("reduced_formula")[idx] == info.reduced_formula
    # Random crystals are tagged synthetic and carry their target group as the given label.
    synthetic = built.column("synthetic")
    assert synthetic.sum() == 12
    assert set(built.column("given_spacegroup")[synthetic]) == set(range(1, 13))


def test_dense_profile_preserves_stick_area(built: Bank) -> None:
    profile = np.asarray(built.group["profile"][:])
    assert profile.shape == (len(built), 2048)
    for i in range(len(built)):
        _, _, intensity = built.peaks(i)
        assert profile[i].sum() == pytest.approx(intensity.sum(), rel=1e-4)


def test_bad_inputs_are_skipped_with_reasons(built: Bank) -> None:
    reasons = {Path(s.provenance).name: s.reason for s in built.skipped}
    assert {"garbage.cif", "empty.cif", "zz_bad_element.cif"} <= set(reasons)
    assert all(r for r in reasons.values())
    assert "skip reasons" in built.summary()


def test_library_carries_the_reflections(built: Bank) -> None:
    library = built.library()
    group = built.group["peaks"]
    n_peaks = int(group["offsets"][-1])
    offsets = library.reflection_offsets
    assert offsets.dtype == np.int64 and offsets.shape == (n_peaks + 1,)
    assert offsets[0] == 0 and np.all(np.diff(offsets) >= 1)
    n_reflections = int(offsets[-1])
    assert n_reflections > n_peaks  # the cubic and hexagonal entries merge several reflections per peak
    assert library.reflection_direction.dtype == np.float64
    assert library.reflection_direction.shape == (n_reflections, 3)
    assert library.reflection_weight.dtype == np.float64 and library.reflection_weight.shape == (
        n_reflections,
    )
    np.testing.assert_allclose(np.linalg.norm(library.reflection_direction, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.add.reduceat(library.reflection_weight, offsets[:-1]), 1.0, atol=1e-6)
    # The global arrays are the entries' own reflections laid end to end.
    for index in range(len(built)):
        lo, hi = library.peak_offsets[index], library.peak_offsets[index + 1]
        local_offsets, direction, weight = built.reflections(index)
        np.testing.assert_array_equal(offsets[lo : hi + 1] - offsets[lo], local_offsets)
        rows = slice(offsets[lo], offsets[hi])
        np.testing.assert_array_equal(library.reflection_direction[rows], direction)
        np.testing.assert_array_equal(library.reflection_weight[rows], weight)
    lean = built.library(with_reflections=False)
    assert (
        lean.reflection_offsets is None
        and lean.reflection_direction is None
        and lean.reflection_weight is None
    )
    np.testing.assert_array_equal(lean.peak_intensity, library.peak_intensity)


def test_library_carries_each_entrys_elements(built: Bank) -> None:
    from pymatgen.core import Composition

    masks = built.library().element_mask
    assert masks.dtype == np.uint64 and masks.shape == (len(built), 2)
    for formula, (low, high) in zip(built.column("reduced_formula"), masks, strict=True):
        z = {b + 1 for b in range(64) if int(low) >> b & 1} | {
            b + 65 for b in range(64) if int(high) >> b & 1
        }
        assert z == {element.Z for element in Composition(str(formula)).elements}, formula


def test_phase_library_checks_the_reflections_against_its_peaks(built: Bank) -> None:
    library = built.library()
    peaks_only = {
        "peak_offsets": library.peak_offsets,
        "peak_two_theta_deg": library.peak_two_theta_deg,
        "peak_intensity": library.peak_intensity,
        "spacegroup": library.spacegroup,
    }
    reflections = {
        "reflection_offsets": library.reflection_offsets,
        "reflection_direction": library.reflection_direction,
        "reflection_weight": library.reflection_weight,
    }
    assert (
        PhaseLibrary(**peaks_only).reflection_offsets is None
    )  # optional: libraries without them still work
    with pytest.raises(ValueError, match="together or not at all"):
        PhaseLibrary(**peaks_only, reflection_offsets=library.reflection_offsets)
    with pytest.raises(ValueError, match="reflection_offsets has shape"):
        PhaseLibrary(**peaks_only, **{**reflections, "reflection_offsets": library.reflection_offsets[:-1]})
    empty_peak = library.reflection_offsets.copy()
    empty_peak[1] = empty_peak[0]
    with pytest.raises(ValueError, match="every peak has a reflection"):
        PhaseLibrary(**peaks_only, **{**reflections, "reflection_offsets": empty_peak})
    with pytest.raises(ValueError, match="reflection_direction"):
        PhaseLibrary(
            **peaks_only, **{**reflections, "reflection_direction": library.reflection_direction[:, :2]}
        )
    with pytest.raises(ValueError, match="reflection_weight"):
        PhaseLibrary(**peaks_only, **{**reflections, "reflection_weight": library.reflection_weight[1:]})


def test_splits_are_deterministic_and_follow_fractions() -> None:
    fractions = (0.8, 0.1, 0.1)
    keys = [f"material-{i}" for i in range(20000)]
    splits = [split_of(k, 7, fractions) for k in keys]
    assert splits == [split_of(k, 7, fractions) for k in keys]
    counts = np.array([splits.count(s) for s in SPLITS]) / len(keys)
    np.testing.assert_allclose(counts, fractions, atol=0.01)
    assert splits != [split_of(k, 8, fractions) for k in keys]


def test_polymorphs_share_a_split(built: Bank) -> None:
    formula = built.column("reduced_formula")
    split = built.column("split")
    for f in set(formula):
        assert len(set(split[formula == f])) == 1


def test_resume_after_interruption_gives_identical_bank(cif_dir, tmp_path, monkeypatch) -> None:
    config = BankConfig(chunk_size=2)
    sources = [str(cif_dir), "random:1:1-4"]
    reference = build_bank(sources, str(tmp_path / "ref.zarr"), config, seed=1, workers=0)

    calls = {"n": 0}
    real = bank_mod.compute_chunk

    def flaky(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the third chunk
        return real(*args)

    monkeypatch.setattr("xrdsynth.bank_build.compute_chunk", flaky)
    url = str(tmp_path / "resumed.zarr")
    with pytest.raises(KeyboardInterrupt):
        build_bank(sources, url, config, seed=1, workers=0)
    with pytest.raises(BankError):
        Bank.open(url)  # nothing that reads as a complete bank exists yet
    done_before = len(list((tmp_path / "resumed.zarr.parts").rglob("chunk-*.npz")))
    assert done_before == 2

    calls["n"] = 100
    resumed = build_bank(sources, url, config, seed=1, workers=0)
    n_items = sum(len(list_items(s, seed=1)) for s in sources)
    assert calls["n"] - 100 == -(-n_items // 2) - done_before  # only the unfinished chunks were computed
    assert resumed.fingerprint == reference.fingerprint
    for name in ("id", "split", "spacegroup_number"):
        np.testing.assert_array_equal(resumed.column(name), reference.column(name))
    assert not (tmp_path / "resumed.zarr.parts").exists()


def test_dask_workers_give_the_same_bank(cif_dir, tmp_path) -> None:
    config = BankConfig(chunk_size=3)
    sources = [str(cif_dir), "random:1:200-206"]
    inline = build_bank(sources, str(tmp_path / "a.zarr"), config, seed=5, workers=0)
    dask = build_bank(sources, str(tmp_path / "b.zarr"), config, seed=5, workers=2)
    assert inline.fingerprint == dask.fingerprint
    np.testing.assert_array_equal(inline.group["profile"][:], dask.group["profile"][:])


def test_existing_bank_is_reused_or_refused(built: Bank, cif_dir) -> None:
    again = build_bank(
        [str(cif_dir), "random:1:1-12"], built.url, BankConfig(chunk_size=4), seed=3, workers=0
    )
    assert again.fingerprint == built.fingerprint
    with pytest.raises(BankError, match="--overwrite"):
        build_bank([str(cif_dir)], built.url, BankConfig(chunk_size=4), seed=3, workers=0)


def test_a_users_folder_or_file_at_out_is_refused_before_any_work(cif_dir, tmp_path) -> None:
    """`--out` naming a folder of the user's (even the source folder) or a file is refused up front and left
    untouched: writing the bank there would empty it."""
    folder = tmp_path / "mine"
    shutil.copytree(cif_dir, folder)
    before = sorted(p.name for p in folder.iterdir())
    for overwrite in (False, True):
        with pytest.raises(BankError, match="mine is a folder that holds other files, not a Zarr store"):
            build_bank(
                [str(folder)], str(folder), BankConfig(chunk_size=4), seed=3, workers=0, overwrite=overwrite
            )
    assert sorted(p.name for p in folder.iterdir()) == before
    (tmp_path / "bank.txt").write_text("notes")
    with pytest.raises(BankError, match="bank.txt is a file, not a store or folder; choose another --out"):
        build_bank([str(cif_dir)], str(tmp_path / "bank.txt"), BankConfig(chunk_size=4), seed=3, workers=0)
    assert not (tmp_path / "bank.txt.parts").exists()  # refused before any chunk was computed


def test_two_sources_with_one_file_name_keep_both_structures(tmp_path) -> None:
    """Ids of files are their paths inside the source: a second source's different file under the same name gets
    its folder's name in front (the shared set's robocrys and aflow both hold AB_oP8_62_c_c.cif: FeB and SnS),
    while one folder given twice is still one structure and a duplicate."""
    if not SHARED.exists():
        pytest.skip(f"shared structures not found at {SHARED}")
    for folder in ("robocrys", "aflow"):
        (tmp_path / folder).mkdir()
        shutil.copy(SHARED / folder / "AB_oP8_62_c_c.cif", tmp_path / folder)
    sources = [
        str(tmp_path / "robocrys"),
        str(tmp_path / "aflow"),
        f"{tmp_path}/./robocrys/",
        f"{tmp_path}/aflow/",
    ]
    bank = build_bank(sources, str(tmp_path / "b.zarr"), BankConfig(), seed=0, workers=0)
    ids = list(bank.group["entries/id"][:])
    formulas = list(bank.group["entries/reduced_formula"][:])
    assert ids == ["AB_oP8_62_c_c", "aflow/AB_oP8_62_c_c"] and formulas == ["FeB", "SnS"]
    # Each folder listed twice: the renamed input keeps its new id the second time, so both are duplicates.
    assert [s.reason for s in bank.skipped] == [
        "duplicate id AB_oP8_62_c_c",
        "duplicate id aflow/AB_oP8_62_c_c",
    ]


def test_open_refuses_wrong_format_version(built: Bank, tmp_path) -> None:
    copy = tmp_path / "copy.zarr"
    shutil.copytree(built.url, copy)
    zarr.open_group(str(copy), mode="r+").attrs["format_version"] = 999
    with pytest.raises(BankError, match="version 999"):
        Bank.open(str(copy))
    # A bank of the first format (no reflections) is refused with the way out.
    zarr.open_group(str(copy), mode="r+").attrs["format_version"] = 1
    with pytest.raises(BankError, match="version 1, this xrdsynth reads version 2; rebuild it"):
        Bank.open(str(copy))
    with pytest.raises(BankError, match="no bank store"):
        Bank.open(str(tmp_path / "missing.zarr"))


def test_cli_build_and_info(cif_dir, tmp_path) -> None:
    runner = CliRunner()
    out = str(tmp_path / "cli.zarr")
    result = runner.invoke(main, ["bank", "build", "--source", str(cif_dir), "--out", out, "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "per crystal system" in result.output
    info = runner.invoke(main, ["bank", "info", out, "--skipped"])
    assert info.exit_code == 0, info.output
    assert "garbage.cif" in info.output
    bad = runner.invoke(
        main, ["bank", "build", "--source", str(cif_dir), "--out", out, "--split-fractions", "0.5,0.5,0.5"]
    )
    assert bad.exit_code != 0 and "split_fractions" in bad.output
    for option, value, message in (
        ("--split-fractions", "abc", "--split-fractions 'abc': give three numbers separated by commas"),
        ("--workers", "-1", "-1 is not in the range x>=0"),  # a cluster of no workers would wait forever
    ):
        refused = runner.invoke(
            main, ["bank", "build", "--source", str(cif_dir), "--out", out, option, value]
        )
        assert refused.exit_code != 0 and message in refused.output
    nothing = runner.invoke(
        main,
        [
            "bank",
            "build",
            "--source",
            str(cif_dir / "garbage.cif"),
            "--out",
            str(tmp_path / "n.zarr"),
            "--workers",
            "0",
        ],
    )
    assert nothing.exit_code != 0 and "no structure could be built" in nothing.output


def test_deduplicate_across_sources_and_e_above_hull(cif_dir, tmp_path) -> None:
    """The same structures given twice (a folder and a zip of it) are kept once with --deduplicate."""
    import zipfile

    good = sorted(p for p in cif_dir.rglob("*.cif") if p.name[0].isupper())[:3]
    archive = tmp_path / "again.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in good:
            z.write(p, p.name)
    folder = tmp_path / "folder"
    folder.mkdir()
    for p in good:
        shutil.copy(p, folder / p.name)
    plain = build_bank([str(folder), str(archive)], str(tmp_path / "plain.zarr"), BankConfig(), workers=0)
    dedup = build_bank(
        [str(folder), str(archive)], str(tmp_path / "dedup.zarr"), BankConfig(deduplicate=True), workers=0
    )
    assert len(plain) == 6 and len(dedup) == 3
    assert set(dedup.column("source")) == {str(folder)}
    assert sum("near-duplicate" in s.reason for s in dedup.skipped) == 3

    from pymatgen.core import Structure

    csv_path = tmp_path / "hull.csv"
    rows = ["id,cif,energy_above_hull"]
    for i, (p, e) in enumerate(zip(good, (0.0, 0.05, 0.3), strict=True)):
        cif = Structure.from_file(p).to(fmt="cif").replace('"', '""')
        rows.append(f'm{i},"{cif}",{e}')
    csv_path.write_text("\n".join(rows) + "\n")
    hull = build_bank([str(csv_path)], str(tmp_path / "hull.zarr"), BankConfig(), workers=0)
    assert list(hull.column("id")) == ["m0", "m1"]
    np.testing.assert_allclose(hull.column("e_above_hull_ev_per_atom"), [0.0, 0.05])
    assert any("e_above_hull 0.3" in s.reason for s in hull.skipped)


# ------------------------------------------------------------------ untrusted inputs and part files


def _small_cif_folder(root: Path) -> Path:
    """Four small CIFs written by pymatgen (no shared data needed); cell lengths are written '%.8f'."""
    from pymatgen.core import Lattice, Structure

    folder = root / "cifs"
    folder.mkdir()
    for name, a, species in (
        ("NaCl", 5.64, ["Na", "Cl"]),
        ("KCl", 6.29, ["K", "Cl"]),
        ("MgO", 4.21, ["Mg", "O"]),
    ):
        s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), species, [[0, 0, 0], [0.5, 0.5, 0.5]])
        s.to(filename=str(folder / f"{name}.cif"))
    cscl = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    cscl.to(filename=str(folder / "CsCl.cif"))
    return folder


class _Payload:
    """Unpickling this creates `marker`: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_planted_pickles_in_part_files_never_run_code(tmp_path, caplog) -> None:
    folder = _small_cif_folder(tmp_path)
    config = BankConfig(chunk_size=2)
    reference = build_bank([str(folder)], str(tmp_path / "ref.zarr"), config, workers=0)
    key = compute_build_key(list_items(str(folder)), config, 0)
    assert reference.attrs["build_key"] == key
    parts = tmp_path / "bank.zarr.parts" / key
    parts.mkdir(parents=True)

    # The payloads are live: unpickling them the ordinary way does create the marker.
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(control)))
    assert control.exists()
    control.unlink()
    np.savez(parts / "chunk-000001.npz", peak_offsets=np.array([_Payload(control)], dtype=object))
    np.load(parts / "chunk-000001.npz", allow_pickle=True)["peak_offsets"]
    assert control.exists()

    markers = [tmp_path / f"ran-{i}" for i in range(3)]
    (parts / "chunk-000000.pkl").write_bytes(pickle.dumps(_Payload(markers[0])))  # the old part format
    (parts / "chunk-000000.npz").write_bytes(pickle.dumps(_Payload(markers[1])))  # a pickle named as a part
    # Every array a part holds, one of them an object array whose element is the payload.
    planted = {name: np.zeros(0) for name in bank_mod._PART_ARRAYS}
    planted["peak_offsets"] = np.array([_Payload(markers[2])], dtype=object)
    np.savez(parts / "chunk-000001.npz", **planted)
    with caplog.at_level(logging.WARNING, logger="xrdsynth.bank"):
        rebuilt = build_bank([str(folder)], str(tmp_path / "bank.zarr"), config, workers=0)
    assert not any(m.exists() for m in markers)
    # Both chunks were computed again, so the bank is the one a clean build gives.
    assert rebuilt.fingerprint == reference.fingerprint
    log_text = caplog.text
    assert "ignoring" in log_text and "chunk-000000.pkl" in log_text
    assert log_text.count("is not a valid part file") == 2
    assert "Object arrays cannot be loaded" in log_text


def test_part_files_keep_the_reflections_and_refuse_inconsistent_ones(tmp_path) -> None:
    folder = _small_cif_folder(tmp_path)
    result = bank_mod.compute_chunk(list_items(str(folder)), BankConfig(), 0)
    assert len(result["peaks"]) == 4
    data = encode_part(result, 2048)
    decoded = decode_part(data, 2048)
    for original, restored in zip(result["peaks"], decoded["peaks"], strict=True):
        assert len(original) == len(restored) == 6
        for a, b in zip(original, restored, strict=True):
            np.testing.assert_array_equal(a, b)

    def tampered(**changes) -> bytes:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        arrays.update(changes)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        offsets, weight = npz["reflection_offsets"], npz["reflection_weight"]
    # Chunk-wide offsets over all the chunk's peaks; each decoded entry's own offsets start at 0 again.
    assert offsets.shape == (sum(len(p[0]) for p in result["peaks"]) + 1,)
    assert all(p[3][0] == 0 and p[3][-1] == len(p[5]) for p in decoded["peaks"])
    with pytest.raises(PartFileError, match="reflection offsets shape"):
        decode_part(tampered(reflection_offsets=offsets[:-1]), 2048)
    with pytest.raises(PartFileError, match="every peak has a reflection"):
        decode_part(tampered(reflection_offsets=np.concatenate([[0, 0], offsets[2:]])), 2048)
    with pytest.raises(PartFileError, match="reflection_weight shape"):
        decode_part(tampered(reflection_weight=weight.astype(np.float64)), 2048)
    with pytest.raises(PartFileError, match="reflection_direction shape"):
        decode_part(tampered(reflection_direction=np.zeros((int(offsets[-1]) - 1, 3), np.float32)), 2048)


def test_edited_source_file_is_rebuilt(tmp_path, caplog) -> None:
    folder = _small_cif_folder(tmp_path)
    url = str(tmp_path / "bank.zarr")
    first = build_bank([str(folder)], url, BankConfig(), workers=0)
    ids = list(first.column("id"))
    before = first.column("lattice_abc_angstrom")[ids.index("NaCl")].copy()
    np.testing.assert_allclose(before, [5.64, 5.64, 5.64])

    # Same size and modification time: only the bytes tell that the file changed.
    path = folder / "NaCl.cif"
    stat = path.stat()
    text = path.read_text()
    assert text.count("_cell_length_a   5.64000000") == 1
    path.write_text(text.replace("_cell_length_a   5.64000000", "_cell_length_a   5.70000000"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns

    with caplog.at_level(logging.WARNING, logger="xrdsynth.bank_build"):
        second = build_bank([str(folder)], url, BankConfig(), workers=0)
    assert "changed since it was built" in caplog.text
    np.testing.assert_allclose(second.column("lattice_abc_angstrom")[ids.index("NaCl")], [5.70, 5.64, 5.64])
    assert second.fingerprint != first.fingerprint
    assert second.attrs["build_key"] != first.attrs["build_key"]
    # Unchanged inputs: the bank is reused as it is.
    assert build_bank([str(folder)], url, BankConfig(), workers=0).fingerprint == second.fingerprint


def test_unusable_sources_are_reported_and_the_rest_built(tmp_path) -> None:
    folder = _small_cif_folder(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    no_cif_column = tmp_path / "table.csv"
    no_cif_column.write_text("id,formula\nm1,NaCl\n")
    broken_json = tmp_path / "broken.json"
    broken_json.write_text('[{"structure": ')
    missing = tmp_path / "missing.cif"
    bad = [str(empty), str(no_cif_column), str(broken_json), str(missing)]
    sources = [bad[0], str(folder), *bad[1:]]

    bank = build_bank(sources, str(tmp_path / "bank.zarr"), BankConfig(), workers=0)
    assert len(bank) == 4
    reasons = {s.source: s.reason for s in bank.skipped}
    assert set(reasons) == set(bad)
    assert all(r.startswith("unusable source:") for r in reasons.values())
    assert "contains no *.cif" in reasons[str(empty)]
    assert "no 'cif' column" in reasons[str(no_cif_column)]
    assert "not valid JSON" in reasons[str(broken_json)]
    assert "neither an existing path" in reasons[str(missing)]

    with pytest.raises(ValueError, match=r"empty.*contains no \*\.cif files.*--strict"):
        build_bank(sources, str(tmp_path / "strict.zarr"), BankConfig(), workers=0, strict=True)
    with pytest.raises(ValueError, match="(?s)contain no structures.*no 'cif' column"):
        build_bank(bad, str(tmp_path / "none.zarr"), BankConfig(), workers=0)

    runner = CliRunner()
    args = ["bank", "build", "--workers", "0"] + [a for s in sources for a in ("--source", s)]
    ok = runner.invoke(main, [*args, "--out", str(tmp_path / "cli.zarr")])
    assert ok.exit_code == 0, ok.output
    assert "unusable source" in ok.output  # the summary's skip reasons
    strict = runner.invoke(main, [*args, "--out", str(tmp_path / "cli-strict.zarr"), "--strict"])
    assert strict.exit_code != 0 and "contains no *.cif files" in strict.output
    assert not (tmp_path / "cli-strict.zarr").exists()


def test_bad_items_are_reported_and_the_rest_built(tmp_path, monkeypatch) -> None:
    from xrdsynth.structures import cif_files

    folder = _small_cif_folder(tmp_path)
    nacl = (folder / "NaCl.cif").read_text()
    rows = [f"Si{i} Si {i / 1e4:.5f} {(i * 7 % 10000) / 1e4:.5f} 0.5 1" for i in range(10_000)]
    big = nacl.split("loop_")[0] + (
        "loop_\n _symmetry_equiv_pos_as_xyz\n  'x, y, z'\nloop_\n _atom_site_type_symbol\n _atom_site_label\n"
        " _atom_site_fract_x\n _atom_site_fract_y\n _atom_site_fract_z\n _atom_site_occupancy\n"
        + "\n".join(rows)
        + "\n"
    )
    monkeypatch.setattr(cif_files, "MAX_CIF_BYTES", 1 << 20)
    archive = tmp_path / "members.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(
            "negative.cif", nacl.replace("_cell_length_a   5.64000000", "_cell_length_a   -5.64000000")
        )
        zf.writestr("big.cif", big)
        with zf.open("bomb.cif", "w") as member:
            for _ in range(50):
                member.write(b"0" * (1 << 20))
    assert archive.stat().st_size < 300_000

    bank = build_bank([str(folder), str(archive)], str(tmp_path / "bank.zarr"), BankConfig(), workers=0)
    assert len(bank) == 4
    reasons = {s.provenance: s.reason for s in bank.skipped}
    assert (
        "_cell_length_a = -5.64000000: cell lengths must be positive" in reasons[f"{archive}::negative.cif"]
    )
    # Only the text check says "lists ... distinct positions": big.cif was never handed to pymatgen.
    assert "lists more than max_sites=1000 distinct positions" in reasons[f"{archive}::big.cif"]
    assert "52428800 bytes exceed the 1048576-byte limit" in reasons[f"{archive}::bomb.cif"]


def test_displacement_parameters_reach_the_bank_and_can_be_turned_off(tmp_path) -> None:
    """A CIF with B values is diffracted with them (column thermal_displacement True) and one without as at
    rest; BankConfig(displacement_parameters=False) gives pymatgen's at-rest pattern for both (the paper's
    bank), and its library flags no material."""
    if not SHARED.exists():
        pytest.skip(f"shared structures not found at {SHARED}")
    d = tmp_path / "cifs"
    d.mkdir()
    for name in ("bgmn/BGMN__ANNITE.cif", "xrd_autoanalyzer/La2O3_164.cif"):
        shutil.copy(SHARED / name, d / Path(name).name)
    entries = {load_entry(item).entry_id: load_entry(item).structure for item in list_items(str(d))}
    for flag in (True, False):
        config = BankConfig(displacement_parameters=flag)
        bank = build_bank([str(d)], str(tmp_path / f"bank-{flag}.zarr"), config, seed=0, workers=0)
        thermal = dict(zip(bank.column("id"), bank.column("thermal_displacement"), strict=True))
        assert thermal == {i: flag and "ANNITE" in i for i in entries}
        np.testing.assert_array_equal(bank.library().thermal_displacement, list(thermal.values()))
        for index, entry_id in enumerate(bank.column("id")):
            structure = entries[entry_id].copy()
            if not flag and "U11_cif" in structure.site_properties:
                for name in ("U11_cif", "U22_cif", "U33_cif", "U23_cif", "U13_cif", "U12_cif"):
                    structure.remove_site_property(name)
            reference = XRDCalculator(config.wavelength_angstrom).get_pattern(
                structure, scaled=True, two_theta_range=(5.0, 120.0)
            )
            np.testing.assert_allclose(bank.peaks(index)[2], reference.y, rtol=1e-9, atol=1e-9)


def test_the_energy_filter_can_be_switched_off_over_a_config(tmp_path) -> None:
    config = tmp_path / "bank.json"
    config.write_text('{"max_e_above_hull_ev_per_atom": 0.05}')
    args = ["bank", "build", "--source", "random:1:1-2", "--workers", "0", "--config", str(config)]
    result = CliRunner().invoke(
        main, [*args, "--out", str(tmp_path / "b.zarr"), "--max-e-above-hull", "none"]
    )
    assert result.exit_code == 0, result.output
    stored = zarr.open_group(str(tmp_path / "b.zarr"), mode="r").attrs["config"]
    assert stored["max_e_above_hull_ev_per_atom"] is None
    bad = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "c.zarr"), "--max-e-above-hull", "low"])
    assert bad.exit_code == 1 and "--max-e-above-hull 'low': give a number, or 'none'" in bad.output
    # Asked for, on structures that give no e_above_hull, the filter removes nothing: the build says so.
    unfiltered = CliRunner().invoke(
        main, [*args, "--out", str(tmp_path / "d.zarr"), "--max-e-above-hull", "0.1"]
    )
    assert unfiltered.exit_code == 0, unfiltered.output
    assert "warning: --max-e-above-hull 0.1 removed nothing: no entry's metadata give e_above_hull" in (
        unfiltered.output
    )
    assert "removed nothing" not in result.output
