"""Command line: `xrdsynth bank build|info` and `xrdsynth mixtures generate|inspect|plot`."""

from __future__ import annotations

import difflib
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np
from pydantic import BaseModel, ValidationError

from .config import (
    CU_KA_ANGSTROM,
    RECIPE_PRESETS,
    BankConfig,
    GenerateConfig,
    RecipeConfig,
    recipe_fields,
    redact_log_record,
    redact_url,
    tiling_chunk_rows,
)

_OPTION_OF_FIELD: dict[str, str] = {}
"""The command-line option that sets each config field (`_config_option`), for error messages."""


def _config_option(*param_decls: str, model: type[BaseModel], field: str, help: str, **kwargs: Any):
    """A click option that overrides config field `field` of `model`; its help ends with the field's default,
    read from the model so that the two cannot disagree."""
    _OPTION_OF_FIELD[field] = param_decls[0]
    default = model.model_fields[field].default
    if isinstance(default, bool):
        shown = "on" if default else "off"
    elif isinstance(default, tuple):
        shown = ",".join(f"{x:g}" for x in default)
    elif isinstance(default, float):
        shown = f"{default:g}"
    else:
        shown = str(default)
    return click.option(*param_decls, default=None, help=f"{help} (default {shown}).", **kwargs)


def _optional_float(text: str, option: str) -> float | None:
    """A number, or None for 'none' / 'off' (a filter switched off, also over a config file's value)."""
    if text.strip().lower() in ("none", "off"):
        return None
    try:
        return float(text)
    except ValueError:
        _fail(f"{option} {text!r}: give a number, or 'none' to switch the filter off")


def _split_fractions(text: str | None) -> tuple[float, ...] | None:
    """``--split-fractions`` as numbers (the config checks their count and sum)."""
    if not text:
        return None
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        _fail(f"--split-fractions {text!r}: give three numbers separated by commas, such as 0.95,0.025,0.025")


def _echo(message: str = "", **kwargs: Any) -> None:
    """click.echo with user:password masked in every URL the text names (docs/security.md)."""
    click.echo(redact_url(message), **kwargs)


def _fail(message: str) -> None:
    raise click.ClickException(redact_url(message))


def _known_fields(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names of the (nested) model an error location's last part belongs to."""
    for name in loc[:-1]:
        info = model.model_fields.get(str(name))
        inner = getattr(info, "annotation", None)
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return []
        model = inner
    return list(model.model_fields)


def _validation_message(exc: ValidationError, model: type[BaseModel], config_file: str | None) -> str:
    """One line per error, naming the option that sets the field where there is one, and the closest known name
    for a misspelt field."""
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "config"
        # An unknown field's value is not shown: it may be a credential under a misspelt name.
        hidden = not err["loc"] or isinstance(err.get("input"), dict) or err["type"] == "extra_forbidden"
        got = "" if hidden else f" (got {err.get('input')!r})"
        option = _OPTION_OF_FIELD.get(field)
        line = f"  {field}{f' ({option})' if option else ''}: {err['msg']}{got}"
        if err["type"] == "extra_forbidden" and err["loc"]:
            close = difflib.get_close_matches(str(err["loc"][-1]), _known_fields(model, err["loc"]), n=1)
            line += f"; did you mean {close[0]}?" if close else ""
        lines.append(line)
    source = f" (--config {config_file} and the options)" if config_file else ""
    return f"invalid configuration{source}:\n" + "\n".join(lines)


def _load_config_file(path: str | None, example: str) -> dict[str, Any]:
    """The fields of a --config JSON file; `example` is a valid object for the command, shown when it is not one."""
    if path is None:
        return {}
    try:
        fields = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        _fail(f"cannot read config file {path}: {exc}")
    if not isinstance(fields, dict):
        _fail(
            f"config file {path} holds a JSON {type(fields).__name__}; it must hold one object of fields, "
            f"e.g. {example} (docs/config.md)"
        )
    return fields


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-v", "--verbose", is_flag=True, help="Show debug logs.")
def main(verbose: bool) -> None:
    """Synthetic powder XRD: a bank of exact single-phase patterns, then augmented multi-phase mixtures."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(redact_log_record)


def _storage_option(help_text: str):
    """The repeatable --storage-option KEY=VALUE of every command that reads or writes a remote store."""
    return click.option(
        "--storage-option",
        "storage_option",
        multiple=True,
        metavar="KEY=VALUE",
        help=f"fsspec option for {help_text}, repeatable (e.g. endpoint_url=http://127.0.0.1:9000, anon=true, "
        "key=..., secret=...; true and false are read as booleans; never written to a store or log). What "
        "is not given here comes from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
        "AWS_ENDPOINT_URL).",
    )


def _option_value(text: str) -> str | bool:
    """A --storage-option value: true/false as booleans (s3fs reads the string "false" as true), the rest as text
    (a numeric secret stays a string)."""
    lowered = text.strip().lower()
    return lowered == "true" if lowered in ("true", "false") else text


def _storage_options(pairs: tuple[str, ...]) -> dict | None:
    if not pairs:
        return None
    opts: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            # Not echoed: a mistyped pair may be a bare secret.
            _fail(
                f"a --storage-option ({'no KEY before =' if sep else 'no ='}) must look like KEY=VALUE (e.g. "
                "endpoint_url=http://127.0.0.1:9000)"
            )
        if key == "endpoint_url":
            opts.setdefault("client_kwargs", {})["endpoint_url"] = value
        else:
            opts[key] = _option_value(value)
    return opts


@main.group()
def bank() -> None:
    """Build and inspect banks of clean single-phase patterns (paper A.1)."""


@bank.command("build")
@click.option(
    "--source",
    "sources",
    multiple=True,
    required=True,
    metavar="SPEC",
    help="Structures to include; repeatable. A directory (searched recursively) or glob of CIF files, a .cif, "
    "a .zip/.tar.gz of CIFs, a .json/.jsonl of pymatgen Structure dicts, a .csv with a `cif` column "
    "(optional id, e_above_hull...), `builtin` (the AFLOW prototype library shipped with pymatgen) or "
    "`random:N` (N pyxtal crystals per space group for all 230, 1-3 species on one Wyckoff orbit each; "
    "`random:N:1-10` limits the groups) or `random-ionic:N[:GROUPS]` (the same, built as 1-3 cations and an "
    "anion over several orbits; docs/physics.md, Random crystals).",
)
@click.option(
    "--out", "out", required=True, metavar="URL", help="Bank store to write: a path or fsspec URL (s3://...)."
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="JSON file with BankConfig fields (docs/config.md); options below override it.",
)
@_config_option(
    "--wavelength",
    model=BankConfig,
    field="wavelength",
    help=f"X-ray wavelength: value in Å or line name (CuKa = {CU_KA_ANGSTROM} Å, MoKa, CuKa1...)",
)
@_config_option(
    "--symprec", model=BankConfig, field="symprec", help="spglib distance tolerance in Å", type=float
)
@_config_option(
    "--max-e-above-hull",
    model=BankConfig,
    field="max_e_above_hull_ev_per_atom",
    help="Drop entries whose metadata give e_above_hull above this, in eV/atom, as in paper A.1; 'none' keeps "
    "every entry",
    metavar="EV|none",
)
@_config_option(
    "--split-fractions",
    model=BankConfig,
    field="split_fractions",
    help="Shares of the train, val and test splits, comma-separated, summing to 1",
    metavar="TRAIN,VAL,TEST",
)
@_config_option("--split-seed", model=BankConfig, field="split_seed", help="Seed of the split hash", type=int)
@_config_option(
    "--group-polymorphs/--no-group-polymorphs",
    model=BankConfig,
    field="group_polymorphs",
    help="Keep all entries of one reduced formula in the same split",
)
@_config_option(
    "--displacement-parameters/--no-displacement-parameters",
    model=BankConfig,
    field="displacement_parameters",
    help="Damp each atom's scattering by the displacement parameters (U or B) its CIF lists; off diffracts atoms "
    "at rest, as pymatgen's XRDCalculator and the paper's bank (A.1) do",
)
@_config_option(
    "--isotypes",
    model=BankConfig,
    field="isotypes_per_structure",
    help="Substituted relatives (isotypes) added per read structure; docs/physics.md, Isotypes",
    type=int,
)
@click.option(
    "--deduplicate/--no-deduplicate",
    default=None,
    help="Drop near-duplicates across sources (StructureMatcher); --no-deduplicate overrides a config's true "
    "(default off).",
)
@_config_option(
    "--chunk-size",
    model=BankConfig,
    field="chunk_size",
    help="Entries per Dask task / resumable chunk",
    type=int,
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for random:N structures.")
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Dask LocalCluster worker processes; 0 runs in this process without Dask.",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="Use an existing Dask scheduler (tcp://host:8786) instead.",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace a bank built from other sources or settings at --out."
)
@click.option(
    "--strict",
    is_flag=True,
    help="Stop at the first unusable --source (missing, empty, unreadable) instead of reporting it and "
    "building from the others.",
)
@_storage_option("a remote --out URL (s3://...)")
def bank_build(
    sources,
    out,
    config_file,
    wavelength,
    symprec,
    max_e_above_hull,
    split_fractions,
    split_seed,
    group_polymorphs,
    displacement_parameters,
    isotypes,
    deduplicate,
    chunk_size,
    seed,
    workers,
    scheduler,
    overwrite,
    strict,
    storage_option,
) -> None:
    """Compute exact peaks (pymatgen-identical, numba) and clean profiles for every structure in the sources.

    Bad structures and unusable sources are reported and skipped (--strict stops at an unusable source); the
    command fails only when nothing could be built. An interrupted build resumes where it stopped when rerun
    with the same arguments; the same command after a source file was edited rebuilds the bank.
    """
    from .bank_build import build_bank

    fields = _load_config_file(config_file, '{"chunk_size": 64, "grid": {"n_bins": 4096}}')
    overrides = {
        "wavelength": wavelength,
        "symprec": symprec,
        "max_e_above_hull_ev_per_atom": max_e_above_hull,
        "split_seed": split_seed,
        "group_polymorphs": group_polymorphs,
        "displacement_parameters": displacement_parameters,
        "isotypes_per_structure": isotypes,
        "deduplicate": deduplicate,
        "chunk_size": chunk_size,
        "split_fractions": _split_fractions(split_fractions),
    }
    fields.update({k: v for k, v in overrides.items() if v is not None})
    if max_e_above_hull is not None:
        fields["max_e_above_hull_ev_per_atom"] = _optional_float(max_e_above_hull, "--max-e-above-hull")
    try:
        config = BankConfig(**fields)
    except ValidationError as exc:
        _fail(_validation_message(exc, BankConfig, config_file))
    try:
        result = build_bank(
            list(sources),
            out,
            config,
            seed=seed,
            workers=workers,
            scheduler=scheduler,
            overwrite=overwrite,
            strict=strict,
            storage_options=_storage_options(storage_option),
        )
    except ValueError as exc:
        _fail(str(exc))
    _echo(result.summary())
    limit = config.max_e_above_hull_ev_per_atom
    if max_e_above_hull is not None and limit is not None and len(result):
        removed = any("e_above_hull" in s.reason for s in result.skipped)
        if not removed and np.isnan(result.column("e_above_hull_ev_per_atom")).all():
            _echo(
                f"warning: --max-e-above-hull {limit:g} removed nothing: no entry's metadata give e_above_hull "
                "(CIF files carry none; give the structures as CSV or JSON records with an e_above_hull field)",
                err=True,
            )
    same_options = " and the same --storage-option" if storage_option else ""
    if len(result) == 0:
        _fail(
            f"no structure could be built; see the skip reasons above, each input's with `xrdsynth bank info {out} "
            f"--skipped`{same_options} (the empty bank keeps them; rebuild over it with --overwrite)"
        )
    skipped = (
        f" (each with its file and reason: xrdsynth bank info {out} --skipped{same_options})"
        if result.skipped
        else ""
    )
    _echo(f"bank: {len(result)} entries, {len(result.skipped)} skipped{skipped} -> {out}")


@bank.command("info")
@click.argument("bank_url", metavar="BANK")
@click.option("--skipped", "show_skipped", is_flag=True, help="List every skipped input with its reason.")
@_storage_option("a remote BANK URL (s3://...)")
def bank_info(bank_url: str, show_skipped: bool, storage_option: tuple[str, ...]) -> None:
    """Counts per split and crystal system, the space-group histogram and skip reasons of BANK."""
    from .bank import Bank, BankError
    from .generate import check_remote_reachable, local_path
    from .store import StoreError

    options = _storage_options(storage_option)
    try:
        if local_path(bank_url) is None:
            check_remote_reachable(bank_url, options)
        b = Bank.open(bank_url, options)
    except (BankError, StoreError) as exc:
        _fail(str(exc))
    _echo(b.summary(), nl=False)
    if show_skipped:
        for s in b.skipped:
            _echo(f"  {s.provenance}: {s.reason}")


def parse_count(text: str) -> int:
    """Parse a sample count such as 10M, 250k, 1e6 or 20000."""
    t = text.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000, "b": 1_000_000_000}.get(t[-1:], 1)
    if scale != 1:
        t = t[:-1]
    try:
        value = float(t) * scale
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a count; use e.g. 20000, 250k, 10M or 1e6") from None
    if not math.isfinite(value) or value < 1 or value != int(value):
        raise click.BadParameter(f"{text!r} must be a positive whole number of samples")
    return int(value)


@main.group()
def mixtures() -> None:
    """Generate and inspect stores of augmented multi-phase mixtures (paper A.1)."""


@mixtures.command("generate")
@click.option(
    "--bank", "bank_url", required=True, metavar="BANK", help="Bank store made by `xrdsynth bank build`."
)
@click.option(
    "--out",
    required=True,
    metavar="URL",
    help="Folder or fsspec URL (s3://bucket/prefix) that receives one store per split: <out>/<split>.zarr.",
)
@click.option(
    "--n",
    "n_train",
    required=True,
    metavar="COUNT",
    callback=lambda ctx, param, value: parse_count(value),
    help="Training mixtures: 20000, 250k, 10M, 1e6.",
)
@click.option(
    "--n-eval",
    default=None,
    metavar="COUNT",
    callback=lambda ctx, param, value: parse_count(value) if value else None,
    help="Mixtures in each of val, test and in-library (default: 2.5/95 of --n, the A.1 split ratio).",
)
@click.option(
    "--splits",
    default="train,val,test,in_library",
    show_default=True,
    help="Comma-separated splits to generate. in_library draws from training materials with the size of "
    "test (A.7); test draws from the bank's test pool (out-of-library).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="JSON file with GenerateConfig fields, including a `recipe` object (docs/config.md).",
)
@click.option(
    "--recipe",
    "recipe_name",
    type=click.Choice(sorted(RECIPE_PRESETS)),
    default="paper",
    show_default=True,
    help="Named recipe the --config file's `recipe` fields apply on top of: 'paper' is A.1; 'lab' adds "
    "laboratory physics (Kα doublets and anodes, March-Dollase texture, displacement, curved backgrounds, "
    "amorphous humps, air scatter, Poisson counting; docs/physics.md).",
)
@_config_option(
    "--engine",
    model=RecipeConfig,
    field="engine",
    help="Broadening engine: exact per-peak rendering or the paper's LUT convolution",
    type=click.Choice(["exact", "lut"]),
)
@_config_option(
    "--seed",
    model=GenerateConfig,
    field="seed",
    help="Master seed; same seed + config = identical bytes",
    type=int,
)
@_config_option(
    "--shard-size",
    model=GenerateConfig,
    field="shard_size",
    help="Samples per shard, one Dask task each",
    type=int,
)
@_config_option(
    "--dtype",
    "pattern_dtype",
    model=GenerateConfig,
    field="pattern_dtype",
    help="Stored pattern precision",
    type=click.Choice(["float16", "float32"]),
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="LocalCluster worker processes; 0 = no Dask.",
)
@click.option("--scheduler", default=None, metavar="ADDRESS", help="Use an existing Dask scheduler instead.")
@_storage_option("each of --bank and --out that is a remote URL (s3://...)")
@click.option(
    "--resume",
    is_flag=True,
    help="Finish an interrupted store (or reuse a finished one) made with this config.",
)
@click.option("--overwrite", is_flag=True, help="Replace existing stores, whatever config made them.")
def mixtures_generate(
    bank_url,
    out,
    n_train,
    n_eval,
    splits,
    config_file,
    recipe_name,
    engine,
    seed,
    shard_size,
    pattern_dtype,
    workers,
    scheduler,
    storage_option,
    resume,
    overwrite,
) -> None:
    """Draw augmented mixtures from BANK and write them as sharded Zarr stores, one per split.

    Every task writes one whole shard; a shard counts only once its completion flag is set, so a killed run
    resumes with --resume and the result is byte-identical whatever the number of workers. Nothing is written
    before the run is known to be feasible: the recipe against the bank's grid and wavelength, the sizes, the
    free disk space of a local --out and the reachability of a remote one.
    """
    from .bank import BankError
    from .generate import generate_all
    from .store import StoreError

    fields = _load_config_file(config_file, '{"seed": 1, "recipe": {"engine": "lut"}}')
    overrides = {
        "seed": seed,
        "shard_size": shard_size,
        "pattern_dtype": pattern_dtype,
        "n_eval": n_eval,
    }
    fields.update({k: v for k, v in overrides.items() if v is not None})
    if shard_size and shard_size >= 1 and "chunk_rows" not in fields:  # below 1 the config's check names it
        # Inner chunks must tile the shard: its largest divisor up to the default chunk (250 for 1000, not 8).
        fields["chunk_rows"] = tiling_chunk_rows(
            shard_size, GenerateConfig.model_fields["chunk_rows"].default
        )
    recipe = fields.get("recipe", {})
    if engine and isinstance(recipe, dict):
        recipe = {**recipe, "engine": engine}
    try:
        fields["recipe"] = recipe_fields(recipe_name, recipe)
        config = GenerateConfig(**fields)
    except ValidationError as exc:
        _fail(_validation_message(exc, GenerateConfig, config_file))
    except ValueError as exc:  # a recipe that is not an object of fields, an unknown preset
        _fail(str(exc))
    # Each split once, in the order given: a repeated name would generate its store twice (then refuse it).
    wanted = tuple(dict.fromkeys(s.strip() for s in splits.split(",") if s.strip()))
    unknown = set(wanted) - {"train", "val", "test", "in_library"}
    if unknown:
        _fail(f"unknown split(s) {sorted(unknown)} in --splits; choose from train, val, test, in_library")
    try:
        reports = generate_all(
            bank_url,
            out,
            n_train,
            config,
            splits=wanted,
            workers=workers,
            scheduler=scheduler,
            resume=resume,
            overwrite=overwrite,
            storage_options=_storage_options(storage_option),
        )
    except (BankError, StoreError, ValueError) as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"writing to {out} failed: {exc}; finished shards are kept, rerun with --resume")
    for r in reports:
        size = (
            f", {r.stored_bytes / 1e6:.1f} MB stored, compression "
            f"{r.uncompressed_bytes / max(r.stored_bytes or 1, 1):.2f}x over the whole store"
            if r.stored_bytes and r.uncompressed_bytes
            else ""
        )
        _echo(
            f"{r.split}: {r.n_samples} samples, {r.shards_written} shards written, {r.shards_skipped} reused, "
            f"{r.seconds:.1f} s{size} -> {r.url}"
        )


@mixtures.command("inspect")
@click.argument("store_url", metavar="STORE")
@_storage_option("a remote STORE URL (s3://...)")
def mixtures_inspect(store_url: str, storage_option: tuple[str, ...]) -> None:
    """Counts, K* and space-group histograms and the parameter ranges seen in STORE (a path or fsspec URL)."""
    from .inspect_store import describe_store

    try:
        _echo(describe_store(store_url, _storage_options(storage_option)), nl=False)
    except ValueError as exc:
        _fail(str(exc))


@mixtures.command("plot")
@click.argument("store_url", metavar="STORE")
@click.option("--index", "index", type=int, required=True, help="Sample to plot (0-based).")
@click.option(
    "--out", "png", type=click.Path(dir_okay=False), default=None, help="PNG path (default mixture-<I>.png)."
)
@click.option(
    "--bank",
    "bank_url",
    default=None,
    metavar="BANK",
    help="Bank for the phases' sticks (default: the one the store names).",
)
@_storage_option("each of STORE and the bank that is a remote URL (s3://...)")
def mixtures_plot(
    store_url: str, index: int, png: str | None, bank_url: str | None, storage_option: tuple[str, ...]
) -> None:
    """Draw sample I of STORE (a path or fsspec URL): the pattern, its measurement window and each phase's sticks
    with space group and weight."""
    from .inspect_store import plot_sample

    try:
        path, no_sticks = plot_sample(
            store_url, index, png or f"mixture-{index}.png", bank_url, _storage_options(storage_option)
        )
    except ValueError as exc:
        _fail(str(exc))
    if no_sticks:
        _echo(f"warning: the plot has no sticks: {no_sticks}", err=True)
    _echo(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
