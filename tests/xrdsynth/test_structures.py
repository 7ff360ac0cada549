"""Tests of `xrdsynth.structures`: every --source form, the shared structure collection, and bad inputs.

Expected structures come from pymatgen directly (CifParser on the original file, or the Structure the
test built); expected space groups come from the shared collection's index.csv, which was made
independently of this module.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import pickle
import tarfile
import time
import warnings
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifParser, CifWriter

from xrdsynth.config import BankConfig
from xrdsynth.structures import (
    Entry,
    SourceItem,
    StructureError,
    describe,
    input_file,
    list_items,
    load_entry,
)

REPO = Path(__file__).resolve().parents[2]
STRUCTURES = REPO.parent / "shared" / "data" / "structures"
CURATED_COUNTS = {"bgmn": 887, "iucr": 14, "xrd_autoanalyzer": 74, "robocrys": 140, "aflow": 104}


def _shared() -> Path:
    if not (STRUCTURES / "index.csv").is_file():
        pytest.skip(f"shared structure collection not found at {STRUCTURES}")
    return STRUCTURES


@pytest.fixture(scope="module")
def index_rows() -> dict[tuple[str, str], dict[str, str]]:
    with open(_shared() / "index.csv", newline="", encoding="utf-8") as fh:
        return {(row["source"], row["id"]): row for row in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def sample_cifs() -> list[Path]:
    """Three small shared CIFs: ordered cubic, hexagonal, and a monoclinic one."""
    root = _shared()
    names = [
        "xrd_autoanalyzer/La2O3_164.cif",
        "aflow/A12B_cF52_225_i_a.cif",
        "robocrys/A2BC4D_tI16_121_d_a_i_b.cif",
    ]
    paths = [root / n for n in names]
    for p in paths:
        if not p.is_file():
            pytest.skip(f"missing shared CIF {p}")
    return paths


def _reference(path: Path) -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rounding notices about the shared P1 listings
        return CifParser(path).parse_structures(primitive=False)[0]


def _assert_same_structure(a: Structure, b: Structure) -> None:
    assert [str(s.species) for s in a] == [str(s.species) for s in b]
    np.testing.assert_allclose(a.lattice.matrix, b.lattice.matrix, atol=1e-6)
    np.testing.assert_allclose(a.frac_coords, b.frac_coords, atol=1e-6)


def _nacl() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def _rutile() -> Structure:
    return Structure.from_spacegroup(
        "P4_2/mnm", Lattice.tetragonal(4.594, 2.959), ["Ti", "O"], [[0, 0, 0], [0.3053, 0.3053, 0]]
    )


# ------------------------------------------------------------------------------------------ file forms


def test_single_cif_and_multi_block_cif(tmp_path: Path, sample_cifs: list[Path]) -> None:
    items = list_items(str(sample_cifs[0]))
    assert [(i.kind, i.entry_id) for i in items] == [("cif", "La2O3_164")]
    entry = load_entry(items[0])
    _assert_same_structure(entry.structure, _reference(sample_cifs[0]))
    # The collection's header states the labelled group (the CIF symmetry fields say P1).
    assert entry.given_spacegroup == 164
    assert entry.metadata["licence"] == "MIT (njszym/XRD-AutoAnalyzer)"
    assert entry.provenance == str(sample_cifs[0])

    multi = tmp_path / "two.cif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # spglib deprecation notices from CifWriter's symmetry finder
        blocks = [str(CifWriter(_reference(p), symprec=0.01)) for p in sample_cifs[:2]]
    multi.write_text("\n".join(blocks), encoding="utf-8")
    items = list_items(str(multi))
    assert len(items) == 2
    assert len({i.entry_id for i in items}) == 2
    for item, path in zip(items, sample_cifs[:2], strict=True):
        entry = load_entry(item)
        assert entry.structure.composition.reduced_formula == _reference(path).composition.reduced_formula
        # CifWriter with symprec writes the detected group, which the loader must report as the label.
        assert entry.given_spacegroup == describe(entry, BankConfig()).spacegroup_number


def test_directory_and_glob(tmp_path: Path, sample_cifs: list[Path]) -> None:
    (tmp_path / "b" / "deep").mkdir(parents=True)
    (tmp_path / "a.cif").write_bytes(sample_cifs[0].read_bytes())
    (tmp_path / "b" / "deep" / "c.cif").write_bytes(sample_cifs[1].read_bytes())
    (tmp_path / "b" / "x.CIF").write_bytes(sample_cifs[2].read_bytes())
    (tmp_path / "notes.txt").write_text("not a structure")

    items = list_items(str(tmp_path))
    assert [i.entry_id for i in items] == ["a", "b/deep/c", "b/x"]
    for item, path in zip(items, sample_cifs, strict=True):
        _assert_same_structure(load_entry(item).structure, _reference(path))

    globbed = list_items(str(tmp_path / "**" / "*.cif"))
    assert [i.entry_id for i in globbed] == ["a", "b/deep/c"]


def test_zip_and_tar_archives(tmp_path: Path, sample_cifs: list[Path]) -> None:
    zpath = tmp_path / "set.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sample_cifs:
            zf.write(p, f"inner/{p.name}")
        zf.writestr("README.txt", "ignored")
    tpath = tmp_path / "set.tar.gz"
    with tarfile.open(tpath, "w:gz") as tf:
        for p in sample_cifs:
            tf.add(p, arcname=f"inner/{p.name}")
    expected = {f"inner/{p.name}": _reference(p) for p in sample_cifs}
    for archive in (zpath, tpath):
        items = list_items(str(archive))
        assert {i.kind for i in items} == {"archive_cif"}
        assert sorted(i.entry_id for i in items) == sorted(f"set/{n[:-4]}" for n in expected)
        for item in items:
            entry = load_entry(item)
            member = item.locator.split("::", 1)[1]
            assert item.locator.startswith(str(archive))
            _assert_same_structure(entry.structure, expected[member])
        # Items are what Dask ships to workers.
        assert pickle.loads(pickle.dumps(items)) == items


@pytest.mark.parametrize("compressed", [False, True])
def test_json_and_jsonl(tmp_path: Path, compressed: bool) -> None:
    nacl, rutile = _nacl(), _rutile()
    records = [
        nacl.as_dict(),
        {
            "structure": rutile.as_dict(),
            "material_id": "mp-2657",
            "e_above_hull": 0.0,
            "spacegroup": "P4_2/mnm",
        },
    ]
    suffix = ".gz" if compressed else ""
    opener = gzip.open if compressed else open
    jpath = tmp_path / f"set.json{suffix}"
    with opener(jpath, "wt", encoding="utf-8") as fh:
        json.dump(records, fh)
    lpath = tmp_path / f"set.jsonl{suffix}"
    with opener(lpath, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(json.dumps(r) for r in records) + "\n\n")

    for path, kind, first_id in ((jpath, "json", "set#item=1"), (lpath, "jsonl", "set#L1")):
        items = list_items(str(path))
        assert [i.kind for i in items] == [kind, kind]
        assert [i.entry_id for i in items] == [first_id, "mp-2657"]
        first, second = (load_entry(i) for i in items)
        _assert_same_structure(first.structure, nacl)
        _assert_same_structure(second.structure, rutile)
        assert first.given_spacegroup is None
        assert second.given_spacegroup == 136
        assert second.metadata["e_above_hull"] == 0.0
        assert not describe(second, BankConfig()).spacegroup_disagrees


def test_csv_with_metadata(tmp_path: Path) -> None:
    path = tmp_path / "set.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(
            fh, fieldnames=["", "material_id", "cif", "e_above_hull", "spacegroup_number"]
        )
        writer.writeheader()
        writer.writerow({"": 7, "material_id": "007", "cif": str(CifWriter(_nacl())), "e_above_hull": "0.02",
                         "spacegroup_number": "225"})  # fmt: skip
        writer.writerow({"": 8, "material_id": "x2", "cif": str(CifWriter(_rutile())), "e_above_hull": "",
                         "spacegroup_number": ""})  # fmt: skip
    items = list_items(str(path))
    assert [(i.entry_id, i.locator) for i in items] == [("007", f"{path}#row=1"), ("x2", f"{path}#row=2")]
    first, second = (load_entry(i) for i in items)
    _assert_same_structure(first.structure, _nacl())
    assert first.metadata["material_id"] == "007"
    assert first.metadata["e_above_hull"] == pytest.approx(0.02)
    assert first.given_spacegroup == 225
    assert second.metadata["e_above_hull"] is None
    assert second.given_spacegroup is None
    assert describe(first, BankConfig()).spacegroup_number == 225


# ----------------------------------------------------------------------------------- shared collection


def test_shared_collection_counts_ids_and_spacegroups(
    index_rows: dict[tuple[str, str], dict[str, str]],
) -> None:
    items = list_items(str(_shared()))
    curated = [i for i in items if i.entry_id.split("/")[0] in CURATED_COUNTS]
    assert len(items) == len(curated) == sum(CURATED_COUNTS.values()) == 1219
    for source, count in CURATED_COUNTS.items():
        assert sum(i.entry_id.startswith(source + "/") for i in items) == count
    assert len({i.entry_id for i in items}) == len(items)

    by_id = {f"{src}/{id_}": row for (src, id_), row in index_rows.items()}
    assert all(i.entry_id in by_id for i in items)
    supergroup_ids = {k for k, row in by_id.items() if row["sg_check"] == "disordered_supergroup"}
    sample = sorted({i.entry_id for i in items[::13]} | supergroup_ids)
    assert len(sample) >= 95
    config = BankConfig()
    wanted = {i.entry_id: i for i in items}
    for entry_id in sample:
        row = by_id[entry_id]
        entry = load_entry(wanted[entry_id])
        info = describe(entry, config)
        assert entry.given_spacegroup == int(row["labelled_sg"]), entry_id
        assert info.spacegroup_number == int(row["sg_symprec_0.01"]), entry_id
        assert info.disordered == (row["disordered"] == "True"), entry_id
        if entry_id not in supergroup_ids:  # index.csv gives the labelled group's system
            assert info.crystal_system == row["crystal_system"], entry_id
        # Disordered supergroup entries are exactly those whose detection disagrees with the label.
        assert info.spacegroup_disagrees == (entry_id in supergroup_ids), entry_id


def test_perov5_csv(index_rows: dict[tuple[str, str], dict[str, str]]) -> None:
    path = _shared() / "perov5" / "test.csv"
    items = list_items(str(path))
    expected = {row["id"]: row for (src, _), row in index_rows.items() if row["path"] == "perov5/test.csv"}
    assert len(items) == len(expected)
    assert {f"test_{i.entry_id}" for i in items} == set(expected)
    # index.csv's space groups for the computed CDVAE rows were detected at symprec 0.1.
    config = BankConfig(symprec=0.1)
    for item in items[:: len(items) // 25]:
        entry = load_entry(item)
        info = describe(entry, config)
        row = expected[f"test_{item.entry_id}"]
        assert info.spacegroup_number == int(row["spacegroup_number"]), item.locator
        assert info.n_sites == int(row["nsites"])
        assert entry.metadata["formula"] == row["formula"] or info.reduced_formula == row["formula"]


def test_builtin_aflow_prototypes() -> None:
    start = time.perf_counter()
    items = list_items("builtin")
    assert time.perf_counter() - start < 5.0
    assert len(items) >= 250
    assert len({i.entry_id for i in items}) == len(items)
    assert all(i.entry_id.startswith("aflow:") for i in items)
    config = BankConfig()
    disagree = []
    for item in items:
        entry = load_entry(item)
        assert "AFLOW" in str(entry.metadata["licence"])
        assert entry.given_spacegroup is not None
        if describe(entry, config).spacegroup_disagrees:
            disagree.append(item.entry_id)
    # Measured: 285 of 288 agree with spglib at symprec 0.01 (pymatgen 2026.10.24); the shared collection
    # dropped 3 AFLOW prototypes for a symmetry mismatch as well.
    assert len(disagree) <= 0.05 * len(items), disagree


# ---------------------------------------------------------------------------------------------- random


def test_random_listing_forms() -> None:
    assert len(list_items("random:2")) == 460
    items = list_items("random:3:1-4,225,2", seed=7)
    assert [i.entry_id for i in items[:3]] == ["random:1:0:s7", "random:1:1:s7", "random:1:2:s7"]
    assert sorted({int(i.locator.split(":")[1]) for i in items}) == [1, 2, 3, 4, 225]
    assert {i.kind for i in items} == {"random"}
    for bad in ("random:0", "random:x", "random:1:0-3", "random:1:231", "random:1:a-b"):
        with pytest.raises(ValueError, match="random"):
            list_items(bad)
    with pytest.raises(ValueError, match=r"the range '5-1' runs backwards; write it low-high \(1-5\)"):
        list_items("random:1:5-1")


def _load_all(items: list[SourceItem], seed: int) -> list[tuple[str, list[list[float]], list[str]]]:
    entries = [load_entry(i, seed=seed) for i in items]
    return [
        (e.entry_id, e.structure.frac_coords.tolist(), [str(s.specie) for s in e.structure]) for e in entries
    ]


def test_random_is_deterministic_across_order_and_process() -> None:
    items = list_items("random:2:14,221", seed=3)
    forward = _load_all(items, 3)
    backward = _load_all(items[::-1], 3)[::-1]
    assert forward == backward
    with ProcessPoolExecutor(max_workers=1) as pool:
        assert pool.submit(_load_all, items, 3).result() == forward
    assert len({json.dumps(f[1:]) for f in forward}) == len(forward)
    other = _load_all(list_items("random:2:14,221", seed=4), 4)
    assert [f[1:] for f in other] != [f[1:] for f in forward]
    entry = load_entry(items[0], seed=3)
    assert entry.synthetic and entry.given_spacegroup == 14
    with pytest.raises(ValueError, match="seed"):
        load_entry(items[0], seed=4)


def test_shared_pyxtal_tolerances_leave_random_crystals_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    """random_structure hands pyxtal one default tolerance table (for speed); pyxtal building its own per call
    must give the same crystals, atom for atom."""
    import pyxtal.operations
    import pyxtal.symmetry

    from xrdsynth.structures import random_crystals

    groups = (2, 14, 62, 139, 166, 225, 227)
    shared = [random_crystals.random_structure(sg, 0, 7) for sg in groups]
    monkeypatch.setattr(pyxtal.symmetry, "check_images", pyxtal.operations.check_images, raising=False)
    monkeypatch.setattr(random_crystals, "_pyxtal_tolerances", lambda: None)
    own = [random_crystals.random_structure(sg, 0, 7) for sg in groups]
    for sg, (a, meta_a), (b, meta_b) in zip(groups, shared, own, strict=True):
        assert meta_a == meta_b, sg
        assert [str(x.specie) for x in a] == [str(x.specie) for x in b], sg
        np.testing.assert_array_equal(a.lattice.matrix, b.lattice.matrix)
        np.testing.assert_array_equal(a.frac_coords, b.frac_coords)


@pytest.mark.slow
@pytest.mark.parametrize("part", range(4))
@pytest.mark.parametrize("source", ["random:1", "random-ionic:1"])
def test_random_one_per_group_matches_target(source: str, part: int) -> None:
    """All 230 groups as 4 interleaved parts, so that the suite's two workers share them."""
    config = BankConfig()
    exceptions = []
    for item in list_items(source)[part::4]:
        entry = load_entry(item)
        info = describe(entry, config)
        if info.spacegroup_number != entry.given_spacegroup:
            exceptions.append((item.entry_id, info.spacegroup_number))
        assert entry.metadata["target_spacegroup"] == entry.given_spacegroup
    # All 230 groups (seed 0), 2-core VM, in the full suite: 119 s of worker time before pyxtal's tolerance table
    # was shared, 67 s after.
    assert exceptions == []


def test_random_ionic_listing_forms() -> None:
    items = list_items("random-ionic:2:14,62", seed=5)
    assert [i.entry_id for i in items] == [
        "random-ionic:14:0:s5", "random-ionic:14:1:s5", "random-ionic:62:0:s5", "random-ionic:62:1:s5"
    ]  # fmt: skip
    assert {i.kind for i in items} == {"random"}
    for bad in ("random-ionic:0", "random-ionic:x", "random-ionic:1:0-3"):
        with pytest.raises(ValueError, match="random-ionic"):
            list_items(bad)


def _orbits(structure: Structure) -> int:
    """Symmetry-distinct sites (Wyckoff orbits) of a crystal, read by spglib independently of pyxtal."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    return len(SpacegroupAnalyzer(structure, symprec=0.1).get_symmetrized_structure().equivalent_sites)


def test_random_ionic_crystals_are_anion_frameworks_on_several_orbits() -> None:
    """The random-ionic style: its group at spglib's symprec 0.1, one anion species and 1-3 cations, at most 96
    atoms per primitive cell, deterministic, and at least twice the orbits of the one-orbit style over the same
    groups (the reason it exists: structure factors with many independent sites)."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    from xrdsynth.structures import random_crystals

    groups = (2, 4, 14, 15, 19, 33, 61, 62, 88, 122, 148, 167, 176, 194, 216, 225)
    ionic_orbits, one_orbit_orbits = [], []
    for sg in groups:
        structure, metadata = random_crystals.random_structure(sg, 0, 11, ionic=True)
        assert metadata["style"] == "ionic" and metadata["target_spacegroup"] == sg
        assert SpacegroupAnalyzer(structure, symprec=0.1).get_space_group_number() == sg
        elements = {str(site.specie) for site in structure}
        anions = elements & set(random_crystals.IONIC_ANIONS)
        assert len(anions) == 1 and 1 <= len(elements - anions) <= 3, (sg, elements)
        assert elements - anions <= set(random_crystals.IONIC_CATIONS)
        assert len(structure.get_primitive_structure(tolerance=0.1)) <= 96
        again, _ = random_crystals.random_structure(sg, 0, 11, ionic=True)
        np.testing.assert_array_equal(structure.frac_coords, again.frac_coords)
        ionic_orbits.append(_orbits(structure))
        one_orbit_orbits.append(_orbits(random_crystals.random_structure(sg, 0, 11)[0]))
    assert np.mean(ionic_orbits) >= 2 * np.mean(one_orbit_orbits), (ionic_orbits, one_orbit_orbits)


# ------------------------------------------------------------------------------------------ bad inputs


def _entry(structure: Structure, **metadata: float) -> Entry:
    return Entry("t", "test", "test://made-in-test", structure, None, dict(metadata), False)


def test_bad_files_name_file_and_reason(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.cif"
    garbage.write_text("data_x\n_cell_length_a banana\nloop_\n_atom_site_label\nFe1\n")
    empty = tmp_path / "empty.cif"
    empty.write_text("")
    for path, reason in ((garbage, "unparseable CIF"), (empty, "empty")):
        (item,) = list_items(str(path))
        with pytest.raises(StructureError, match=reason) as info:
            load_entry(item)
        assert str(path) in str(info.value)
        assert info.value.reason.startswith("unparseable CIF")

    with pytest.raises(ValueError, match="nonexistent.*accepted"):
        list_items(str(tmp_path / "nonexistent"))
    odd = tmp_path / "structures.xyz"
    odd.write_text("1\n\nH 0 0 0\n")
    with pytest.raises(ValueError, match=r"structures\.xyz.*unknown format"):
        list_items(str(odd))
    with pytest.raises(ValueError, match="glob pattern matches no files"):
        list_items(str(tmp_path / "*.nothing"))

    nocif = tmp_path / "table.csv"
    nocif.write_text("id,formula\n1,NaCl\n")
    with pytest.raises(ValueError, match="no 'cif' column"):
        list_items(str(nocif))
    dup = tmp_path / "dup.jsonl"
    dup.write_text("\n".join(json.dumps({"id": "same", "structure": _nacl().as_dict()}) for _ in range(2)))
    with pytest.raises(ValueError, match="'same' is used by both"):
        list_items(str(dup))
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps([{"structure": {"lattice": "no"}}]))
    (item,) = list_items(str(broken))
    with pytest.raises(StructureError, match=r"broken\.json#item=1.*invalid pymatgen Structure dict"):
        load_entry(item)


def test_a_new_source_kind_is_routed_by_the_kinds_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adding a source is one FileFormat and one ItemKind in the registry: paths and globs reach its lister,
    its items reach its loader, and the build key hashes the file it names."""
    from xrdsynth.structures import registry
    from xrdsynth.structures.base import FileFormat, ItemKind

    def list_poscar(source: str, path: Path, relative: Path) -> list[SourceItem]:
        return [SourceItem(source, "poscar", str(path), relative.with_suffix("").as_posix())]

    def load_poscar(item: SourceItem, seed: int, max_sites: int | None) -> Entry:
        structure = Structure.from_str(Path(item.locator).read_text(), fmt="poscar")
        return Entry(item.entry_id, item.source, item.locator, structure, None)

    monkeypatch.setattr(
        registry, "FILE_FORMATS", (*registry.FILE_FORMATS, FileFormat((".vasp",), list_poscar))
    )
    monkeypatch.setitem(
        registry.ITEM_KINDS, "poscar", ItemKind("poscar", load_poscar, lambda item: item.locator)
    )
    (tmp_path / "sub").mkdir()
    poscar = tmp_path / "sub" / "NaCl.vasp"
    poscar.write_text(_nacl().to(fmt="poscar"))

    (item,) = list_items(str(poscar))
    assert (item.kind, item.entry_id) == ("poscar", "NaCl")
    (globbed,) = list_items(str(tmp_path / "**" / "*.vasp"))
    assert globbed.entry_id == "sub/NaCl"
    entry = load_entry(item)
    assert entry.structure.composition.reduced_formula == "NaCl" and entry.provenance == str(poscar)
    assert input_file(item) == str(poscar)
    assert describe(entry, BankConfig()).spacegroup_number == 225
    with pytest.raises(ValueError, match="unknown kind 'nothing'"):
        load_entry(SourceItem("s", "nothing", "x", "x"))


def test_describe_rejects_absurd_cells_and_filters_hull() -> None:
    config = BankConfig()
    squashed = Structure(Lattice.cubic(0.5), ["Fe"], [[0, 0, 0]])
    with pytest.raises(StructureError, match="absurd cell.*per site") as info:
        describe(_entry(squashed), config)
    assert "test://made-in-test" in str(info.value)
    empty_box = Structure(Lattice.cubic(20.0), ["Fe"], [[0, 0, 0]])
    with pytest.raises(StructureError, match="absurd cell"):
        describe(_entry(empty_box), config)
    with pytest.raises(StructureError, match="empty cell"):
        describe(_entry(Structure(Lattice.cubic(4.0), [], [])), config)

    big = _nacl() * (2, 2, 2)
    with pytest.raises(StructureError, match=r"too many sites: 64 > max_sites=10"):
        describe(_entry(big), BankConfig(max_sites=10))
    assert describe(_entry(big), config).n_sites == 64

    with pytest.raises(StructureError, match=r"e_above_hull 0\.25 eV/atom exceeds"):
        describe(_entry(_nacl(), e_above_hull=0.25), config)
    assert describe(_entry(_nacl(), e_above_hull=0.25), BankConfig(max_e_above_hull_ev_per_atom=None))
    assert describe(_entry(_nacl(), e_above_hull=0.1), config).spacegroup_number == 225


def test_unknown_element_parses(tmp_path: Path) -> None:
    # Diffraction reports missing scattering factors; loading only has to succeed.
    exotic = Structure(Lattice.cubic(5.0), ["Og"], [[0, 0, 0]])
    path = tmp_path / "og.json"
    path.write_text(json.dumps([exotic.as_dict()]))
    (item,) = list_items(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen notes Og has no electronegativity
        assert load_entry(item).structure.composition.reduced_formula == "Og"


def _p1_cif(a: str, rows: list[str]) -> str:
    """A P1 CIF with a cubic-looking cell of edge `a` (as written) and the given atom_site rows."""
    return (
        f"data_test\n_cell_length_a {a}\n_cell_length_b 6.0\n_cell_length_c 6.0\n_cell_angle_alpha 90\n"
        "_cell_angle_beta 90\n_cell_angle_gamma 90\n_symmetry_space_group_name_H-M 'P 1'\n"
        "loop_\n_symmetry_equiv_pos_as_xyz\n  'x, y, z'\n"
        "loop_\n_atom_site_label\n_atom_site_type_symbol\n_atom_site_fract_x\n_atom_site_fract_y\n"
        "_atom_site_fract_z\n_atom_site_occupancy\n" + "\n".join(rows) + "\n"
    )


def test_nonpositive_cell_parameters_are_rejected_naming_file_and_field(tmp_path: Path) -> None:
    rows = ["Na1 Na 0 0 0 1", "Cl1 Cl 0.5 0.5 0.5 1"]
    good = tmp_path / "good.cif"
    good.write_text(_p1_cif("6.0", rows))
    assert load_entry(list_items(str(good))[0]).structure.lattice.a == pytest.approx(6.0)
    # pymatgen alone accepts a = -5 and stores a 5 Å cell.
    negative = tmp_path / "negative.cif"
    negative.write_text(_p1_cif("-5", rows))
    with pytest.raises(StructureError, match=r"_cell_length_a = -5: cell lengths must be positive") as info:
        load_entry(list_items(str(negative))[0])
    assert str(negative) in str(info.value)
    zero = tmp_path / "zero.cif"
    zero.write_text(_p1_cif("0.0(1)", rows))
    with pytest.raises(StructureError, match=r"_cell_length_a = 0\.0\(1\)"):
        load_entry(list_items(str(zero))[0])
    flat = tmp_path / "flat.cif"
    flat.write_text(_p1_cif("6.0", rows).replace("_cell_angle_beta 90", "_cell_angle_beta 180"))
    with pytest.raises(StructureError, match=r"_cell_angle_beta = 180: cell angles must lie"):
        load_entry(list_items(str(flat))[0])


def test_too_many_sites_are_rejected_before_parsing(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = [f"Si{i} Si {x:.5f} {y:.5f} {z:.5f} 1" for i, (x, y, z) in enumerate(rng.random((10_000, 3)))]
    big = tmp_path / "big.cif"
    big.write_text(_p1_cif("60.0", rows))
    (item,) = list_items(str(big))
    start = time.perf_counter()
    with pytest.raises(StructureError, match=r"lists more than max_sites=1000 distinct positions") as info:
        load_entry(item, max_sites=1000)
    elapsed = time.perf_counter() - start
    assert str(big) in str(info.value)
    # Parsing this file with pymatgen took 14.5 s; the text check takes tens of milliseconds.
    assert elapsed < 2.0

    # Partial occupancies share a position, so two rows on one site count once and pass max_sites=1.
    shared = tmp_path / "shared.cif"
    shared.write_text(_p1_cif("4.0", ["Na1 Na 0 0 0 0.5", "K1 K 0.0000 0 0 0.5"]))
    assert len(load_entry(list_items(str(shared))[0], max_sites=1).structure) == 1
    # Structure dicts are checked the same way before pymatgen builds them.
    records = tmp_path / "big.json"
    records.write_text(json.dumps([(_nacl() * (2, 2, 2)).as_dict()]))
    with pytest.raises(StructureError, match=r"too many sites: 64 > max_sites=10 \(checked before parsing\)"):
        load_entry(list_items(str(records))[0], max_sites=10)


def _zip_with_bomb(path: Path, good_cif: str, bomb_bytes: int) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("good.cif", good_cif)
        with zf.open("bomb.cif", "w") as member:
            block = b"0" * (1 << 20)
            for _ in range(bomb_bytes >> 20):
                member.write(block)


def test_oversized_archive_members_are_reported_with_bounded_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tracemalloc

    from xrdsynth.structures import cif_files

    monkeypatch.setattr(cif_files, "MAX_CIF_BYTES", 1 << 20)
    good = _p1_cif("6.0", ["Na1 Na 0 0 0 1", "Cl1 Cl 0.5 0.5 0.5 1"])
    archive = tmp_path / "bomb.zip"
    _zip_with_bomb(archive, good, 50 << 20)
    assert archive.stat().st_size < 200_000  # 50 MB of zeros deflate to ~50 kB

    tracemalloc.start()
    try:
        items = list_items(str(archive))
        assert [i.locator for i in items] == [f"{archive}::bomb.cif", f"{archive}::good.cif"]
        with pytest.raises(
            StructureError, match=r"too large: 52428800 bytes exceed the 1048576-byte limit"
        ) as info:
            load_entry(items[0])
        assert f"{archive}::bomb.cif" in str(info.value)
        assert load_entry(items[1]).structure.composition.reduced_formula == "NaCl"
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_bytes < 8 << 20

    # A header that under-states the member's size: the read stops and the member is reported, not read whole.
    liar = tmp_path / "liar.zip"
    _zip_with_bomb(liar, good, 4 << 20)
    data = bytearray(liar.read_bytes())
    # The central directory record (signature PK\x01\x02) holds the size zipfile trusts, at offset 24.
    bomb_record = data.index(b"PK\x01\x02", data.index(b"PK\x01\x02") + 1)
    assert data[bomb_record + 46 : bomb_record + 54] == b"bomb.cif"
    data[bomb_record + 24 : bomb_record + 28] = (1000).to_bytes(4, "little")
    liar.write_bytes(bytes(data))
    items = list_items(str(liar))
    with pytest.raises(StructureError, match=r"liar\.zip::bomb\.cif.*(too large|cannot read input)"):
        load_entry(items[0])
    assert load_entry(items[1]).structure.composition.reduced_formula == "NaCl"

    # tar members are capped the same way.
    tar_path = tmp_path / "bomb.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tf:
        for name, payload in (("good.cif", good.encode()), ("bomb.cif", b"0" * (2 << 20))):
            info_ = tarfile.TarInfo(name)
            info_.size = len(payload)
            tf.addfile(info_, io.BytesIO(payload))
    items = list_items(str(tar_path))
    with pytest.raises(StructureError, match=r"bomb\.tar\.gz::bomb\.cif: too large"):
        load_entry(items[0])
    assert load_entry(items[1]).structure.composition.reduced_formula == "NaCl"


# ------------------------------------------------------------------------ displacement parameters

_MONOCLINIC_CIF = """data_adp
_cell_length_a 5.1
_cell_length_b 6.3
_cell_length_c 7.2
_cell_angle_alpha 90
_cell_angle_beta 104.5
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P 1 21/c 1'
loop_
_symmetry_equiv_pos_as_xyz
'x, y, z'
'-x, y+1/2, -z+1/2'
'-x, -y, -z'
'x, -y+1/2, z+1/2'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
_atom_site_{column}
Zn1 Zn 0.12 0.21 0.33 1 {zn}
O1 O 0.31 0.42 0.05 1 {o}
O2 O 0.61 0.11 0.27 1 {o}
"""
_TRICLINIC_ANISO_CIF = """data_aniso
_cell_length_a 5.3
_cell_length_b 6.1
_cell_length_c 7.4
_cell_angle_alpha 82
_cell_angle_beta 97
_cell_angle_gamma 109
_symmetry_space_group_name_H-M 'P -1'
loop_
_symmetry_equiv_pos_as_xyz
'x, y, z'
'-x, -y, -z'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_U_iso_or_equiv
Ca1 Ca 0.12 0.21 0.33 0.02
O1 O 0.31 0.42 0.05 0.015
loop_
_atom_site_aniso_label
_atom_site_aniso_U_11
_atom_site_aniso_U_22
_atom_site_aniso_U_33
_atom_site_aniso_U_23
_atom_site_aniso_U_13
_atom_site_aniso_U_12
{aniso}
"""


def _cif_entry(tmp_path: Path, text: str) -> Entry:
    path = tmp_path / "adp.cif"
    path.write_text(text)
    (item,) = list_items(str(path))
    return load_entry(item)


def _at_rest(structure: Structure) -> Structure:
    plain = structure.copy()
    for name in ("U11_cif", "U22_cif", "U33_cif", "U23_cif", "U13_cif", "U12_cif"):
        plain.remove_site_property(name)
    return plain


@pytest.mark.parametrize("column", ["B_iso_or_equiv", "U_iso_or_equiv"])
def test_cif_displacement_parameters_damp_as_pymatgen_debye_waller_factors(
    tmp_path: Path, column: str
) -> None:
    """A CIF's isotropic B (or U = B/8π²) per site, on a monoclinic cell with symmetry copies, diffracts like
    pymatgen's XRDCalculator given the same B per element (an independent implementation: a scalar on the
    form factors, where ours goes through U* tensors)."""
    from pymatgen.analysis.diffraction.xrd import XRDCalculator

    from xrdsynth.diffraction import compute_peaks

    b_zn, b_o = 0.8, 1.3
    scale = 1.0 if column.startswith("B") else 1.0 / (8 * np.pi**2)
    entry = _cif_entry(
        tmp_path, _MONOCLINIC_CIF.format(column=column, zn=f"{b_zn * scale:.14f}(3)", o=f"{b_o * scale:.14f}")
    )
    assert entry.metadata["displacement_parameters"] == "isotropic"
    assert len(entry.structure) == 12 and "U11_cif" in entry.structure.site_properties
    ours = compute_peaks(entry.structure, 1.54184, (5.0, 120.0))
    reference = XRDCalculator(1.54184, debye_waller_factors={"Zn": b_zn, "O": b_o}).get_pattern(
        _at_rest(entry.structure), scaled=True, two_theta_range=(5.0, 120.0)
    )
    np.testing.assert_allclose(ours.two_theta_deg, reference.x)
    np.testing.assert_allclose(ours.intensity, reference.y, rtol=1e-9, atol=1e-9)
    rest = compute_peaks(_at_rest(entry.structure), 1.54184, (5.0, 120.0))
    # The damping is there to see: the share of the peaks above 90° falls by a quarter.
    high = ours.intensity[ours.two_theta_deg > 90].sum() / ours.intensity.sum()
    assert high < 0.8 * rest.intensity[rest.two_theta_deg > 90].sum() / rest.intensity.sum()


def test_cif_anisotropic_rows_win_and_isotropic_equivalents_agree(tmp_path: Path) -> None:
    """On a triclinic cell: an aniso row with U_ij = U·cos(a*_i, a*_j) (the isotropic tensor in the CIF
    convention) diffracts exactly like the isotropic U it replaces, checked against pymatgen's per-element B;
    a really anisotropic row changes the pattern."""
    from pymatgen.analysis.diffraction.xrd import XRDCalculator

    from xrdsynth.diffraction import compute_peaks
    from xrdsynth.structures.displacement import isotropic_u_cif

    lattice = Lattice.from_parameters(5.3, 6.1, 7.4, 82, 97, 109)
    ca = isotropic_u_cif(0.02, Structure(lattice, ["Ca"], [[0, 0, 0]]))
    isotropic_row = "Ca1 " + " ".join(f"{u:.12f}" for u in ca)
    entry = _cif_entry(tmp_path, _TRICLINIC_ANISO_CIF.format(aniso=isotropic_row))
    assert entry.metadata["displacement_parameters"] == "anisotropic"
    b = {"Ca": 8 * np.pi**2 * 0.02, "O": 8 * np.pi**2 * 0.015}
    reference = XRDCalculator(1.54184, debye_waller_factors=b).get_pattern(
        _at_rest(entry.structure), scaled=True, two_theta_range=(5.0, 120.0)
    )
    ours = compute_peaks(entry.structure, 1.54184, (5.0, 120.0))
    np.testing.assert_allclose(ours.intensity, reference.y, rtol=1e-9, atol=1e-9)
    needle = _cif_entry(tmp_path, _TRICLINIC_ANISO_CIF.format(aniso="Ca1 0.06 0.005 0.005 0 0 0"))
    needle_peaks = compute_peaks(needle.structure, 1.54184, (5.0, 120.0))
    n = 20  # the strongest low-angle peaks, present in both
    np.testing.assert_array_equal(needle_peaks.two_theta_deg[:n], ours.two_theta_deg[:n])
    assert np.abs(needle_peaks.intensity[:n] / ours.intensity[:n] - 1).max() > 0.01


@pytest.mark.parametrize(
    ("zn", "o", "reason"),
    [("?", "1.3", "ignored: site"), ("0", "0.0", "ignored: every displacement parameter is 0"),
     ("-0.5", "1.3", "ignored: a negative")],
)  # fmt: skip
def test_unusable_displacement_parameters_leave_atoms_at_rest(
    tmp_path: Path, zn: str, o: str, reason: str
) -> None:
    entry = _cif_entry(tmp_path, _MONOCLINIC_CIF.format(column="B_iso_or_equiv", zn=zn, o=o))
    assert "U11_cif" not in entry.structure.site_properties
    assert entry.metadata["displacement_parameters"].startswith(reason)


def test_shared_bgmn_templates_carry_their_b_values() -> None:
    """A shared BGMN listing's B_iso (100·TDS) reaches every site, merged mixed sites included, with
    U = B/8π² on the diagonal."""
    path = _shared() / "bgmn" / "BGMN__ANNITE.cif"
    (item,) = list_items(str(path))
    entry = load_entry(item)
    assert entry.metadata["displacement_parameters"] == "isotropic"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tags = next(iter(CifParser(path).as_dict().values()))
    b_by_label = dict(zip(tags["_atom_site_label"], tags["_atom_site_B_iso_or_equiv"], strict=True))
    for site in entry.structure:
        assert site.properties["U11_cif"] == pytest.approx(float(b_by_label[site.label]) / (8 * np.pi**2))


def test_one_bad_file_or_line_is_one_skipped_entry_not_a_lost_source(tmp_path: Path, monkeypatch) -> None:
    """A broken link, a CIF that cannot be read and a JSONL line that is not JSON each become one item that
    load_entry reports; the source's other structures are listed and built (they used to drop the whole source)."""
    import xrdsynth.structures.cif_files as cif_files

    folder = tmp_path / "cifs"
    folder.mkdir()
    CifWriter(_nacl()).write_file(folder / "a_nacl.cif")
    CifWriter(_rutile()).write_file(folder / "b_rutile.cif")
    CifWriter(_nacl()).write_file(folder / "c_locked.cif")
    (folder / "d_broken.cif").symlink_to(tmp_path / "nowhere.cif")
    reading = cif_files._read_text

    def refuse_locked(path):
        if Path(path).name == "c_locked.cif":
            raise PermissionError(13, "Permission denied", str(path))
        return reading(path)

    monkeypatch.setattr(cif_files, "_read_text", refuse_locked)
    for source in (str(folder), str(folder / "*.cif")):
        items = list_items(source)
        assert [i.entry_id for i in items] == ["a_nacl", "b_rutile", "c_locked", "d_broken"], source
        assert load_entry(items[0]).structure.composition.reduced_formula == "NaCl"
        for bad, why in ((items[2], "Permission denied"), (items[3], "No such file")):
            with pytest.raises(StructureError, match=why):
                load_entry(bad)
    (folder / "notes.txt").symlink_to(tmp_path / "gone.txt")  # a broken link of another kind is no structure
    assert [i.entry_id for i in list_items(str(folder / "*"))][-1] == "d_broken"
    lines = tmp_path / "set.jsonl"
    lines.write_text(
        json.dumps(_nacl().as_dict()) + '\n{"structure": {"trunc\n' + json.dumps(_rutile().as_dict())
    )
    items = list_items(str(lines))
    assert [i.entry_id for i in items] == ["set#L1", "set#L2", "set#L3"]
    with pytest.raises(StructureError, match=r"set\.jsonl#L2: invalid JSON"):
        load_entry(items[1])
    assert load_entry(items[2]).structure.composition.reduced_formula == "TiO2"
