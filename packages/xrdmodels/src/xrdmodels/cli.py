"""Command line: `xrdmodels train`, `evaluate`, `predict`, `score-measured`, `ensemble`, `add-memory`."""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from .config import (
    DEFAULT_EXPECTED_PHASES,
    DEFAULT_LIBRARY_CELL_SCAN,
    DEFAULT_MEMORY_CELL_SCAN,
    DEFAULT_PRIOR_WEIGHT,
    MAX_PHASES,
    parse_storage_options,
    redact_log_record,
    redact_url,
)
from .measured.common import LINES_ANGSTROM


def _echo(message: str = "", **kwargs: Any) -> None:
    """click.echo with user:password masked in every URL the text names (docs/security.md)."""
    click.echo(redact_url(message), **kwargs)


def _fail(message: str) -> None:
    raise click.ClickException(redact_url(message))


def _storage_option(help_text: str):
    """The repeatable --storage-option KEY=VALUE of every command that reads a remote store (the same option as
    xrdsynth's, which this package may not import)."""
    return click.option(
        "--storage-option",
        "storage_option",
        multiple=True,
        metavar="KEY=VALUE",
        help=f"fsspec option for {help_text}, repeatable (e.g. endpoint_url=http://127.0.0.1:9000, anon=true, "
        "key=..., secret=...; true and false are read as booleans; never written to a file or log). Local paths "
        "take none. What is not given here comes from the environment (AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL).",
    )


def _storage_options(pairs: tuple[str, ...]) -> dict | None:
    """fsspec options from --storage-option pairs (:func:`~xrdmodels.config.parse_storage_options`)."""
    try:
        return parse_storage_options(pairs)
    except ValueError as exc:
        _fail(str(exc))


def _number(text: str) -> float:
    """An option's text as a number; NaN (refused by every range check) when it is not one."""
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _threshold(text: str | None) -> float | str | None:
    """--threshold: a number >= 0, or "validation" (the checkpoint's validation threshold or gate)."""
    if text is None or text.strip().lower() == "validation":
        return None if text is None else "validation"
    value = _number(text)
    if not value >= 0:
        _fail(
            f"--threshold {text!r}: give a number >= 0, or 'validation' for the checkpoint's validation one"
        )
    return value


def _make_writable_folder(folder: str, what: str) -> None:
    """Create `folder` (with its parents) and check that it is writable, or fail naming `what` goes there."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError("permission denied")
    except OSError as exc:
        _fail(f"cannot write {what} {folder}: {exc}")


def _naming(file: str, error: str) -> str:
    """A per-file error with its file named once (readers' messages already start with it)."""
    return error if error.startswith(file) else f"{file}: {error}"


def _validation_message(exc: ValidationError, source: str, known: list[str] | None = None) -> str:
    """One line per error; an unknown top-level field gets the closest of the ``known`` names as a suggestion."""
    lines = []
    for e in exc.errors():
        line = f"  {'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" + _got(e)
        if e["type"] == "extra_forbidden" and known and len(e["loc"]) == 1:
            close = difflib.get_close_matches(str(e["loc"][0]), known, n=1)
            line += f"; did you mean {close[0]}?" if close else ""
        lines.append(line)
    return f"invalid configuration in {source}:\n" + "\n".join(lines)


def _got(error: dict) -> str:
    """The offending value, unless it is the whole config (errors about several fields at once) or may hold
    credentials (storage_options, or a field the config does not know, such as a misspelt one;
    docs/security.md)."""
    if (
        not error["loc"]
        or isinstance(error.get("input"), dict)
        or error["loc"][0] == "storage_options"
        or error["type"] == "extra_forbidden"
    ):
        return ""
    return f" (got {error.get('input')!r})"


def apply_overrides(fields: dict[str, Any], overrides: tuple[str, ...]) -> dict[str, Any]:
    """Apply KEY=VALUE overrides (dotted keys reach into nested objects; VALUE is JSON when it parses)."""
    out = json.loads(json.dumps(fields))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            _fail(
                f"override {item!r} must look like KEY=VALUE, e.g. batch_size=64 or model_overrides.head=presence"
            )
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        target = out
        parts = key.split(".")
        for depth, p in enumerate(parts[:-1]):
            if target.get(p) is None:
                target[p] = {}
            target = target[p]
            if not isinstance(target, dict):
                _fail(
                    f"override {key}: {'.'.join(parts[: depth + 1])} is {target!r}, not an object with fields; "
                    f"set it whole, e.g. {'.'.join(parts[: depth + 1])}=VALUE"
                )
        target[parts[-1]] = value
    return out


def load_config_file(path: str | None) -> dict[str, Any]:
    """The fields of a JSON or YAML config file (an object at its top level); ClickException naming the file
    when it cannot be read or holds anything else."""
    if path is None:
        return {}
    try:
        text = Path(path).read_text()
        if path.endswith((".yaml", ".yml")):
            import yaml

            fields = yaml.safe_load(text)
        else:
            fields = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - decoding, parsing and reading errors all mean "unusable file"
        _fail(f"cannot parse config file {path}: {exc}")
    if fields is None:  # an empty YAML file
        return {}
    if not isinstance(fields, dict):
        _fail(
            f"config file {path} holds a {type(fields).__name__} at its top level; it must be an object of "
            'TrainConfig fields, e.g. {"train_store": "runs/mixtures/train.zarr", "batch_size": 64} (docs/config.md)'
        )
    return fields


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-v", "--verbose", is_flag=True, help="Show debug logs.")
def main(verbose: bool) -> None:
    """Train, evaluate and apply space-group models on multi-phase powder XRD (paper A.2-A.8)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(redact_log_record)


@main.command("train")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="JSON or YAML file of TrainConfig fields (docs/config.md); pipelines/ has examples.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue exactly from <out_dir>/last.pt (model, optimizer, schedule, RNG and stream position).",
)
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
def train_cmd(config_file: str | None, resume: bool, overrides: tuple[str, ...]) -> None:
    """Train a model on a mixture store (A.6). KEY=VALUE overrides replace config fields, e.g.

    xrdmodels train --config pipelines/demo/train_cpu.json max_steps=200 model_overrides.head=presence

    Required: train_store (a store of `xrdsynth mixtures generate`). Commonly set: val_store, out_dir,
    model_preset, max_steps or max_minutes, batch_size, lr, seed, phase_memory. Every field, its default and the
    paper section it follows: docs/config.md.

    Model presets (model_preset): paper (A.2-A.4 exactly), small (the paper's structure at CPU size) and cpu
    (CPU size with flatten read-outs, a lean 64-token front-end and no dropout: what learns in minutes on a
    CPU, docs/benchmarks.md).

    Multi-GPU / multi-node: torchrun --nproc-per-node G -m xrdmodels.cli train --config FILE

    Ctrl-C or SIGTERM stops after the current step and saves last.pt; the exit status is then 130, so that
    scripts do not take the run for finished (stopping at max_minutes exits 0). Continue with --resume.
    """
    from .config import TrainConfig
    from .train import TrainingDiverged, train

    fields = apply_overrides(load_config_file(config_file), overrides)
    try:
        config = TrainConfig(**fields)
        config.build_model_config()
    except ValidationError as exc:
        # Keys only, as _got shows no unknown field's value: an override's value may be a credential.
        keys = ", ".join(o.split("=", 1)[0] for o in overrides)
        source = " and ".join(filter(None, [config_file, f"the overrides of {keys}" if overrides else ""]))
        _fail(_validation_message(exc, source or "the defaults", list(TrainConfig.model_fields)))
    except ValueError as exc:
        _fail(str(exc))
    try:
        summary = train(config, resume=resume)
    except (TrainingDiverged, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    state = (
        "stopped by the time limit (max_minutes)"
        if summary.get("out_of_time")
        else "interrupted"
        if summary["interrupted"]
        else "finished"
    )
    best = (
        f"best val micro-F1 {summary['best_val_micro_f1']:.4f}"
        if summary["best_val_micro_f1"] >= 0
        else "not validated on the val_every schedule yet"
        if config.val_store
        else "no validation store"
    )
    resume = "; continue with --resume" if summary.get("out_of_time") or summary["interrupted"] else ""
    _echo(f"train: {state} at step {summary['step']}, {best} -> {summary['out_dir']}{resume}")
    if summary["interrupted"]:
        # 128 + SIGINT, as shells report a Ctrl-C: scripts and pipelines must not take an interrupted run for a
        # finished one (a max_minutes stop is planned and exits 0).
        sys.exit(130)


@main.command("evaluate")
@click.argument("checkpoints", nargs=-1, required=True, metavar="CHECKPOINT...")
@click.option(
    "--mixtures",
    "mixtures_dir",
    default=None,
    metavar="DIR",
    help="Folder of mixture stores: evaluates DIR/in_library.zarr and DIR/test.zarr (A.7).",
)
@click.option(
    "--store",
    "stores",
    multiple=True,
    metavar="NAME=URL",
    help="A store to evaluate under a name, repeatable (e.g. test=s3://bucket/mix/test.zarr).",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for table.md, results.csv/json, strata.csv and the figures.",
)
@click.option(
    "--name", "names", multiple=True, help="Method name per checkpoint, in order (default from the model)."
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Samples per forward pass.",
)
@click.option(
    "--max-samples",
    type=click.IntRange(min=1),
    default=None,
    help="Evaluate only the first N samples of each store.",
)
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@_storage_option("each store that is a remote URL (s3://...)")
def evaluate_cmd(
    checkpoints, mixtures_dir, stores, out_dir, names, batch_size, max_samples, device, storage_option
) -> None:
    """Score checkpoints as in the paper (A.7-A.8): micro-F1 sweeps, cover/recall/IoU@K, strata; Table 1.

    Several checkpoints are compared in one table. A CHECKPOINT may be an ensemble manifest (.json, written by
    `xrdmodels ensemble`): its members are scored as one model.
    """
    from .data import StoreFormatError
    from .evaluate import evaluate_checkpoints, markdown_table

    named: dict[str, str] = {}
    if mixtures_dir:
        named.update(
            {
                "in_library": f"{mixtures_dir.rstrip('/')}/in_library.zarr",
                "test": f"{mixtures_dir.rstrip('/')}/test.zarr",
            }
        )
    for item in stores:
        key, sep, url = item.partition("=")
        if not sep:
            _fail(f"--store {item!r} must look like NAME=URL")
        named[key] = url
    if not named:
        _fail("nothing to evaluate: give --mixtures DIR or --store NAME=URL")
    if names and len(names) != len(checkpoints):
        _fail(f"{len(names)} --name for {len(checkpoints)} checkpoints; give one per checkpoint or none")
    try:
        rows = evaluate_checkpoints(
            list(checkpoints),
            named,
            out_dir,
            batch_size=batch_size,
            device=device,
            max_samples=max_samples,
            names=list(names) or None,
            storage_options=_storage_options(storage_option),
        )
    except (StoreFormatError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    _echo(markdown_table(rows))
    _echo(f"evaluate: table.md, results.csv, results.json, strata.csv and figures in {out_dir}")


_max_file_mb_option = click.option(
    "--max-file-mb",
    type=click.FloatRange(min=0, min_open=True),
    default=64.0,
    show_default=True,
    help="Refuse a file (or the zip members read from a .rasx/.brml) larger than this many MiB.",
)
#: --threshold of `predict` and `score-measured`.
_threshold_option = click.option(
    "--threshold",
    default=None,
    metavar="NUMBER|validation",
    callback=lambda ctx, param, value: _threshold(value),
    help="Presence threshold or slot gate: as many groups as reach it (a presence model's probability, the "
    "`probability` column; a phase-cluster model's slot gate, the paper's slot union) form the predicted set, "
    "taken from the top of the ranking; 'validation' takes the one the checkpoint chose on validation (the "
    "paper's operating point, A.1.7; an ensemble's: the one `xrdmodels ensemble --val-store` chose for its average, "
    "else the mean of its members'). Default: the size of highest expected F1 under the model's probabilities "
    "(xrdmodels.metrics.expected_f1_set_size; for a phase-cluster model, the chance that some slot holds each "
    "group), at most the most phases of one of the checkpoint's training mixtures (5 under A.1 and the lab "
    "recipe).",
)


def _expected_phases(text: str) -> float | str:
    """--expected-phases: a number from 1 to 5, or "training"."""
    if text.strip().lower() == "training":
        return "training"
    from .predict import check_expected_phases

    try:
        return check_expected_phases(_number(text))
    except ValueError:
        _fail(
            f"--expected-phases {text!r}: give the mean number of phases in your samples, from 1 to {MAX_PHASES}, "
            "or 'training' to read the model's probabilities as trained"
        )


#: --expected-phases of `predict` and `score-measured`.
_expected_phases_option = click.option(
    "--expected-phases",
    default=str(DEFAULT_EXPECTED_PHASES),
    show_default=True,
    metavar="NUMBER|training",
    callback=lambda ctx, param, value: _expected_phases(value),
    help="Mean number of phases in the samples you measure (1-5). The model learned on mixtures of its training "
    "recipe's mean (2.4 under A.1); its probabilities are read under this many before the predicted set's size is chosen "
    "(xrdmodels.metrics.rescale_presence_odds; the ranking does not change). 'training': as trained. The "
    "default suits samples of one or two phases (docs/benchmarks.md, 'The number of phases a user expects'). "
    "No effect with --threshold.",
)

#: --prior-weight of `predict` and `score-measured`.
_prior_weight_option = click.option(
    "--prior-weight",
    type=click.FloatRange(min=0),
    default=DEFAULT_PRIOR_WEIGHT,
    show_default=True,
    help=(
        "Weight w of the training label prior in the ranking: each group is ranked by its model score + w x its "
        "share of the training phases (recorded in the checkpoint) within its crystal system x the model's belief "
        "in that system, so that among groups the model is unsure of, the commoner of the systems it believes in "
        "come first; 0 ranks by the model's scores alone (the paper). The predicted set keeps the model's "
        "size (docs/paper-protocol.md)."
    ),
)
#: --library-cell-scan of `predict` and `score-measured`.
_library_cell_scan_option = click.option(
    "--library-cell-scan",
    type=click.FloatRange(min=0, max=0.5, max_open=True),
    default=DEFAULT_LIBRARY_CELL_SCAN,
    show_default=True,
    metavar="FRACTION",
    help="Reach of the library search's cell scan: each library phase is also compared with its cell "
    "isotropically larger and smaller, d-spacings up to this fraction apart, in steps of 0.003, so that a solid "
    "solution or a sample's own composition still matches its library entry (the match reports the cell "
    "change); 0 compares the library's cells only. The neighbour term (--library-neighbours) scans as far, in "
    "steps of 0.005. The combined ranking's calibration was fitted at the default.",
)

#: --library-refine-axes of `predict` and `score-measured`.
_library_refine_axes_option = click.option(
    "--library-refine-axes",
    is_flag=True,
    default=False,
    help="Also refine the library search's best phases axis by axis: each axis its crystal system lets change "
    "on its own (none for cubic phases) may depart up to 1.2% from the isotropic cell change, and the match "
    "reports each axis's change (cell a/b/c). Needs a bank with per-reflection arrays (format version 2). Off "
    "by default: about 3.4x slower, with no gain on RRUFF dev that held on two models (docs/benchmarks.md, "
    '"Axis by axis").',
)

#: --library-neighbours/--no-library-neighbours of `predict` and `score-measured`.
_library_neighbours_option = click.option(
    "--library-neighbours/--no-library-neighbours",
    default=True,
    help="With --library, also rank the library's phases by how alike the model sees them and the pattern (its "
    "encoded tokens, cosine; xrdmodels.neighbours) and add that as a third term of the combined ranking. On by "
    "default: on RRUFF dev it lifted the combined top-1 by 0.007-0.027 for five models, +0.019 pooled, with "
    "top-5 level, but it can push a mixture's second phase down (docs/benchmarks.md, \"Neighbours in the model's "
    "eyes\"). Needs the bank on the model's grid; without it the ranking goes on without this term and says so.",
)

_memory_option = click.option(
    "--memory/--no-memory",
    default=True,
    help="Rank with the checkpoint's memory of its training phases where it carries one (`xrdmodels "
    "add-memory`): the phases the model sees nearest the pattern (xrdmodels.neighbours) add a noisy-OR term to "
    'its ranking (docs/benchmarks.md, "A memory of the training phases"). --no-memory: the network alone. A '
    "combined ranking (--library) always takes the network's probabilities, so those phases count once.",
)

_memory_cell_scan_option = click.option(
    "--memory-cell-scan",
    type=click.FloatRange(min=0, max=0.5, max_open=True),
    default=DEFAULT_MEMORY_CELL_SCAN,
    show_default=True,
    metavar="FRACTION",
    help="Reach of the memory's cell scan: each remembered phase is also compared with the pattern stretched in "
    "d-spacing by up to this fraction, in steps of 0.005, so that a sample whose cell differs a little from its "
    "training phase's still finds it; 0 compares the phases' own cells only.",
)


@main.command("predict")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.argument("files", nargs=-1, required=True, metavar="FILE_OR_FOLDER...")
@click.option(
    "--wavelength",
    default=None,
    help="Wavelength in Å, or a line name (Cu, Mo, Co, Fe, Cr or Ag with Ka, Ka1, Ka2 or Kb1, any case: CuKa, "
    "mokb1; pymatgen's values), when the file does not say; overrides the file when given. A file that states no "
    "wavelength and has none given is read as Cu Kα (1.54184 Å), with a warning.",
)
@click.option(
    "--format",
    "file_format",
    default=None,
    help="Force a reader: xy, xrdml, fxye, ras, rasx, brml, raw, uxd, udf, cpi (default: by extension and "
    "content).",
)
@click.option(
    "--top",
    "top_k",
    type=click.IntRange(1, 230),
    default=10,
    show_default=True,
    help="Ranked space groups to show.",
)
@_threshold_option
@_expected_phases_option
@_prior_weight_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option(
    "--plot",
    "plot_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Write a PNG per file (pattern on the model grid + ranked space groups) into this folder: <stem>.png, "
    "<stem>-2.png ... where file stems repeat (each prediction names its plot).",
)
@_max_file_mb_option
@click.option(
    "--library",
    default=None,
    metavar="BANK",
    help="Also search this bank store (built by `xrdsynth bank build`; a path or fsspec URL) and show its "
    "space groups, ranked by how well its read phases (not its generated random crystals) match the pattern, "
    "beside the model's (a classical search-match baseline), then both in one ranking (the model's "
    "probability, hedged by --prior-weight as its ranking is, and the library's calibrated figure of merit, "
    "noisy-OR; xrdmodels.combined) with its combined set: its top, as many groups as the predicted set.",
)
@_library_cell_scan_option
@_library_refine_axes_option
@_library_neighbours_option
@_memory_option
@_memory_cell_scan_option
@_storage_option("a remote --library URL (s3://...)")
def predict_cmd(
    checkpoint,
    files,
    wavelength,
    file_format,
    top_k,
    threshold,
    expected_phases,
    prior_weight,
    as_json,
    plot_dir,
    max_file_mb,
    library,
    library_cell_scan,
    library_refine_axes,
    library_neighbours,
    memory,
    memory_cell_scan,
    storage_option,
) -> None:
    """Space groups present in measured patterns: .xy/.xye/.csv/.dat, .xrdml, .fxye/.gsa, .ras/.rasx, .brml, .raw, .uxd, .udf, .cpi.

    Patterns at another wavelength are mapped through d-spacing to the model's; folders are searched for pattern
    files (by content or extension; other files are listed as left out), and a file that cannot be read is
    reported while the others are predicted. A pattern without measurable signal (all zero, flat, mostly
    negative) is reported and not predicted; a few negative intensities are clipped to 0 with a warning
    (docs/formats.md). Groups are ranked by the model's set score (docs/paper-protocol.md), with a checkpoint's
    memory of its training phases (`xrdmodels add-memory`) also by how surely the training phase it sees nearest
    the pattern names each group, and that phase is shown (--no-memory: the network alone). The predicted set is
    the top of that ranking: as many groups as give the highest expected F1 under the model's probabilities (read
    at --expected-phases phases per sample; at most as many as a training mixture's most phases), or, with
    --threshold, as many as reach it (--threshold validation: the paper's read-out at the checkpoint's
    validation threshold or gate). With --library, a search of the bank's phases ranks its space
    groups beside the model's (xrdmodels.library_search), and a third ranking combines the two
    (xrdmodels.combined), whose top, as many groups as the predicted set, is the combined set (the answer to read
    for mixtures, docs/benchmarks.md). CHECKPOINT may be an ensemble manifest (.json, written by `xrdmodels ensemble`): the
    members' probabilities are averaged.
    """
    from .predict import format_prediction, predict_files, to_json

    wl = _wavelength(wavelength)
    if plot_dir is not None:  # before predicting, so that an unwritable folder does not lose the predictions
        _make_writable_folder(plot_dir, "the plots to --plot")
    try:
        predictions, failures, skipped = predict_files(
            checkpoint,
            list(files),
            wavelength_angstrom=wl,
            top_k=top_k,
            threshold=threshold,
            expected_phases=expected_phases,
            plot_dir=plot_dir,
            file_format=file_format,
            max_bytes=int(max_file_mb * 2**20),
            library=library,
            prior_weight=prior_weight,
            library_cell_scan=library_cell_scan,
            library_refine_axes=library_refine_axes,
            library_neighbours=library_neighbours,
            memory=memory,
            memory_cell_scan=memory_cell_scan,
            storage_options=_storage_options(storage_option),
        )
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    if as_json:
        _echo(to_json(predictions, failures, skipped))
    else:
        for p in predictions:
            _echo(format_prediction(p) + "\n")
        for f, err in failures:
            _echo(f"could not predict {_naming(f, err)}", err=True)
    if skipped:
        _echo(
            f"left out {len(skipped)} file(s) of the named folders that are not patterns by content or extension: "
            f"{', '.join(skipped)} (name a file directly to read it as two-column text)",
            err=True,
        )
    if not predictions and not failures:
        _fail(f"no pattern file found in {', '.join(files)}: name pattern files or folders that hold them")
    if failures and not predictions:
        raise SystemExit(1)


@main.command("score-measured")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--labels",
    "labels_csv",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="CSV of measured files with known phases (UTF-8 or Windows-1252; columns set, file, spacegroups, and "
    "optionally spacegroups_accept, extra_or_trace, wavelength_angstrom: docs/formats.md, 'Labels tables'), such as "
    "all_labels.csv of the shared experimental set; files are relative to it. A file's own wavelength is used where it states one, else "
    "its row's wavelength_angstrom. A row whose labels are unusable is reported and the others scored.",
)
@click.option(
    "--set", "sets", multiple=True, help="Only these sets (repeatable), e.g. --set xrd_autoanalyzer."
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Score only the first N files.")
@_max_file_mb_option
@_threshold_option
@_expected_phases_option
@_prior_weight_option
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for measured.md and measured.json.",
)
@click.option(
    "--library",
    default=None,
    metavar="BANK",
    help="Also score a search of this bank store's read phases (built by `xrdsynth bank build`; a path or "
    "fsspec URL; its generated random crystals are left out) on "
    "the same files: the library's hit@k, recall@K* and cover@K* beside the model's, and those of the model "
    "and the library combined in one ranking (xrdmodels.combined).",
)
@_library_cell_scan_option
@_library_refine_axes_option
@_library_neighbours_option
@_memory_option
@_memory_cell_scan_option
@_storage_option("a remote --library URL (s3://...)")
def score_measured_cmd(
    checkpoint,
    labels_csv,
    sets,
    limit,
    max_file_mb,
    threshold,
    expected_phases,
    prior_weight,
    out_dir,
    library,
    library_cell_scan,
    library_refine_axes,
    library_neighbours,
    memory,
    memory_cell_scan,
    storage_option,
) -> None:
    """Score CHECKPOINT on measured patterns with known phases: hit@k, recall@K*, cover@K* per set (with
    --library, the same for a search of that bank and for the model and the library combined, beside the
    model's; with a checkpoint's memory of its training phases, the network alone too), and the model's predicted
    set's size, precision, recall, F1 and exact match against the labelled phases (sized as `predict` sizes it;
    --threshold and --expected-phases as there; with --library, the combined set's too: the combined ranking's
    top at the model's set size, the model's set where the search fails). CHECKPOINT may be an ensemble
    manifest (.json, written by `xrdmodels ensemble`)."""
    from .measured_eval import score_measured, write

    created = not Path(out_dir).exists()
    _make_writable_folder(out_dir, "the scores to --out")  # before scoring, so that the scores are not lost

    def fail_and_tidy(message: str) -> None:
        if created:
            with contextlib.suppress(OSError):  # only if still empty
                Path(out_dir).rmdir()
        _fail(message)

    try:
        scores, failures = score_measured(
            checkpoint,
            labels_csv,
            sets=list(sets) or None,
            limit=limit,
            library=library,
            prior_weight=prior_weight,
            library_cell_scan=library_cell_scan,
            library_refine_axes=library_refine_axes,
            library_neighbours=library_neighbours,
            memory=memory,
            memory_cell_scan=memory_cell_scan,
            storage_options=_storage_options(storage_option),
            threshold=threshold,
            expected_phases=expected_phases,
            max_bytes=int(max_file_mb * 2**20),
        )
    except (FileNotFoundError, ValueError) as exc:  # the checkpoint (refused, incomplete) or the labels file
        fail_and_tidy(str(exc))
    if not scores:
        shown = "".join(f"\n  {_naming(f, err)}" for f, err in failures[:10])
        more = f"\n  ... and {len(failures) - 10} more" if len(failures) > 10 else ""
        fail_and_tidy(
            f"no file of {labels_csv} could be scored: {shown + more if failures else 'it has no rows'}"
        )
    write(scores, failures, out_dir)
    _echo((Path(out_dir) / "measured.md").read_text())
    for f, err in failures:
        _echo(f"could not score {_naming(f, err)}", err=True)
    _echo(f"score-measured: {len(scores)} files scored, {len(failures)} failed -> {out_dir}")


_LINES_BY_LOWER = {name.lower(): value for name, value in LINES_ANGSTROM.items()}


def _wavelength(text: str | None) -> float | None:
    if text is None:
        return None
    if text.strip().lower() in _LINES_BY_LOWER:
        return _LINES_BY_LOWER[text.strip().lower()]
    try:
        value = float(text)
    except ValueError:
        _fail(f"--wavelength {text!r}: give Å or one of {', '.join(LINES_ANGSTROM)} (any case)")
    if not 0.05 <= value <= 5:
        _fail(f"--wavelength {value} Å is outside the X-ray range 0.05-5 Å")
    return value


@main.command("ensemble")
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.argument("checkpoints", nargs=-1, required=True, metavar="CHECKPOINT...")
@click.option(
    "--val-store",
    metavar="URL",
    default=None,
    help="Validation mixture store (e.g. DATA/mixtures/val.zarr) on which the ensemble's own operating threshold "
    "is chosen (best micro-F1 of its averaged probabilities over A.7's 101 thresholds) and recorded in the "
    "manifest; without it the threshold is the mean of the members' validation thresholds, which an average of "
    "probabilities need not share.",
)
@_storage_option("a remote --val-store URL (s3://...)")
def ensemble_cmd(manifest, checkpoints, val_store, storage_option) -> None:
    """Write MANIFEST (a .json file) naming CHECKPOINTs read as one model: evaluate, predict and score-measured
    take the manifest in place of a checkpoint and average the members' presence probabilities (a deep ensemble;
    xrdmodels.ensemble, docs/formats.md "Ensemble manifests"). add-memory takes each member on its own.

    The members must be presence models trained on the same grid, wavelength and recipe (e.g. one config with
    different seeds); they are loaded and checked before the manifest is written. Members below the manifest's
    folder are stored relative to it, so the folder can be moved as a whole.
    """
    from .config import remote_options
    from .data import MixtureStore, check_grid, check_wavelength
    from .ensemble import PresenceEnsemble, check_manifest_names, ensemble_state, write_manifest
    from .evaluate import load_model, predict_store
    from .metrics import evaluate_presence

    try:
        check_manifest_names(Path(manifest), list(checkpoints))
        options = remote_options(val_store, _storage_options(storage_option)) if val_store else None
        store = MixtureStore(val_store, options) if val_store else None
        models, states = [], []
        for checkpoint in checkpoints:
            model, state = load_model(checkpoint)
            models.append(model)
            # The checks read the configs and metadata; the weights' copy and the optimizer state are let go.
            states.append({k: v for k, v in state.items() if k not in ("model", "optimizer")})
        merged = ensemble_state(manifest, [Path(c) for c in checkpoints], states)
        threshold = None
        if store is not None:
            ensemble = PresenceEnsemble(models).eval()
            check_grid(store, ensemble.config)
            trained_at = merged.get("data", {}).get("wavelength_angstrom")
            check_wavelength(store, float(trained_at) if trained_at else None, checkpoints[0])
            pred = predict_store(ensemble, val_store, storage_options=options)
            threshold = evaluate_presence(pred.scores, pred.targets).sweep.best_threshold
        written = write_manifest(manifest, list(checkpoints), best_threshold=threshold)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    chosen = f", threshold {threshold:.2f} chosen on {val_store}" if threshold is not None else ""
    _echo(f"ensemble: {len(checkpoints)} members -> {written}{chosen}")


@main.command("add-memory")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.argument("bank", metavar="BANK")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option(
    "--split",
    type=click.Choice(["train", "val", "test", "all"]),
    default="train",
    show_default=True,
    help="Which of the bank's read phases to keep: one split (train: those the model learned from) or all.",
)
@_storage_option("a remote BANK URL (s3://...)")
def add_memory_cmd(checkpoint, bank, out, split, storage_option) -> None:
    """Write OUT: CHECKPOINT with a memory of BANK's read phases (its generated random crystals left out), as
    the neighbour search shows them to the model: broadened to sharp lab peaks and normalised (xrdmodels.neighbours,
    docs/formats.md "Checkpoints"). `predict` and `score-measured` then add the phases the model sees nearest a
    pattern to its ranking (--no-memory turns that off). BANK (a path or fsspec URL) should be the bank the
    model's mixtures were drawn from, on the model's grid; the memory adds ~2 bytes per bin and phase (6 MB for
    1,437 phases of 2,048 bins)."""
    from .checkpoint import add_memory

    try:
        n = add_memory(checkpoint, bank, out, split=split, storage_options=_storage_options(storage_option))
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    _echo(f"add-memory: {n:,} phases of the {split} split -> {out}")


if __name__ == "__main__":
    sys.exit(main())
