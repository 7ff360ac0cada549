"""Read measured powder-XRD patterns and map them onto a model's fixed 2θ input grid.

Readers (all return a :class:`MeasuredPattern`, 2θ in degrees ascending, intensity as float64), one module
per format family, everything about a format in its module:

* :mod:`.text`: two-column text (``.xy``, ``.xye``, ``.csv``, ``.dat``, ``.txt``), the fallback.
* :mod:`.xrdml`: PANalytical ``.xrdml`` (XML, schema 1.x ``intensities`` and 2.x ``counts``).
* :mod:`.gsas`: GSAS ``.fxye``/``.gsa``/``.gss`` (``BANK`` records FXYE, FXY, ESD or STD).
* :mod:`.rigaku`: Rigaku ``.ras`` (text) and ``.rasx`` (zip).
* :mod:`.bruker`: Bruker ``.brml`` (zip of XML), binary ``.raw`` versions 3 and 4, and ``.uxd`` text.
* :mod:`.stepscan`: counts-only step scans placed by their header, Philips ``.udf`` and Sietronics ``.cpi``.

:mod:`.common` holds what they share (the pattern type, errors, the :class:`FileFormat` record, parsing
helpers); :mod:`.registry` lists the formats in sniffing order and dispatches (:func:`read_pattern`);
:mod:`.grid` maps a pattern onto the model grid (:func:`to_model_grid`). To add a format, write a module
that exports a :class:`FileFormat` (name, extensions, sniff function, reader) and add it to
:data:`~.registry.FORMATS`.

No maintained PyPI reader installs cleanly in this environment: ``xylib-py`` has no wheel for this Python,
``xylib-py-wheels`` is a source distribution that needs SWIG and Boost, ``xrdtools`` only reads XRDML and
has been unmaintained since 2018. The binary layouts therefore follow the published descriptions, cited in
each format module.

Wavelength convention: ``MeasuredPattern.wavelength_angstrom`` is the single wavelength that places the
peak positions of the measurement, ``metadata["wavelength_kind"]`` says which one it is:

* ``"K-alpha weighted mean"`` when the file gives Kα1, Kα2 and a non-zero Kα2/Kα1 intensity ratio r: the
  doublet centroid (λ1 + r λ2)/(1 + r). This is what a single-line simulation (pymatgen ``CuKa`` =
  :data:`~xrdmodels.config.CU_KA_ANGSTROM`, the paper's λ in (A.1)) puts its peaks at.
* ``"K-alpha1"`` when only Kα1 is known or the ratio is 0 (monochromated data).
* ``"stated"`` when the file states one wavelength (synchrotron, text headers).
* ``"K-alpha weighted mean of the anode the header names"`` when a header names an anode but no number
  (``Anode: "Co"``, ``Cu K-alpha``): that anode's Kα mean; ``"the line of the anode the header names"`` when
  it names one line (``Mo Ka1``): that line (:data:`~xrdmodels.measured.common.LINES_ANGSTROM`).

The Kα1/Kα2/ratio values themselves are kept in ``metadata`` (``wavelength_kalpha1_angstrom``, ...). The
experimental set's ``all_labels.csv`` lists Kα1 for doublet data; pass it as ``wavelength_angstrom`` to
:func:`to_model_grid` to use it instead.

Size limit: a file, and the members read from a zip-based file (.rasx, .brml) together, may hold at most
``max_bytes`` (default :data:`DEFAULT_MAX_PATTERN_BYTES`); text columns are parsed in blocks, so reading
takes a small multiple of the memory of the resulting arrays.

Messages name both ways to give a setting: the ``xrdmodels predict`` option (``--wavelength``, ``--format``,
``--max-file-mb``) and the Python argument (``wavelength_angstrom=``, ``format=``, ``max_bytes=``).
"""

from .common import (
    DEFAULT_MAX_PATTERN_BYTES,
    FileFormat,
    MeasuredFormatError,
    MeasuredPattern,
    MeasuredSignalError,
)
from .grid import (
    MAJORITY_NEGATIVE_FRACTION,
    MAX_TRAINING_WINDOW_START_DEG,
    MIN_GRID_COVERAGE_FRACTION,
    MIN_TRAINING_WINDOW_DEG,
    MIN_TRAINING_WINDOW_END_DEG,
    MOSTLY_EMPTY_FRACTION,
    GriddedPattern,
    convert_two_theta_deg,
    to_model_grid,
)
from .registry import (
    FORMATS,
    detect_format,
    known_formats,
    looks_like_pattern,
    normalise_format,
    read_pattern,
)

__all__ = [
    "DEFAULT_MAX_PATTERN_BYTES",
    "FORMATS",
    "MAJORITY_NEGATIVE_FRACTION",
    "MIN_GRID_COVERAGE_FRACTION",
    "MIN_TRAINING_WINDOW_DEG",
    "MAX_TRAINING_WINDOW_START_DEG",
    "MIN_TRAINING_WINDOW_END_DEG",
    "MOSTLY_EMPTY_FRACTION",
    "FileFormat",
    "GriddedPattern",
    "MeasuredFormatError",
    "MeasuredPattern",
    "MeasuredSignalError",
    "convert_two_theta_deg",
    "detect_format",
    "known_formats",
    "looks_like_pattern",
    "normalise_format",
    "read_pattern",
    "to_model_grid",
]
