"""Model configuration: one pydantic `ModelConfig`, and the named presets `paper`, `small` and `cpu`.

Section references such as "(A.2)" point to Appendix A of the paper
(`shared/paper/space-group-multiphase-xrd.md`): A.1 data grid, A.2 CNN front-end, A.3 encoders,
A.4 phase clustering, A.5 training objective. Fields the paper leaves open say so in their description.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

#: Number of crystallographic space groups; space group s (1..230) is class index s - 1 (A.5).
N_SPACE_GROUPS = 230
#: Class index of the NONE class in the (230 + 1)-way slot distribution (A.4).
NONE_CLASS = N_SPACE_GROUPS
#: Largest number of phases per mixture, K* in 1..5 (Sec. 2.2); the store's per-phase arrays have this width.
MAX_PHASES = 5
#: Cu Kα, weighted mean of the doublet (pymatgen's ``CuKa``), Å: the wavelength of the paper's training
#: data (A.1), assumed for a store or checkpoint that does not record its own.
CU_KA_ANGSTROM = 1.54184
#: Default weight w of the hedge towards the training label prior in the ranking of a measured pattern (groups
#: ranked by the model's score + w × the prior within each crystal system, weighted by the model's belief in the
#: system; `xrdmodels.predict.predict_one`). On the shared RRUFF dev set the model alone trails always answering
#: the five commonest groups on the minerals the bank lacks; with w = 2 its hit@5 goes from 0.693-0.711 to
#: 0.738-0.749 over four seeds, on either half of the files, hit@1 within -0.005 to +0.012, NIST unchanged; from
#: w = 3 a NIST scan drops (docs/benchmarks.md, "Hedging towards the label prior").
DEFAULT_PRIOR_WEIGHT = 2.0
#: A.1's distribution of the number of phases in a training mixture, P(K* = 1..5): the training mean (2.4) for a
#: checkpoint that records no recipe of its own.
A1_PHASE_COUNT_PROBABILITIES = (0.20, 0.40, 0.25, 0.10, 0.05)
#: Default mean number of phases in the samples a user measures (`predict` / `score-measured --expected-phases`),
#: against which the model's presence probabilities, learned on mixtures of 2.4 phases on average (A.1), are
#: rescaled before the size of the predicted set is chosen (`xrdmodels.predict.predict_one`). Most samples sent for
#: phase identification hold one or two phases; the shared dev sets hold 1.0 (RRUFF), 1.44 (xrd_autoanalyzer) and
#: 2.0 (NIST) per file. Over three presence models, 1.5 instead of the training mean raises the RRUFF set F1 by
#: 0.033-0.050 and leaves the multi-phase sets within a file (docs/benchmarks.md, "The number of phases a user
#: expects").
DEFAULT_EXPECTED_PHASES = 1.5
#: Reach of the library search's cell scan (`predict` / `score-measured --library-cell-scan`, xrdmodels.library_search):
#: each library phase is also compared at isotropically scaled cells, d-spacings up to this fraction larger and
#: smaller, since solid solutions and a sample's own composition and temperature move a mineral's cell by up to a
#: few per cent (forsterite-fayalite ~3% in b). 0 compares the library's cells only. On the RRUFF dev set the scan
#: lifts the library's hit@1 from 0.483 to 0.515 (`pipelines/fit_library_calibration.py --cell-scan 0` and the
#: default); a screen outside the repo found 0.515-0.519 for reaches of 2 to 6% (docs/benchmarks.md, "The library
#: search scans the cell").
DEFAULT_LIBRARY_CELL_SCAN = 0.03
#: Reach of the cell scan of a checkpoint's memory of its training phases (`predict` / `score-measured
#: --memory-cell-scan`, xrdmodels.neighbours): each phase is also compared with the pattern stretched in d by up to
#: this fraction, in steps of 0.5%, for the same reason as the library's (the same reach). On the RRUFF dev set it
#: lifts the memory's ranking by 0.004-0.030 at hit@1 over seven models (reaches of 1 and 2% lift less;
#: docs/benchmarks.md, "A memory of the training phases").
DEFAULT_MEMORY_CELL_SCAN = 0.03

EncoderKind = Literal["transformer", "cnn"]
HeadKind = Literal["presence", "phase_cluster"]


class ModelConfig(BaseModel):
    """Every size of a `SpaceGroupModel`. Shapes use B = batch, N = n_bins, L = tokens, d = d_model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- input grid (A.1) ---
    n_bins: int = Field(
        2048, gt=0, description="Input length N: bins of the fixed 2θ grid, input x is (B, N) (A.1)."
    )
    two_theta_min_deg: float = Field(
        5.0,
        description="Lower bound of the global 2θ grid, degrees; maps to -1 in the angle conditioning (A.1, A.3).",
    )
    two_theta_max_deg: float = Field(
        120.0,
        description="Upper bound of the global 2θ grid, degrees; maps to +1 in the angle conditioning (A.1, A.3).",
    )

    # --- input pre-processing (not in the paper) ---
    background_removal: Literal["none", "snip"] = Field(
        "none",
        description="'none': the network sees the pattern as given (A.1); 'snip': the model first subtracts a "
        "SNIP background (clipping half-width background_half_width_deg) and divides the window by its 99th "
        "percentile as the stores do, in training and in prediction alike, so raw scans, background-subtracted exports and training "
        "patterns reach the network with the same baseline (docs/physics.md).",
    )
    background_half_width_deg: float = Field(
        1.0,
        gt=0.0,
        le=20.0,
        description="SNIP clipping half-width in degrees 2θ, rounded to whole bins of the grid. 1° keeps Bragg "
        "peaks up to 1.2° FWHM at full height and removes smooth curvature and air scatter; concave humps are "
        "only partly removed (60% of an 8°-wide one). The lab recipe's 5-nm crystallites give peaks up to ~2°, of "
        "which 1° keeps 80-86% of the height and 2° 97-100%; 0.5° clips 10-17% off 1° peaks, 2° leaves 90% of an 8° "
        'hump. 2° measured no better on the shared measured sets (docs/physics.md; docs/benchmarks.md, "The '
        "model's input\").",
    )

    intensity_scale: Literal["linear", "sqrt", "log"] = Field(
        "linear",
        description="'linear': the network sees intensities as given (A.1); 'sqrt': after any background removal "
        "each bin's intensity x becomes sign(x)·sqrt(|x|), in training and in prediction alike. The square root "
        "is the variance-stabilising transform of counting statistics (the library search compares patterns "
        "on it too) and compresses the strongest reflections, whose heights preferred orientation and "
        "absorption distort most in measured patterns; 'log': sign(x)·ln(1 + |x|/0.01)/ln(101), linear below "
        "1% of the maximum and compressing more above it (docs/physics.md, \"Intensity scale at the model's "
        'input").',
    )

    # --- CNN front-end (A.2) ---
    cnn_channels: list[int] = Field(
        [64, 128, 256, 256], min_length=1, description="Output channels C_l of each front-end stage (A.2)."
    )
    cnn_strides: list[int] = Field(
        [2, 2, 2, 2],
        min_length=1,
        description="Stride s_l of each front-end stage; tokens L = N / prod(s_l) (up to rounding up) (A.2).",
    )
    branch_kernel_sizes: list[int] = Field(
        [3, 7, 15], min_length=1, description="Kernel size (bins) of each parallel multi-scale branch (A.2)."
    )
    branch_dilations: list[int] = Field(
        [1, 2, 4],
        min_length=1,
        description="Dilation of each parallel multi-scale branch, paired with kernels (A.2).",
    )
    cnn_dropout: float = Field(
        0.1, ge=0.0, lt=1.0, description="Dropout after the 1x1 mix of each block (A.2)."
    )
    angle_encoding: Literal["mlp", "fourier"] = Field(
        "mlp",
        description="Token angle conditioning: 'mlp' = MLP([θ̃, mask mean]) added to tokens (A.3); 'fourier' = "
        "the same MLP over Fourier features of θ̃ (angle_frequencies sin/cos pairs up to the token Nyquist "
        "frequency) and the mask mean, which tells every token's position apart (not in the paper).",
    )
    angle_frequencies: int = Field(
        16, gt=0, description="Number F of sin/cos pairs when angle_encoding is 'fourier' (not in the paper)."
    )

    # --- encoder (A.3) ---
    encoder: EncoderKind = Field(
        "transformer", description="Token encoder: 'transformer' (default) or 'cnn' (A.3)."
    )
    d_model: int = Field(
        768, gt=0, description="Token width d; front-end features are projected to it (A.3)."
    )
    n_layers: int = Field(
        18, gt=0, description="Transformer layers, or residual blocks of the token CNN (same depth) (A.3)."
    )
    n_heads: int = Field(
        12,
        gt=0,
        description="Attention heads of self-attention (A.3) and of the slot cross-attention (A.4 gives none; "
        "the encoder's are used).",
    )
    ffn_dim: int = Field(
        4096,
        gt=0,
        description="Hidden width of the feed-forward networks (A.3); the paper does not size the slot FFN (A.4), "
        "which reuses it.",
    )
    dropout: float = Field(
        0.1, ge=0.0, lt=1.0, description="Dropout of attention, FFN and token-CNN blocks (A.3)."
    )
    rope_base: float = Field(
        10000.0,
        gt=1.0,
        description="RoPE frequency base along the token (2θ) axis; not stated in the paper (A.3).",
    )
    token_cnn_kernel_size: int = Field(
        7, gt=0, description="Kernel size (tokens) of the token-CNN convolutions (A.3)."
    )
    token_cnn_dilations: list[int] = Field(
        [1, 2, 4, 8],
        min_length=1,
        description="Dilation cycle of the token-CNN blocks, repeated over depth (A.3).",
    )

    # --- head (A.3 pooling + presence, A.4 phase clustering) ---
    head: HeadKind = Field(
        "phase_cluster",
        description="'presence': masked mean pooling + 230 logits (A.3, A.5); "
        "'phase_cluster': K latent slots with (230 + NONE)-way logits (A.4).",
    )
    presence_pooling: Literal["mean", "attention", "flatten"] = Field(
        "mean",
        description="Presence head pooling: 'mean' = masked mean over valid tokens (A.3); 'attention' = "
        "pool_queries learned queries attending to valid tokens, concatenated; 'flatten' = all tokens side by "
        "side (invalid ones zeroed) into the linear layer, weights per 2θ position (not in the paper).",
    )
    pool_queries: int = Field(
        4, gt=0, description="Learned queries of the 'attention' presence pooling (not in the paper)."
    )
    presence_hidden: int = Field(
        0,
        ge=0,
        description="Width of a hidden GELU layer between the pooled features and the 230 presence logits; 0: "
        "the single linear layer of A.3. Not in the paper: the dense layers of the XRD CNN classifiers (Park et "
        'al. 2017, IUCrJ 4, 486); docs/benchmarks.md, "The second phase: three screens".',
    )
    n_slots: int = Field(
        5, gt=0, description="Number K of latent phase slots, the bound on phases per mixture (A.4)."
    )
    slot_init: Literal["learned", "flatten"] = Field(
        "learned",
        description="Initial slots: 'learned' = K learnable embeddings (A.4); 'flatten' = those plus a per-slot "
        "linear map of all tokens side by side (invalid ones zeroed), so slots start knowing where the peaks "
        "are (not in the paper).",
    )
    n_slot_layers: int = Field(
        3,
        gt=0,
        description="Cross-attention + FFN slot update layers; the paper says only 'multiple', 3 follows Slot "
        "Attention [20] (A.4).",
    )

    @model_validator(mode="after")
    def _check_consistency(self) -> ModelConfig:
        if len(self.cnn_channels) != len(self.cnn_strides):
            raise ValueError(
                f"cnn_channels has {len(self.cnn_channels)} stages but cnn_strides has {len(self.cnn_strides)}; "
                "give one stride per stage"
            )
        if len(self.branch_kernel_sizes) != len(self.branch_dilations):
            raise ValueError(
                f"branch_kernel_sizes {self.branch_kernel_sizes} and branch_dilations {self.branch_dilations} "
                "must have the same length (one dilation per branch)"
            )
        if any(k % 2 == 0 for k in [*self.branch_kernel_sizes, self.token_cnn_kernel_size]):
            raise ValueError("kernel sizes must be odd so that 'same' padding is symmetric")
        if self.d_model % self.n_heads != 0 or (self.d_model // self.n_heads) % 2 != 0:
            raise ValueError(
                f"d_model={self.d_model} must be divisible by n_heads={self.n_heads} into an even head width "
                "(RoPE rotates pairs of channels)"
            )
        if self.two_theta_max_deg <= self.two_theta_min_deg:
            raise ValueError(
                f"two_theta_max_deg ({self.two_theta_max_deg}) must exceed two_theta_min_deg ({self.two_theta_min_deg})"
            )
        return self

    @property
    def background_half_width_bins(self) -> int:
        """SNIP half-width in bins of the global grid (at least 1)."""
        bin_deg = (self.two_theta_max_deg - self.two_theta_min_deg) / self.n_bins
        return max(1, round(self.background_half_width_deg / bin_deg))

    @property
    def n_tokens(self) -> int:
        """Token count L after the strided front-end (each stage rounds up: ceil(L / s))."""
        length = self.n_bins
        for stride in self.cnn_strides:
            length = -(-length // stride)
        return length


# CPU-friendly sizes: the paper's structure, narrow and shallow.
_SMALL_SIZES: dict[str, object] = {
    "cnn_channels": [16, 32, 64, 64],
    "d_model": 64,
    "n_layers": 2,
    "n_heads": 4,
    "ffn_dim": 128,
    "n_slot_layers": 2,
}
_PRESETS: dict[str, dict[str, object]] = {
    # Exactly the sizes of Appendix A.2-A.4.
    "paper": {},
    # The paper's structure at CPU size, for tests and smoke runs.
    "small": _SMALL_SIZES,
    # What learns on a CPU in minutes (docs/benchmarks.md, learning): the `small` sizes with read-outs that see
    # where the peaks are. The paper's masked mean pooling and learned-only slots stay at the label prior at
    # this scale, even on 256 memorised patterns; these reach 100% train accuracy in ~100 steps.
    # A lean front-end (stride 4 first: 64 tokens; 3/5/7-tap branches) and no dropout make a step ~3x cheaper
    # and learn as much per step, so 3x faster to the same accuracy (docs/benchmarks.md, training speed).
    "cpu": {
        **_SMALL_SIZES,
        "presence_pooling": "flatten",
        "slot_init": "flatten",
        "cnn_strides": [4, 2, 2, 2],
        "branch_kernel_sizes": [3, 5, 7],
        "cnn_dropout": 0.0,
        "dropout": 0.0,
    },
}


def preset(name: str, **overrides: object) -> ModelConfig:
    """The named preset (`paper`, `small` or `cpu`), with any field replaced by `overrides` (validated).

    The paper's three variants are `preset("paper", encoder="cnn", head="presence")`,
    `preset("paper", encoder="transformer", head="presence")` and `preset("paper")` (phase clustering).
    """
    if name not in _PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(_PRESETS)}")
    return ModelConfig.model_validate({**_PRESETS[name], **overrides})


Precision = Literal["fp32", "bf16"]


class PresenceLoss(BaseModel):
    """L_pres of presence models: A.5's binary cross-entropy, or the asymmetric loss of Ridnik et al. (2021).

    The asymmetric loss (`loss.asymmetric_presence_loss`) takes the easy absent groups out of the gradient.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["bce", "asymmetric"] = Field(
        "bce",
        description='bce (A.5) or asymmetric (not in the paper; docs/benchmarks.md, "The second phase: three screens").',
    )
    gamma_negative: float = Field(
        4.0, ge=0, description="asymmetric: focusing exponent γ- of absent groups (Ridnik et al.: 4)."
    )
    gamma_positive: float = Field(
        0.0, ge=0, description="asymmetric: focusing exponent γ+ of present groups (Ridnik et al.: 0)."
    )
    clip: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="asymmetric: probability margin m; an absent group scored below m costs nothing "
        "(Ridnik et al.: 0.05).",
    )
    trace_weight_below: float = Field(
        0.0,
        ge=0,
        lt=0.5,
        description="A phase whose mixture weight is below this is a trace: its group (unless a heavier phase "
        "shares it) is left out of L_pres, neither to be named nor denied, as score-measured treats a label's "
        "extra_or_trace groups. 0 (A.5) counts every phase. Not the default: at 0.08 the network alone read RRUFF "
        "better, but at the full budget the model with its memory did not, and the RRUFF pairs and the NIST steel "
        'lost second phases (docs/benchmarks.md, "Trace phases left out of the loss").',
    )


class TrainConfig(BaseModel):
    """`xrdmodels train --config FILE`: data, model choice and the optimisation protocol of A.6.

    Steps count optimizer updates of one global batch. Defaults are the paper's protocol (A.6).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- data ---
    train_store: str = Field(
        ...,
        description="Training mixture store (path or fsspec URL), e.g. runs/demo/mixtures/train.zarr (A.1).",
    )
    val_store: str | None = Field(
        None, description="Validation store; its micro-F1 selects best.pt (A.6). None: no validation."
    )
    storage_options: dict | None = Field(
        None,
        repr=False,
        description="fsspec options for s3:// stores (e.g. {'client_kwargs': {'endpoint_url': ...}}). Options "
        "carrying credentials (key, secret, token, password, ...) are used but never written to out_dir or logs; "
        "prefer AWS_* variables or ~/.aws profiles (docs/security.md).",
    )
    out_dir: str = Field(
        "runs/train",
        description="Folder for last.pt, best.pt, step-NNNNNNNN.pt, metrics.csv, config.json and tensorboard/.",
    )

    # --- model ---
    model_preset: str = Field(
        "paper",
        description="Model preset: `paper` (A.2-A.4 sizes), `small` (the paper's structure at CPU size) or `cpu` "
        "(CPU size with position-aware read-outs, a lean 64-token front-end and no dropout: what learns in minutes "
        "on a CPU, docs/benchmarks.md).",
    )
    model_overrides: dict = Field(
        default_factory=dict,
        description='ModelConfig fields replacing the preset\'s, e.g. {"encoder": "cnn", "head": "presence"}.',
    )

    # --- optimisation (A.6) ---
    batch_size: int = Field(
        256, gt=0, description="Global batch size in samples, split evenly over DDP ranks (A.6)."
    )
    lr: float = Field(1e-4, gt=0, description="AdamW peak learning rate (A.6).")
    weight_decay: float = Field(
        1e-2,
        ge=0,
        description="AdamW weight decay (A.6), applied to all parameters (A.6 does not say which).",
    )
    betas: tuple[float, float] = Field(
        (0.9, 0.999), description="AdamW betas; PyTorch defaults, not stated in A.6."
    )
    warmup_steps: int = Field(4000, ge=0, description="Linear warmup length in optimizer steps (A.6).")
    total_steps: int = Field(
        1_000_000, gt=0, description="Step at which the cosine decay reaches its floor (A.6: 1,000,000)."
    )
    min_lr_ratio: float = Field(
        0.0, ge=0, le=1, description="Cosine floor as a fraction of lr; A.6 gives none, hence 0."
    )
    max_steps: int | None = Field(
        None, gt=0, description="Stop this run after this many steps (default total_steps); resume to go on."
    )
    max_minutes: float | None = Field(
        None,
        gt=0,
        description="Also stop after this many minutes of wall time: validate (logged; best.pt keeps to the "
        "val_every schedule), save last.pt; --resume goes on. "
        "Not in the paper (a budget for demos and shared machines).",
    )
    grad_clip: float = Field(1.0, gt=0, description="Clip gradients to this global L2 norm (A.6: 1.0).")
    presence_loss: PresenceLoss = Field(
        default_factory=PresenceLoss,
        description='Presence models\' objective: {"kind": "bce"} (A.5) or {"kind": "asymmetric", ...}. '
        "Slot models always use A.5's assignment loss.",
    )
    precision: Precision = Field(
        "fp32",
        description="fp32 (A.6: no automatic mixed precision) or bf16 autocast. Not in the paper: faster on GPUs, "
        "and on CPUs with native bf16 (avx512_bf16, AMX): the `cpu` preset's steps 1.1-1.3x on one core, and it "
        "still memorises like fp32; on CPUs without them (AVX2 only) autocast emulates bf16 and steps run 5-7x "
        "slower, which training warns about (docs/benchmarks.md, training speed).",
    )
    compile: bool = Field(
        False,
        description="Wrap the model in torch.compile (not in the paper). On CPU it gains nothing for the `cpu` "
        "preset (dropout makes it slower; without dropout +5%) and costs a compile per run (docs/benchmarks.md).",
    )
    torch_threads: int | None = Field(
        None,
        gt=0,
        description="Intra-op threads of each training process (torch.set_num_threads, for the run only); None: "
        "torch's default (all cores, or OMP_NUM_THREADS). Not in the paper: on a CPU shared with other busy "
        "processes, 1 avoids the 5-20x slow-down of OpenMP threads that spin-wait for a core "
        "(docs/benchmarks.md, training speed).",
    )

    # --- validation, checkpoints, logs ---
    val_every: int = Field(
        2000,
        gt=0,
        description="Validate every this many steps, and at max_steps (A.6: 2,000). The validations every "
        "val_every steps and at total_steps choose best.pt; one at an earlier stop (max_steps, max_minutes) is "
        "logged, and writes best.pt only where no scheduled one has yet, so that a resumed run ends with the "
        "best.pt of an uninterrupted one.",
    )
    val_max_batches: int | None = Field(
        None,
        gt=0,
        description="Validate on at most this many batches from the store's start (None: all of it).",
    )
    checkpoint_every: int = Field(
        50_000, gt=0, description="Write step-NNNNNNNN.pt and last.pt every this many steps (A.6: 50,000)."
    )
    keep_step_checkpoints: int | None = Field(
        None,
        gt=0,
        description="Keep only the newest this many step-NNNNNNNN.pt files, deleting the older ones as each new one "
        "is written (None: keep every one; not in the paper). last.pt and best.pt are always kept, and resuming "
        "needs only last.pt.",
    )
    log_every: int = Field(
        50, gt=0, description="Log training loss, lr, gradient norm and samples/s every N steps."
    )
    tensorboard: bool = Field(True, description="Also write TensorBoard scalars to out_dir/tensorboard.")
    phase_memory: bool = Field(
        False,
        description="Keep the training bank's read phases of its train split in every checkpoint, as `xrdmodels "
        'add-memory` does, so that predict ranks with them (docs/formats.md, "Checkpoints"; not in the paper). '
        "Reads the bank the train store records (its bank_url), which must be reachable and on the model's grid.",
    )

    # --- execution ---
    seed: int = Field(0, ge=0, description="Seed of the weights, dropout and the data order.")
    num_workers: int = Field(
        2, ge=0, description="DataLoader worker processes per rank; resume needs the same."
    )
    shuffle_shards: int = Field(4, gt=0, description="Rows are shuffled within windows of this many shards.")
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="auto (cuda when available), cpu, cuda or cuda:N.",
    )

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.max_steps is None:
            object.__setattr__(self, "max_steps", self.total_steps)
        if self.warmup_steps >= self.total_steps:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) must be below total_steps ({self.total_steps})"
            )
        if self.model_preset not in _PRESETS:
            raise ValueError(
                f"model_preset {self.model_preset!r} is unknown; choose one of {sorted(_PRESETS)}"
            )
        try:
            self.build_model_config()
        except ValidationError as exc:
            detail = "; ".join(
                f"model_overrides{''.join(f'.{p}' for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()
            )
            raise ValueError(f"invalid model for preset {self.model_preset!r}: {detail}") from None
        return self

    def build_model_config(self) -> ModelConfig:
        """The preset's ModelConfig with model_overrides applied (validated)."""
        return preset(self.model_preset, **self.model_overrides)

    def persistable(self) -> dict[str, Any]:
        """The fields as JSON-compatible values without credentials: what config.json, checkpoints and log lines
        get (`redact_train_config`)."""
        return redact_train_config(self.model_dump(mode="json"))


#: Substrings of option names (lower case) that mark an fsspec storage option as carrying a credential: key,
#: secret, aws_access_key_id, aws_secret_access_key, token, aws_session_token, sas_token, password,
#: credentials, Authorization headers, account_key, connection_string, ...
SECRET_OPTION_MARKERS = ("key", "secret", "token", "passw", "credential", "auth", "connection_string")


def is_secret_option(name: str) -> bool:
    """Whether a storage option called `name` may carry a credential (matched loosely on purpose)."""
    lowered = name.lower()
    return any(marker in lowered for marker in SECRET_OPTION_MARKERS)


def redact_storage_options(options: Any) -> Any:
    """`options` without the entries that may carry credentials, at any depth (e.g. inside client_kwargs).

    Dropped rather than masked: a config written without them still works where the credentials come from the
    environment or a profile, whereas a placeholder would be sent as a wrong key.
    """
    if isinstance(options, dict):
        return {
            k: redact_storage_options(v)
            for k, v in options.items()
            if not (isinstance(k, str) and is_secret_option(k))
        }
    if isinstance(options, list):
        return [redact_storage_options(v) for v in options]
    return options


def is_local_url(url: str) -> bool:
    """Whether ``url`` is a local path (plain or file://), which takes no fsspec storage options."""
    import fsspec

    return fsspec.core.split_protocol(url)[0] in (None, "file", "local")


def parse_storage_options(pairs: Sequence[str]) -> dict | None:
    """fsspec options from ``--storage-option KEY=VALUE`` pairs (None for none): endpoint_url goes into
    client_kwargs (where s3fs reads it), true/false become booleans (s3fs reads the string "false" as true), the
    rest stay text (a numeric secret too). The same reading as xrdsynth's, which this package may not import.

    Raises:
        ValueError: a pair without "=" or without a key; the message does not echo it (it may be a bare secret).
    """
    if not pairs:
        return None
    opts: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(
                f"a --storage-option ({'no KEY before =' if sep else 'no ='}) must look like KEY=VALUE (e.g. "
                "endpoint_url=http://127.0.0.1:9000)"
            )
        if key == "endpoint_url":
            opts.setdefault("client_kwargs", {})["endpoint_url"] = value
        else:
            lowered = value.strip().lower()
            opts[key] = lowered == "true" if lowered in ("true", "false") else value
    return opts


def remote_options(url: str, storage_options: dict | None) -> dict | None:
    """``storage_options`` where ``url`` is a remote fsspec URL, None for a local path: one set of options serves
    every store and bank a command reads, wherever each of them lives."""
    return None if is_local_url(url) else (storage_options or None)


# Up to the last @ of the authority (which ends at the first /, ?, # or blank): a password may hold an @ itself.
_URL_USER_INFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s\"'<>]*@")


def redact_url(url: Any) -> Any:
    """A store URL, or any text naming URLs (a message, a log line), with each URL's user name and password
    (scheme://user:password@host/...) replaced by `***`; anything but a string unchanged."""
    if not isinstance(url, str) or "@" not in url or "://" not in url:
        return url
    return _URL_USER_INFO.sub(r"\g<scheme>***@", url)


def redact_log_record(record: logging.LogRecord) -> bool:
    """A logging filter (``handler.addFilter``) that masks user:password in the URLs a log line names
    (:func:`redact_url`); it keeps every record."""
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed log call is logging's to report, not the filter's to raise
        return True
    redacted = redact_url(message)
    if redacted != message:
        record.msg, record.args = redacted, ()
    return True


def redact_train_config(fields: dict[str, Any]) -> dict[str, Any]:
    """TrainConfig fields (a dict) without credentials: secret-bearing storage_options dropped, user:password in
    store URLs masked. Applied to everything written to out_dir and to log lines (docs/security.md)."""
    out = dict(fields)
    if out.get("storage_options") is not None:
        out["storage_options"] = redact_storage_options(out["storage_options"])
    for key in ("train_store", "val_store"):
        if key in out:
            out[key] = redact_url(out[key])
    return out
