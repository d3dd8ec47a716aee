"""The finished trials of `qute sweep` folders, labelled by method, for the benchmark tables."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from qute.config import FILTERS, TrainConfig
from qute.errors import QuteError
from qute.run import load_run


@dataclass(frozen=True)
class Trial:
    label: str  # method_label
    seed: int
    run_dir: Path
    record: dict  # trial.json: settings, summary, params, and int8 when the sweep asked for it


def method_label(train: dict, filters: tuple[int, ...]) -> str:
    """The method, "-tied" for the paper's QUTE, then what differs from today's defaults (backbone,
    its `filters` as built, the heads' pooling, K, where the exits hang, their loss schedule, the
    frozen-backbone phase, bootstrapped output blocks, label smoothing)."""
    label = train["method"] + ("-tied" if train["method"] == "qute" and not train["untied"] else "")
    differ = [train["arch"]] if train["arch"] != TrainConfig.arch else []
    differ += [f"filters {','.join(map(str, filters))}"] if tuple(filters) != FILTERS[train["arch"]] else []
    differ += [f"{train['pooling']} pooling"] if train.get("pooling") else []
    differ += [f"K={train['k']}"] if train["k"] != TrainConfig.k and train["method"] != "base" else []
    frozen = train.get("freeze_fraction", TrainConfig.freeze_fraction)
    differ += [f"frozen {frozen:.0%}"] if frozen != TrainConfig.freeze_fraction and train["method"] == "qute" else []
    differ += ["bootstrap heads"] if train.get("bootstrap") and train["method"] == "qute" else []
    differ += [f"exits after stages {','.join(map(str, train['exit_stages']))}"] if train.get("exit_stages") else []
    schedule = train.get("exit_schedule", TrainConfig.exit_schedule)
    differ += [f"{schedule} exit weights"] if schedule != TrainConfig.exit_schedule and train["method"] == "qute" else []
    smoothing = train.get("label_smoothing", 0.0)  # trials from before label smoothing had none
    differ += [f"label smoothing {smoothing:g}"] if smoothing != TrainConfig.label_smoothing else []
    return f"{label} ({', '.join(differ)})" if differ else label


def _built_filters(run_dir: Path) -> tuple[int, ...]:
    """The channels a trial's network was built with (runs saved before they recorded them read as
    what they were built with: qute.config.UNRECORDED_FILTERS)."""
    try:
        return load_run(run_dir).spec.filters
    except QuteError as e:
        raise ValueError(f"a finished trial's run: {e}") from None


def finished_trials(folders: list[Path]) -> list[Trial]:
    """Every finished trial of the sweeps, in their files' order; ValueError when a folder holds
    no results.json or two sweeps hold the same method and seed."""
    trials, seen = [], {}
    for folder in folders:
        path = folder / "results.json"
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: not a finished sweep's results ({e}); run qute sweep first") from None
        for t in saved["trials"]:
            if t["record"] is None:
                continue
            run_dir = folder / "runs" / t["name"]
            trial = Trial(method_label(t["train"], _built_filters(run_dir)), t["train"]["seed"], run_dir, t["record"])
            if (trial.label, trial.seed) in seen:
                raise ValueError(f"{trial.label} seed {trial.seed} is in two sweeps ({seen[trial.label, trial.seed]} "
                                 f"and {trial.run_dir}): pass one of them")
            seen[trial.label, trial.seed] = trial.run_dir
            trials.append(trial)
    return trials
