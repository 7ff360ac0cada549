"""GSAS raw files (``.fxye``, ``.gsa``, ``.gss``): ``BANK`` records of type FXYE, FXY, ESD or STD, 2θ in
centidegrees, layout from the GSAS manual's "raw data file" chapter. The wavelength comes from the
instrument parameter file the header names (``.prm`` or GSAS-II ``.instprm``, beside the data file) or
from the comment lines."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .common import (
    NUMBER_PATTERN,
    FileFormat,
    MeasuredFormatError,
    MeasuredPattern,
    add_reader_note,
    columns_to_pattern,
    float_or_none,
    parse_numeric_rows,
    stated_wavelength,
    text_head,
    wavelength_from_header,
    wavelength_metadata,
)


def _instrument_file_wavelength(path: Path) -> tuple[float | None, dict[str, str]]:
    """Wavelength from a GSAS ``.prm`` or GSAS-II ``.instprm`` instrument parameter file.

    ``.prm``: the ``INS  1 ICONS`` record's value has 10-character fields, λ1 at [0:10], λ2 at [10:20] and
    the Kα2/Kα1 ratio at [55:65]. ``.instprm``: ``item:value`` pairs (``;``-joined lines allowed), ``Lam``
    for one wavelength or ``Lam1``/``Lam2``/``I(L2)/I(L1)`` for a doublet.
    """
    lines = path.read_text(encoding="latin-1").splitlines()
    for line in lines:
        if line.startswith("INS  1 ICONS"):
            value = line[12:]
            lam1, lam2 = float_or_none(value[0:10]), float_or_none(value[10:20])
            if lam2:
                return wavelength_metadata(lam1, lam2, float_or_none(value[55:65]))
            return stated_wavelength(lam1)
    items: dict[str, str] = {}
    for line in lines:
        if line.startswith("#"):
            continue
        for pair in line.replace(" ", "").split(";"):
            if ":" in pair:
                key, value = pair.split(":", 1)
                items.setdefault(key, value)
    if "Lam" in items:
        return stated_wavelength(float_or_none(items["Lam"]))
    if "Lam1" in items:
        return wavelength_metadata(
            float_or_none(items["Lam1"]),
            float_or_none(items.get("Lam2")),
            float_or_none(items.get("I(L2)/I(L1)")),
        )
    return None, {}


def _fixed_width_floats(
    path: Path, line: str, record_width: int, field_start: int, field_width: int, line_no: int
) -> list[float]:
    """The number at [field_start, field_start + field_width) of each ``record_width``-character record."""
    body = line.rstrip("\r\n")
    out = []
    for start in range(0, len(body), record_width):
        field = body[start + field_start : start + field_start + field_width]
        if not field.strip():
            continue
        try:
            out.append(float(field))
        except ValueError:
            raise MeasuredFormatError(
                path, f"line {line_no}: field {field!r} is not a number", "The bank data are corrupt"
            ) from None
    return out


def read_gsas(path: Path, max_bytes: int) -> MeasuredPattern:
    """GSAS raw file, first bank. FXYE/FXY: columns of 2θ (centidegrees), intensity[, esd]. ESD/STD: a
    ``CONS`` bank with start and step in centidegrees, then fixed-width fields (ESD: I 8 chars + esd 8
    chars, five pairs a line; STD: count 2 chars + I 6 chars, ten a line). ``max_bytes`` was checked
    against the file's size by the caller."""
    lines = path.read_text(encoding="latin-1").splitlines()
    if not lines:
        raise MeasuredFormatError(path, "the file is empty", "Export the pattern again")
    metadata: dict[str, str] = {"title": lines[0].strip()}
    comments: list[str] = []
    wavelength, wave_meta = None, {}
    bank_index = next((i for i, line in enumerate(lines) if line.startswith("BANK")), None)
    if bank_index is None:
        raise MeasuredFormatError(path, "no BANK record", "A GSAS raw file needs a 'BANK 1 ...' line")
    for line in lines[1:bank_index]:
        if line[:4].lower() == "inst" and ":" in line:
            name = line.split(":", 1)[1].strip().strip("[]")
            metadata["instrument_parameter_file"] = name
            candidate = path.parent / name
            if name and candidate.is_file():
                wavelength, wave_meta = _instrument_file_wavelength(candidate)
        elif line.startswith("#"):
            comments.append(line.lstrip("# ").strip())
    if wavelength is None:
        for comment in comments:
            match = re.search(
                NUMBER_PATTERN + r"\s*(?:Å|A|angstroms?)?\s*calibrated wavelength", comment, re.IGNORECASE
            )
            if match:
                wavelength, wave_meta = stated_wavelength(float(match.group(1)))
                break
        else:
            wavelength, wave_meta = wavelength_from_header(comments)
    metadata.update(wave_meta)
    if comments:
        metadata["header"] = "\n".join(comments)

    bank = lines[bank_index].split()
    metadata["bank"] = " ".join(bank)
    banks = sum(1 for line in lines if line.startswith("BANK"))
    metadata["banks_in_file"] = str(banks)
    if banks > 1:
        add_reader_note(
            metadata,
            f"the file holds {banks} banks; the first was read: export a bank on its own to read another",
        )
    try:
        n_channels, bin_type = int(bank[2]), bank[4]
        start_cdeg, step_cdeg = float(bank[5]), float(bank[6])
    except (IndexError, ValueError):
        raise MeasuredFormatError(
            path,
            f"malformed BANK record {lines[bank_index].strip()!r}",
            "Expected 'BANK ibank nchan nrec BINTYP bcoef... [TYPE]'",
        ) from None
    data_type = bank[-1].upper() if bank[-1].upper() in ("FXYE", "FXY", "ESD", "STD", "ALT") else "STD"
    metadata["gsas_data_type"] = data_type
    if bin_type.upper() != "CONS":
        # SLOG, RALF, TIME_MAP: the bank's x is a neutron time of flight in µs, not 2θ (GSAS manual; GSAS-II's
        # FXYE importer reads such banks as time of flight).
        raise MeasuredFormatError(
            path,
            f"bank bin type {bin_type!r} is time of flight, not constant-step 2θ (CONS)",
            "Only angle-dispersive 2θ patterns are read; export a constant-wavelength (CONS) bank",
        )
    body: list[tuple[int, str]] = []
    for offset, line in enumerate(lines[bank_index + 1 :], start=bank_index + 2):
        if line.startswith(("BANK", "TIME_MAP")):
            break
        if line.startswith("#") or not line.strip():
            continue
        body.append((offset, line))

    if data_type in ("FXYE", "FXY"):
        table = parse_numeric_rows(path, body, "bank")
        if table.shape[1] < 2:
            raise MeasuredFormatError(path, "FXY/FXYE rows need 2θ and intensity", "The bank is corrupt")
        two_theta, intensity = table[:, 0] / 100.0, table[:, 1]
    elif data_type in ("ESD", "STD"):
        values: list[float] = []
        for line_no, line in body:
            # ESD records: intensity (8) + esd (8); STD records: count (2) + intensity (6).
            layout = (16, 0, 8) if data_type == "ESD" else (8, 2, 6)
            values.extend(_fixed_width_floats(path, line, *layout, line_no))
        intensity = np.asarray(values[:n_channels], dtype=np.float64)
        two_theta = (start_cdeg + step_cdeg * np.arange(intensity.size)) / 100.0
    else:
        raise MeasuredFormatError(
            path, "ALT banks (compressed time-of-flight) are not read", "Export an FXYE bank"
        )
    if two_theta.size != n_channels:
        metadata["note"] = f"BANK record declares {n_channels} channels, {two_theta.size} read"
    return columns_to_pattern(path, np.column_stack([two_theta, intensity]), wavelength, metadata)


def sniff_gsas(path: Path, head: bytes) -> bool:
    """A line starting with ``BANK`` and white space among the first bytes."""
    text = text_head(head)
    return text is not None and re.search(r"^BANK\s", text, flags=re.MULTILINE) is not None


GSAS = FileFormat(name="gsas", extensions=("fxye", "gsa", "gss"), sniff=sniff_gsas, read=read_gsas)
