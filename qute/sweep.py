"""Grids of runs (methods x seeds x settings) as Ray tasks: `qute sweep SWEEP.toml`.

A sweep file has the tables of a qute.toml, where any value of [train] or [eval] may be a list: the
grid is every combination of the lists. [sweep] says where the runs and results go:

    [sweep]
    out = "sweeps/mnist"           # runs/<trial>/ (ordinary run directories), results.md, results.json
    [train]
    dataset = "mnist"
    method = ["base", "qute"]
    seed = [0, 1, 2]
    epochs = 20
    [eval]
    ood = "fashion_mnist"

`int8 = true` in [sweep] also quantizes every trial (`qute quantize`) and evaluates the int8 model on
TFLite Micro (`qute eval --stages int8`); the table then shows what int8 changes (NLL, ECE, OOD
AUROC). A finished trial without its int8 results gets only those.

Each trial trains (`qute train`'s run directory, metrics.json as `qute eval` writes it), on a local
Ray started for the sweep (bounded to the machine's cores) or on an existing cluster (`--address`;
its workers need qute installed and `out` and the data on a shared file system). A trial that
raises is retried once, then reported as failed (in the table and the exit status), never dropped.
A trial whose run directory already holds its results for the same settings and backbone (its
channels as built) is not run again.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np

from codegen import outdir
from qute.config import EvalConfig, TrainConfig, built_filters, make_config, read_tables
from qute.data import data_dirs, load_dataset
from qute.errors import QuteError
from qute.run import RUN, load_run, save_run, write_json

TRIAL_FILE = "trial.json"  # in each trial's run directory: its settings and results, once finished
RESULTS_MD, RESULTS_JSON = "results.md", "results.json"
TABLES = ("sweep", "train", "eval")


@dataclass(frozen=True)
class Trial:
    name: str  # the folder under out/runs: the grid's varying settings
    train: TrainConfig
    eval: EvalConfig

    def settings(self) -> dict:
        return {"train": asdict(self.train), "eval": asdict(self.eval)}


@dataclass
class Sweep:
    path: Path
    out: Path
    trials: list[Trial]
    varying: list[str]  # "train.method", "train.seed", ... in the file's order
    int8: bool = False

    @property
    def runs(self) -> Path:
        return self.out / "runs"


@dataclass
class SweepResult:
    records: dict[str, dict] = field(default_factory=dict)  # trial name -> trial.json contents
    failed: dict[str, str] = field(default_factory=dict)  # trial name -> what went wrong (one line)
    skipped: list[str] = field(default_factory=list)  # finished before this sweep started


def _value(value) -> str:
    if isinstance(value, list):  # a list setting such as filters: 6-12-24
        return "-".join(map(_value, value))
    return "default" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _name_part(key: str, value) -> str:
    """One varying setting in a trial's folder name."""
    return f"{key.split('.', 1)[1]}-{_value(value)}".replace("/", "_").replace(":", "_").replace(" ", "_")


_LIST_SETTINGS = {"train": {f.name for f in fields(TrainConfig) if str(f.type).startswith("tuple")}}


def load_sweep(path: str | Path) -> Sweep:
    """The sweep file's grid, every trial's settings checked (as `qute train` and `qute eval` would)
    before anything runs."""
    path = Path(path)
    data = read_tables(path, TABLES, "sweep file")
    sweep = data.get("sweep", {})
    if set(sweep) - {"out", "int8"} or not isinstance(sweep.get("out"), str) or not sweep["out"]:
        raise QuteError(f"{path}: [sweep] takes out = \"FOLDER\" (where the runs and results go) and "
                        "optionally int8 = true")
    if not isinstance(sweep.get("int8", False), bool):
        raise QuteError(f"{path}: [sweep] int8 must be true or false, got {sweep['int8']!r}")
    out = Path(sweep["out"])
    if not out.is_absolute():
        out = path.parent / out
    out = out.resolve()  # Ray's workers do not share the driver's current directory
    axes = []  # (table.key, values)
    for table in ("train", "eval"):
        for key, value in data.get(table, {}).items():
            # a setting that is itself a list (filters) sweeps only over a list of lists
            one = not isinstance(value, list) or (key in _LIST_SETTINGS.get(table, ()) and
                                                 not any(isinstance(v, list) for v in value))
            values = [value] if one else value
            if not values:
                raise QuteError(f"{path}: [{table}] {key} is an empty list")
            if len(set(map(json.dumps, values))) != len(values):
                raise QuteError(f"{path}: [{table}] {key} lists a value twice: {value}")
            axes.append((f"{table}.{key}", values))
    varying = [k for k, v in axes if len(v) > 1]
    trials = []
    for combo in itertools.product(*(v for _, v in axes)):
        chosen = dict(zip((k for k, _ in axes), combo))
        tables = {t: {k.split(".", 1)[1]: v for k, v in chosen.items() if k.startswith(t + ".")} for t in ("train", "eval")}
        train = make_config("train", {"path": str(path), "train": tables["train"]}, {})
        if train.data_dir is not None and not Path(train.data_dir).is_absolute():
            train = TrainConfig(**{**asdict(train), "data_dir": str((path.parent / train.data_dir).resolve())})
        # an eval seed not given follows the trial's training seed
        ev = make_config("eval", {"path": str(path), "eval": {"seed": train.seed, **tables["eval"]}}, {})
        name = "_".join(_name_part(k, chosen[k]) for k in varying) or "trial"
        trials.append(Trial(name, train, ev))
    names = [t.name for t in trials]
    if len(set(names)) != len(names):  # values that differ only in characters a folder name cannot keep
        clash = next(n for n in names if names.count(n) > 1)
        raise QuteError(f"{path}: two trials would share the folder runs/{clash}; make the listed values differ "
                        "in more than '/', ':' and spaces")
    return Sweep(path, out, trials, varying, sweep.get("int8", False))


def check_data(sweep: Sweep, progress: Callable[[str], None] = lambda s: None) -> None:
    """Every dataset the trials use loads here, before any trial is sent out."""
    for dataset, data_dir in sorted({(t.train.dataset, t.train.data_dir) for t in sweep.trials}, key=str):
        progress(f"checking dataset {dataset}")
        load_dataset(dataset, data_dir, limit=1)


def _defaults(cls) -> dict:
    return json.loads(json.dumps({f.name: f.default for f in fields(cls)}))


def finished(trial: Trial, runs: Path) -> dict | None:
    """The trial's record when its run directory holds results for exactly these settings and the
    network they build now: the backbone's channels are compared as built (config.json), since
    `filters` left to the default means whatever the default was when the run was trained."""
    try:
        record = json.loads((runs / trial.name / TRIAL_FILE).read_text())
        built = load_run(runs / trial.name).spec.filters
    except (OSError, ValueError, QuteError):
        return None
    want = json.loads(json.dumps(trial.settings()))
    saved = record.get("settings")
    if not isinstance(saved, dict) or not all(isinstance(saved.get(k), dict) for k in ("train", "eval")):
        return None
    # a setting the record lacks did not exist when the trial ran: it ran as that setting's default
    saved = {name: {**_defaults(cls), **saved[name]} for name, cls in (("train", TrainConfig), ("eval", EvalConfig))}
    saved["train"]["filters"] = want["train"]["filters"]
    return record if saved == want and built == built_filters(trial.train.arch, trial.train.filters) else None


def run_trial(trial: Trial, runs: Path, int8: bool = False) -> dict:
    """Trains and evaluates one trial into runs/<name> (a staging folder until it is complete):
    the run directory `qute train` writes, metrics.json as `qute eval` writes it, and trial.json;
    with `int8`, also the quantized model and its evaluation on TFLite Micro."""
    from qute.evaluate import evaluate
    from qute.train import train

    cfg = trial.train
    data = load_dataset(cfg.dataset, cfg.data_dir, seed=cfg.seed, val_fraction=cfg.val_fraction, limit=cfg.limit)
    cfg = cfg.for_dataset(len(data.x_train))
    target = runs / trial.name
    record = finished(trial, runs)
    if record is not None:  # trained and evaluated before; only the int8 results are missing
        record["int8"] = _int8_summary(load_run(target), trial, data)
        write_json(target / TRIAL_FILE, record)
        return record
    with outdir.staging(target, RUN, force=True) as folder:
        result = train(cfg, data)
        save_run(folder, cfg, result.spec, data, result.model, result.history, result.temperature, result.exits_model)
        run = load_run(folder)
        ev = evaluate(run, trial.eval, data_dir=cfg.data_dir, model=result.model, dataset=data)
        write_json(folder / "metrics.json", ev.to_json())
        record = {"name": trial.name, "settings": trial.settings(), "summary": ev.summary, "params": ev.params,
                  "temperature": result.temperature}
        if int8:
            record["int8"] = _int8_summary(run, trial, data, result.model)
        write_json(folder / TRIAL_FILE, record)
    return record


def _int8_summary(run, trial: Trial, data, model=None) -> dict:
    """`qute quantize RUN` then the int8 stage of `qute eval` on the test and OOD sets: the int8
    model's metrics but the accuracy-drop AUPRC (TFLite Micro's interpreter is slow; the
    corrupted streams would be most of a trial's time)."""
    from qute.evaluate import evaluate
    from qute.quantize import quantize_run, write_result

    write_result(run.path, quantize_run(run, model=model, dataset=data))
    ev = evaluate(run, replace(trial.eval, corruptions=""), data_dir=trial.train.data_dir, model=model, dataset=data,
                  stage="int8")
    return {k: v for k, v in ev.summary.items() if k != "auprc_drop"}


def run_sweep(sweep: Sweep, address: str | None = None, cpus: int | None = None,
              progress: Callable[[str], None] = lambda s: None) -> SweepResult:
    """Runs every unfinished trial as a Ray task (one CPU each, TensorFlow held to one thread per
    CPU), retrying a failed one once; gathers the records of all of them."""
    try:
        import ray
    except ImportError:
        raise QuteError("qute sweep needs Ray: pip install 'ray>=2.40' (make setup installs it)") from None
    result = SweepResult()
    todo = []
    for t in sweep.trials:
        record = finished(t, sweep.runs)
        if record is not None and (not sweep.int8 or "int8" in record):
            result.records[t.name] = record
            result.skipped.append(t.name)
        else:
            todo.append(t)
    if result.skipped:
        progress(f"{len(result.skipped)} of {len(sweep.trials)} trials already finished: kept")
    if not todo:
        return result
    sweep.runs.mkdir(parents=True, exist_ok=True)
    env = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
           "OMP_NUM_THREADS": "1"}
    # the data folders the driver sees, for trials without a data_dir of their own
    if dirs := data_dirs(None):
        env["QUTE_DATA"] = os.pathsep.join(str(d.resolve()) for d in dirs)
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR, "runtime_env": {"env_vars": env}}
    if address is None:
        ray.init(num_cpus=cpus or os.cpu_count() or 1, include_dashboard=False, **quiet)
    else:
        ray.init(address=address, **quiet)
    try:
        task = ray.remote(num_cpus=1, max_retries=1, retry_exceptions=True)(run_trial)
        pending = {task.remote(t, sweep.runs, sweep.int8): t for t in todo}
        progress(f"{len(todo)} trial(s) sent to Ray ({int(ray.cluster_resources().get('CPU', 0))} CPUs)")
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            t = pending.pop(done[0])
            try:
                result.records[t.name] = ray.get(done[0])
                s = result.records[t.name]["summary"]
                progress(f"{t.name}: F1 {s['f1']:.4f} NLL {s['nll']:.4f} ECE {s['ece']:.4f} "
                         f"OOD {s['auroc_ood']:.3f} ({len(result.records)}/{len(sweep.trials)})")
            except Exception as e:  # the trial's own error, after its retry
                cause = getattr(e, "cause", None) or e
                result.failed[t.name] = f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}"
                progress(f"{t.name}: FAILED twice: {result.failed[t.name]}")
    finally:
        ray.shutdown()
    return result


def summary_rows(sweep: Sweep, result: SweepResult) -> list[dict]:
    """One row per setting but the seed: mean and standard deviation over its finished trials."""
    from qute.evaluate import TABLE_COLUMNS

    group_keys = [k for k in sweep.varying if k != "train.seed"]
    groups: dict[str, list[Trial]] = {}
    for t in sweep.trials:
        label = ", ".join(f"{k.split('.', 1)[1]}={_value(_setting(t, k))}" for k in group_keys) or "all trials"
        groups.setdefault(label, []).append(t)
    rows = []
    for label, trials in groups.items():
        recs = [result.records[t.name] for t in trials if t.name in result.records]
        row = {"setting": label, "trials": len(trials), "finished": len(recs),
               "failed": [t.name for t in trials if t.name in result.failed],
               "params": recs[0]["params"] if recs else None}
        for key, _ in (("accuracy", "Acc"), *TABLE_COLUMNS):
            row[key] = _mean_std([r["summary"].get(key, np.nan) for r in recs])
        if sweep.int8:
            for key, _ in INT8_COLUMNS:
                metric = key.removeprefix("int8_")
                row[key] = _mean_std([r["int8"][metric] - r["summary"][metric] for r in recs if "int8" in r])
        rows.append(row)
    return rows


# what int8 on TFLite Micro changes, trial by trial (int8 minus float)
INT8_COLUMNS = (("int8_nll", "int8 ΔNLL"), ("int8_ece", "int8 ΔECE"), ("int8_auroc_ood", "int8 ΔOOD"))


def _mean_std(values) -> tuple[float, float] | None:
    v = np.array(values, float)
    v = v[np.isfinite(v)]
    return (float(v.mean()), float(v.std())) if len(v) else None


def _setting(t: Trial, key: str):
    table, name = key.split(".", 1)
    return getattr(t.train if table == "train" else t.eval, name)


def render(sweep: Sweep, result: SweepResult) -> str:
    from qute.evaluate import TABLE_COLUMNS

    cols = (("accuracy", "Acc"), *TABLE_COLUMNS, *(INT8_COLUMNS if sweep.int8 else ()))
    seeds = sorted({t.train.seed for t in sweep.trials})
    fixed = [f"{k.split('.', 1)[1]} {_value(_setting(sweep.trials[0], k))}" for k in
             (f"train.{n}" for n in ("dataset", "arch", "k", "epochs", "batch_size")) if k not in sweep.varying]
    lines = [f"`qute sweep {sweep.path.name}`: {len(sweep.trials)} trials, seeds {','.join(map(str, seeds))} "
             f"(mean ± std over seeds); {'; '.join(fixed)}.", "",
             "| setting | " + " | ".join(c for _, c in cols) + " | params | trials |",
             "|---|" + "---:|" * (len(cols) + 2)]
    for r in summary_rows(sweep, result):
        cells = [f"{r[k][0]:{'+' if k.startswith('int8_') else ''}.3f} ± {r[k][1]:.3f}" if r[k] else "n/a" for k, _ in cols]
        failed = f", {len(r['failed'])} failed" if r["failed"] else ""
        params = f"{r['params']:,}" if r["params"] is not None else ""
        lines.append(f"| {r['setting']} | " + " | ".join(cells) + f" | {params} | {r['finished']} of {r['trials']}{failed} |")
    if result.failed:
        lines += ["", "Failed trials (each tried twice):"] + [f"- {n}: {why}" for n, why in sorted(result.failed.items())]
    return "\n".join(lines) + "\n"


def write_results(sweep: Sweep, result: SweepResult) -> tuple[Path, Path]:
    sweep.out.mkdir(parents=True, exist_ok=True)
    md, js = sweep.out / RESULTS_MD, sweep.out / RESULTS_JSON
    md.write_text(render(sweep, result))
    js.write_text(json.dumps({"sweep": str(sweep.path), "varying": sweep.varying,
                              "rows": summary_rows(sweep, result),
                              "trials": [{"name": t.name, **t.settings(), "record": result.records.get(t.name),
                                          "failed": result.failed.get(t.name)} for t in sweep.trials]},
                             indent=2) + "\n")
    return md, js
