"""The space-group table shown to users agrees with pymatgen for all 230 groups."""

import pytest

from xrdmodels.spacegroups import crystal_system, symbol


def test_every_symbol_and_system_matches_pymatgen() -> None:
    from pymatgen.symmetry.groups import SpaceGroup

    for n in range(1, 231):
        sg = SpaceGroup.from_int_number(n)
        assert symbol(n) == sg.symbol
        assert crystal_system(n) == sg.crystal_system


def test_out_of_range_numbers_are_refused() -> None:
    for bad in (0, 231):
        with pytest.raises(ValueError, match="outside 1..230"):
            symbol(bad)
