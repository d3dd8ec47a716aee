"""A tiny QUTE model on digits, saved as a run: the shared starting point of the pipeline tests."""

from pathlib import Path


def tiny_qute_run(parent: Path, k: int):
    """Trains qute (K heads) on 1,280 digits for 3 epochs (~15 s) and saves it as parent/digits.

    lr 1e-2 so that 3 short epochs give a model that has learned something (val accuracy ~0.8):
    float-vs-int8 agreement of a near-chance model says little. 1,280 training images are 20
    full batches, so the training step is traced for one batch shape only.
    Returns (run directory, dataset, inference model).
    """
    from qute.config import TrainConfig
    from qute.data import load_dataset
    from qute.run import save_run
    from qute.train import train

    cfg = TrainConfig(method="qute", k=k, epochs=3, batch_size=64, lr=1e-2, limit=1280)
    data = load_dataset(cfg.dataset, seed=cfg.seed, val_fraction=cfg.val_fraction, limit=cfg.limit)
    result = train(cfg, data)
    path = Path(parent) / "digits"
    path.mkdir()
    save_run(path, result.config, result.spec, data, result.model, result.history, result.temperature,
             result.exits_model)
    return path, data, result.model


def tiny_calibrated_run(parent: Path, k: int, window: int):
    """tiny_qute_run, quantized, then `qute calibrate --window WINDOW` (confidence, TPR 0.95) as a user runs it.

    Returns (run directory, dataset, what qute calibrate printed).
    """
    from cliutil import qute

    from qute.quantize import quantize_run, write_result
    from qute.run import load_run

    run_dir, data, model = tiny_qute_run(parent, k)
    write_result(run_dir, quantize_run(load_run(run_dir), model=model, dataset=data))
    p = qute("calibrate", run_dir, "--window", window, "--score", "confidence", "--target-tpr", "0.95")
    assert p.returncode == 0, p.stderr + p.stdout
    return run_dir, data, p.stdout
