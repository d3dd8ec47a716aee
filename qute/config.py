"""Settings of a run: defaults, a `qute.toml` project file, and command-line flags on top.

A project file holds one table per command::

    [train]
    dataset = "mnist"
    arch = "mnist-cnn-mp"
    method = "qute"
    k = 3
    epochs = 20

    [eval]
    ood = "fashion_mnist"
    corruptions = "all"
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from qute.errors import QuteError

ARCHS = ("mnist-cnn", "mnist-cnn-mp", "ds-cnn", "resnet8")
# Each backbone's channels, one count per stage (the stages early exits attach to): what
# `filters` replaces to make a backbone wider or narrower.
# mnist-cnn-mp's 6,12,24 measured best for QUTE within 5K parameters (README, "Ablation"): a
# narrow first stage pays for a wider final map, the output blocks' input.
FILTERS = {
    "mnist-cnn": (8, 16, 16),
    "mnist-cnn-mp": (6, 12, 24),
    "ds-cnn": (64, 64, 64, 64, 64),  # the stem, then the four depthwise-separable blocks
    "resnet8": (16, 16, 32, 64),  # the stem, then the three residual stacks
}
# Runs record their channels only since mnist-cnn-mp's default became 6,12,24; a run that records
# none was trained with these, the defaults before it.
UNRECORDED_FILTERS = {**FILTERS, "mnist-cnn-mp": (8, 16, 16)}
MAX_FILTERS = 4096
# How the classifiers pool their feature map before the dense layer (Keras applications' `pooling`):
# the tiny MNIST CNNs learn much faster and better with max pooling (digits: 0.97 against 0.88
# validation accuracy after 40 epochs); the MLPerf Tiny models keep their reference's average.
POOLING = {"mnist-cnn": "max", "mnist-cnn-mp": "max", "ds-cnn": "avg", "resnet8": "avg"}
POOLINGS = ("avg", "max")
# How qute's early exits' loss weights move over training (qute.models.loss_weights).
EXIT_SCHEDULES = ("sdn", "constant")
METHODS = ("qute", "base", "ee-ensemble", "deep-ensemble", "mc-dropout")
MAX_K = 16
STAGES = ("float", "int8", "device")  # what qute eval evaluates: Keras, int8 on TFLite Micro, firmware


@dataclass
class TrainConfig:
    dataset: str = "digits"
    # The best-measured QUTE on MNIST (README "Backbone and tie ablation"): the pooled backbone and
    # output blocks with depthwise kernels of their own. The paper's QUTE ties each block's kernel
    # to its exit's: untied = false (--tied).
    arch: str = "mnist-cnn-mp"
    method: str = "qute"
    k: int = 3
    # None: the paper's MNIST settings (20 epochs, batch 256) for datasets of 10,000 training
    # samples or more; 40 epochs of batch 32 below that, where batches of 256 give too few steps.
    epochs: int | None = None
    batch_size: int | None = None
    lr: float = 1e-3
    lr_decay: float = 0.99
    freeze_fraction: float = 0.1
    untied: bool = True
    dropout: float = 0.1
    # Channels of each backbone stage (None: the architecture's own, FILTERS).
    filters: tuple[int, ...] | None = None
    # Pooling before every classifier's dense layer, avg or max (None: the architecture's, POOLING).
    pooling: str | None = None
    # qute: the backbone stage (1-based) each early exit hangs on (None: spread evenly over the
    # stages before the last, qute.models.exit_positions).
    exit_stages: tuple[int, ...] | None = None
    seed: int = 0
    val_fraction: float = 0.1
    limit: int | None = None
    data_dir: str | None = None
    # Fit one temperature on the validation split after training and fold it into the heads
    # (qute.temperature): the averaged heads are under-confident otherwise.
    temperature: bool = True
    # qute: each output block trains on its own bootstrap resample of the training set (per-sample
    # Poisson(1) weights, fixed per block for the whole run), for heads that disagree more.
    bootstrap: bool = False
    # Label smoothing of every output's cross-entropy: (1 - e) CE + e x the mean over classes of -log p.
    # 0.1 improves F1, NLL, ECE and OOD AUROC of QUTE, base and the deep ensemble on MNIST over
    # three seeds, but squeezes the confidences the accuracy-drop monitor averages: `make demo`
    # trained with it raised 7 false alarms on its ID stream (none without). Off until the
    # monitor's calibration is measured with it (README "The QUTE paper's MNIST table").
    label_smoothing: float = 0.0
    # qute: the early exits' loss weights ramp from 0.01 to their relative depth over training, as
    # in SDN and the paper ("sdn"), or weigh their depth from the first epoch ("constant").
    exit_schedule: str = "sdn"

    def __post_init__(self):
        # Everything a run's settings can get wrong is caught here, before any data is loaded or
        # any epoch trained. The chained comparisons are False for NaN, so they reject it too.
        check_choice("arch", self.arch, ARCHS)
        check_choice("method", self.method, METHODS)
        check_k(self.method, self.k)
        for name in ("epochs", "batch_size", "limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise QuteError(f"{name} must be positive, got {value}")
        if not 0 < self.lr <= 1:
            raise QuteError(f"lr must be in (0, 1], got {self.lr}")
        if not 0 < self.lr_decay <= 1:
            raise QuteError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if not 0 <= self.freeze_fraction < 1:
            raise QuteError(f"freeze_fraction must be in [0, 1), got {self.freeze_fraction}")
        if not 0 < self.val_fraction < 1:
            raise QuteError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0 <= self.dropout < 1:
            raise QuteError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.label_smoothing < 1:
            raise QuteError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        self.filters = check_filters(self.arch, self.filters)
        if self.pooling is not None:
            check_choice("pooling", self.pooling, POOLINGS)
        check_choice("exit_schedule", self.exit_schedule, EXIT_SCHEDULES)
        self.exit_stages = check_exit_stages(self.arch, self.method, self.k, self.exit_stages)

    def to_dict(self) -> dict:
        return asdict(self)

    def for_dataset(self, train_samples: int) -> "TrainConfig":
        """These settings with the size-dependent defaults filled in."""
        small = train_samples < 10_000
        return replace(
            self,
            epochs=self.epochs or (40 if small else 20),
            batch_size=self.batch_size or (32 if small else 256),
        )


@dataclass
class EvalConfig:
    ood: str | None = None
    corruptions: str = "all"
    window: int = 100
    seed: int = 0

    def __post_init__(self):
        if self.window < 2:
            raise QuteError(f"window must be at least 2, got {self.window}")


@dataclass
class BuildConfig:
    """[build] of qute.toml: what `qute build` and `qute run` use when not given on the command line."""

    model: str | None = None
    board: str | None = None
    samples: int = 50

    def __post_init__(self):
        if self.samples < 1:
            raise QuteError(f"samples must be positive, got {self.samples}")


@dataclass(frozen=True)
class NetSpec:
    """Everything needed to rebuild a network; stored with every run."""

    arch: str
    method: str
    input_shape: tuple[int, int, int]
    num_classes: int
    k: int = 3
    untied: bool = True  # qute: output blocks with depthwise kernels of their own (False: the paper's tie)
    dropout: float = 0.1
    filters: tuple[int, ...] | None = None  # channels per backbone stage; None: FILTERS[arch] (kept resolved)
    pooling: str | None = None  # before each classifier's dense layer; None: POOLING[arch]
    exit_stages: tuple[int, ...] | None = None  # qute: the stage (1-based) of each exit; None: spread

    def __post_init__(self):
        check_choice("arch", self.arch, ARCHS)
        check_choice("method", self.method, METHODS)
        check_k(self.method, self.k)
        # resolved, so a saved run says what it was built with whatever the defaults become
        object.__setattr__(self, "filters", built_filters(self.arch, self.filters))
        if self.pooling is not None:
            check_choice("pooling", self.pooling, POOLINGS)
        object.__setattr__(self, "exit_stages", check_exit_stages(self.arch, self.method, self.k, self.exit_stages))
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise QuteError(f"input shape must be (height, width, channels), got {self.input_shape}")
        if self.num_classes < 2:
            raise QuteError(f"a classifier needs at least 2 classes, got {self.num_classes}")
        if not 0.0 <= self.dropout < 1.0:
            raise QuteError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def num_heads(self) -> int:
        """Heads of the exported model (mc-dropout ships one head and samples it K times)."""
        return 1 if self.method in ("base", "mc-dropout") else self.k

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "NetSpec":
        d = dict(d)
        d["input_shape"] = tuple(d["input_shape"])
        if d.get("filters") is None and d.get("arch") in UNRECORDED_FILTERS:
            d["filters"] = UNRECORDED_FILTERS[d["arch"]]
        return cls(**d)


def check_k(method: str, k: int) -> None:
    """The ensemble sizes every method allows (heads, exits, members or dropout samples)."""
    if not 1 <= k <= MAX_K:
        raise QuteError(f"-K must be between 1 and {MAX_K} for method {method}, got {k}")


def _ints(value, length: int, lo: int, hi: int) -> bool:
    """True when `value` is a list or tuple of `length` integers (not bools) in [lo, hi]."""
    return (isinstance(value, (list, tuple)) and len(value) == length
            and all(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi for v in value))


def check_filters(arch: str, filters) -> tuple[int, ...] | None:
    """`filters` as a tuple, checked against the architecture's stage count; None stays None."""
    if filters is None:
        return None
    want = len(FILTERS[arch])
    example = ",".join(map(str, FILTERS[arch]))
    if not _ints(filters, want, 1, MAX_FILTERS):
        raise QuteError(f"filters must be {want} channel counts from 1 to {MAX_FILTERS} for arch {arch}, one per "
                        f"stage (its own: {example}), got {filters!r}")
    return tuple(filters)


def built_filters(arch: str, filters) -> tuple[int, ...]:
    """The channels a network of `arch` is built with: `filters` checked, or the architecture's own."""
    return check_filters(arch, filters) or FILTERS[arch]


def check_exit_stages(arch: str, method: str, k: int, stages) -> tuple[int, ...] | None:
    """qute's exit_stages as a tuple: K stage numbers from 1 to the last stage but one, never
    decreasing (an exit runs no earlier than the one before it); None stays None."""
    if stages is None:
        return None
    if method != "qute":
        raise QuteError(f"exit_stages places qute's early exits; method {method} has none to place")
    last = len(FILTERS[arch]) - 1
    if not _ints(stages, k, 1, last) or list(stages) != sorted(stages):
        raise QuteError(f"exit_stages must be K = {k} stage numbers from 1 to {last} for arch {arch}, in "
                        f"non-decreasing order (e.g. {','.join(['1'] * (k - 1) + [str(last)])}), got {stages!r}")
    return tuple(stages)


def check_choice(what: str, value, allowed) -> None:
    if value not in allowed:
        raise QuteError(f"unknown {what} {value!r}; choose one of: {', '.join(allowed)}")


_SECTIONS = {"train": TrainConfig, "eval": EvalConfig, "build": BuildConfig}
_KINDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}


def _typed(cls, section: str, values: dict, source: str):
    known = {f.name: f for f in fields(cls)}
    for key, value in values.items():
        if key not in known:
            raise QuteError(f"{source}: unknown key {key!r} in [{section}]; allowed: {', '.join(known)}")
        want = known[key].type
        ok = {
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, (int, float)) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "str": isinstance(value, str),
        }
        base = want.split(" ")[0]
        if value is not None and base in ok and not ok[base]:
            raise QuteError(f"{source}: [{section}] {key} must be {_KINDS[base]}, got {value!r}")
    return cls(**values)


def read_project(path: str | Path | None) -> dict:
    """Tables of a qute.toml: the given file, else ./qute.toml when present, else nothing."""
    if path is None:
        path = Path("qute.toml")
        if not path.exists():
            return {}
    path = Path(path)
    return {"path": str(path), **read_tables(path, tuple(_SECTIONS))}


def read_tables(path: Path, allowed: tuple[str, ...], what: str = "config file") -> dict:
    """A TOML file whose top level is only the `allowed` tables."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise QuteError(f"{what} {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise QuteError(f"{path} is not valid TOML: {e}") from None
    for section, value in data.items():
        if section not in allowed:
            raise QuteError(f"{path}: unknown table [{section}]; allowed: {', '.join('[' + s + ']' for s in allowed)}")
        if not isinstance(value, dict):
            raise QuteError(f"{path}: {section} must be a table ([{section}])")
    return data


def build_target(project: dict, board: str | None, model: str | None, samples: int | None) -> BuildConfig:
    """What `qute build` and `qute run` (without BUILD_DIR) build: the flags, then the project's
    [build] table (its model relative to the qute.toml), else the embedded default model.

    A qute.toml in use that names no model is a mistake, not a reason to build the default.
    """
    cfg = make_config("build", project, {"model": None if model is None else str(model), "board": board,
                                         "samples": samples})
    if model is None and cfg.model is None and project:
        raise QuteError(f"{project['path']} names no model: give RUN_DIR or MODEL.tflite, "
                        f"or add model = \"runs/...\" under [build]")
    if model is None and cfg.model is not None and not Path(cfg.model).is_absolute():
        cfg.model = str(Path(project["path"]).parent / cfg.model)
    return cfg


def make_config(section: str, project: dict, overrides: dict):
    """The section's settings: defaults, then the project file, then flags that were given."""
    values = dict(project.get(section, {}))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return _typed(_SECTIONS[section], section, values, project.get("path", "command line"))
