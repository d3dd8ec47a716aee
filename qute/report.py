"""``qute report RUN_DIR``: one self-contained HTML page about a run and its build.

Everything is inline: CSS in a <style> element, pictures as ``data:image/png;base64`` URIs, no
script and no external reference, so the page can be mailed or archived as one file. Each part
comes from a file the other commands write; a part whose file is missing is listed in the page
with the command that would produce it:

- evaluation table: RUN_DIR/metrics.json (``qute eval``); computed with ``qute.evaluate`` when
  absent (default settings, nothing written into the run), unless ``compute=False``
- quantization stages: RUN_DIR/quantization.json (``qute quantize``): float / int8_tflm / c
- reliability diagram and confidence histograms: RUN_DIR/reliability.png, confidence_hist.png
- calibration: RUN_DIR/calibration.json (``qute calibrate``)
- early exits (runs that kept them): RUN_DIR/dynamic.json + dynamic.png (``qute eval --dynamic``)
- accuracy-drop timeline: monitor.json + monitor.png of ``qute monitor`` (RUN_DIR/monitor-*/)
- build: BUILD/build.json and memory.json (``qute build``), and latency from a saved transcript
  (``transcript.txt`` in or beside the build, which ``qute run`` and ``qute monitor`` save, or
  ``--transcript FILE``)
"""

from __future__ import annotations

import base64
import json
import math
import shutil
import tempfile
from pathlib import Path

import jinja2

from codegen import outdir
from qute import __version__
from qute.build import load_build
from qute.config import EvalConfig
from qute.dynamic import DYNAMIC_FILE, PLOT_FILE as DYNAMIC_PLOT
from qute.errors import QuteError
from qute.monitor import PLOT_FILE, TIMELINE_FILE
from qute.run import EXITS_FILE, load_run, write_atomic
from qute.tf_loader import load_tensorflow
from qute.transcript import TranscriptError, parse

REPORT_FILE = "report.html"
TEMPLATE = Path(__file__).parent / "templates" / "report.html.j2"


def _num(v, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.{digits}f}"
    if isinstance(v, list):
        return ", ".join(_num(x, digits) for x in v)
    return str(v)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise QuteError(f"{path} is damaged ({type(e).__name__}); re-create it") from None


class _Page:
    """The page's sections as plain data (title, blocks); the template turns them into HTML."""

    def __init__(self):
        self.sections: list[dict] = []
        self.missing: list[dict] = []

    def section(self, title: str) -> None:
        self.sections.append({"title": title, "blocks": []})

    def _add(self, kind: str, **fields) -> None:
        self.sections[-1]["blocks"].append({"kind": kind, **fields})

    def note(self, text: str) -> None:
        self._add("note", text=text)

    def p(self, text: str) -> None:
        self._add("p", text=text)

    def h3(self, text: str) -> None:
        self._add("h3", text=text)

    def table(self, head: list[str], rows: list[list[str]]) -> None:
        self._add("table", head=head, rows=rows)

    def img(self, path: Path, alt: str) -> None:
        self._add("img", alt=alt, data=base64.b64encode(Path(path).read_bytes()).decode("ascii"))

    def lack(self, what: str, command: str) -> None:
        self.missing.append({"what": what, "command": command})
        self._add("missing", what=what, command=command)


def find_builds(run_dir: Path) -> list[Path]:
    """Build folders (with build.json) inside RUN_DIR, one or two levels down, sorted."""
    found = {p.parent for pat in ("*/build.json", "*/*/build.json") for p in run_dir.glob(pat)}
    return sorted(found)


def find_transcript(build: Path) -> Path | None:
    for p in (build / "transcript.txt", build.parent / "transcript.txt"):
        if p.is_file():
            return p
    return None


def _evaluation(page: _Page, run, run_dir: Path, compute: bool, data_dir, progress) -> None:
    from qute.evaluate import TABLE_COLUMNS, evaluate, write_plots

    page.section("Evaluation")
    mpath = run_dir / "metrics.json"
    metrics, plots_dir = None, run_dir
    if mpath.is_file():
        metrics = _read_json(mpath)
        page.note(f"from {mpath} (qute eval)")
    elif compute:
        progress(f"{run_dir} has no metrics.json: evaluating it now (qute.evaluate, default settings)")
        load_tensorflow()
        ev = evaluate(run, EvalConfig(), data_dir=data_dir, progress=lambda s: progress("  " + s))
        metrics = ev.to_json()
        plots_dir = Path(tempfile.mkdtemp(prefix="qute-report-"))
        write_plots(ev, plots_dir)
        page.note(f"{run_dir} has no metrics.json: computed now with qute.evaluate (default settings); "
                  f"qute eval {run_dir} saves it")
    if metrics is None:
        page.lack("evaluation table (metrics.json)", f"qute eval {run_dir}")
    else:
        rows = list((metrics.get("stages") or {}).values()) or [metrics]  # one row per stage of qute eval --stages
        page.table(["method", "Acc"] + [c for _, c in TABLE_COLUMNS] + ["params"],
                   [[str(r.get("method", "?")), _num(r.get("summary", {}).get("accuracy"), 3)]
                    + [_num(r.get("summary", {}).get(k), 3) for k, _ in TABLE_COLUMNS] + [_num(r.get("params"))]
                    for r in rows])
        dev = next((r["device"] for r in rows if "device" in r), None)
        if dev:
            page.note(f"device row: {dev.get('board')} firmware on QEMU {dev.get('qemu_machine')}, "
                      f"{_num(dev.get('inputs'))} inputs over the UART; {_num(dev.get('output_bytes_differing_from_tflm'))} of "
                      f"{_num(dev.get('output_bytes_compared'))} output bytes differ from TFLite Micro, "
                      f"{_num(dev.get('scores_differing_from_host'))} of {_num(dev.get('scores_compared'))} uncertainty "
                      f"scores from the host")
        else:
            page.lack("the int8 and device rows of the evaluation table", f"qute eval {run_dir} --stages float,int8,device")
        ood = metrics.get("ood") or {}
        if ood:
            page.p(f"OOD set: {ood.get('name')} ({_num(ood.get('samples'))} images); ECE with "
                   f"{_num(metrics.get('ece_bins'))} bins")
        corr = metrics.get("corruptions") or {}
        if corr:
            page.h3("Corruptions")
            page.table(["corruption", "accuracy", "accuracy by severity 1..5", "mean confidence", "AUPRC drop",
                        "positive windows"],
                       [[k, _num(v.get("accuracy"), 3), _num(v.get("accuracy_by_severity"), 3),
                         _num(v.get("mean_confidence"), 3), _num(v.get("auprc_drop"), 3),
                         f"{_num(v.get('positive_windows'))} / {_num(v.get('windows'))}"] for k, v in corr.items()])
    page.h3("Reliability and confidence")
    for name, what in (("reliability.png", "reliability diagram"), ("confidence_hist.png", "confidence histograms (ID / corrupted / OOD)")):
        p = plots_dir / name
        if p.is_file():
            page.img(p, what)
        else:
            page.lack(f"{what} ({name})", f"qute eval {run_dir}")
    if plots_dir != run_dir:
        shutil.rmtree(plots_dir, ignore_errors=True)


def _quantization(page: _Page, run_dir: Path) -> None:
    page.section("Quantization stages")
    qpath = run_dir / "quantization.json"
    if not qpath.is_file():
        page.lack("quantization stages (quantization.json)", f"qute quantize {run_dir}")
        return
    q = _read_json(qpath)
    stages = q.get("stages") or {}
    keys = [("accuracy", "accuracy"), ("nll", "NLL"), ("ece", "ECE"), ("mean_confidence", "mean confidence"),
            ("mean_mutual_information", "mean MI"), ("head_accuracy", "head accuracy"), ("agreement", "agreement with float"),
            ("flips", "flips"), ("bytes_differing_from_int8_tflm", "bytes differing from int8_tflm")]
    rows = []
    for name in ("float", "int8_tflm", "c"):
        st = stages.get(name)
        if st is None:
            rows.append([name] + ["n/a"] * len(keys))
            continue
        rows.append([name] + [_num(len(st[k])) if k == "flips" and isinstance(st.get(k), list) else _num(st.get(k))
                              for k, _ in keys])
    page.table(["stage"] + [c for _, c in keys], rows)
    page.note(f"{_num(q.get('test_samples'))} test images; int8 model {_num(q.get('tflite_bytes'))} bytes "
              f"({q.get('model_file')}); ops {', '.join(f'{k} x{v}' for k, v in (q.get('ops') or {}).items())}")


def _calibration(page: _Page, run_dir: Path) -> None:
    page.section("Calibration (abstain threshold, accuracy-drop monitor)")
    cpath = run_dir / "calibration.json"
    if not cpath.is_file():
        page.lack("calibration (calibration.json)", f"qute calibrate {run_dir}")
        return
    c = _read_json(cpath)
    a, m, v = c.get("abstain", {}), c.get("monitor", {}), c.get("validation", {})
    rows = [
        ["scores from", str(c.get("scores_from"))],
        ["validation images", _num(v.get("images"))],
        ["validation accuracy", _num(v.get("accuracy"))],
        ["abstain", (f"accept when {a.get('score')} {a.get('accept_when')} {_num(a.get('threshold'), 6)} "
                     f"(float32 {a.get('threshold_f32')})")],
        ["abstain TPR on validation", f"{_num(a.get('validation_tpr'))} (target {_num(a.get('target_tpr'))})"],
        ["monitor", (f"alarm when the mean of the last {_num(m.get('window'))} confidences < rho = {_num(m.get('rho'), 6)} "
                     f"(float32 {m.get('rho_f32')})")],
        ["validation alarms", (f"{_num(m.get('validation_alarms'))} of {_num(m.get('validation_windows'))} windows "
                               f"(false-alarm rate {_num(m.get('false_alarm'))})")],
    ]
    if a.get("threshold_int") is not None:
        rows.append(["integer-only boards (no FPU)", (
            f"accept when {a.get('score')} ({a.get('threshold_int_format')}) {a.get('accept_when')} "
            f"{_num(a.get('threshold_int'))} (TPR {_num(a.get('validation_tpr_int'))}); alarm when the sum of the last "
            f"{_num(m.get('window'))} Q16 confidences < {_num(m.get('rho_sum'))} "
            f"({_num(m.get('validation_alarms_int'))} validation alarms)")])
    page.table(["what", "value"], rows)


def _early_exits(page: _Page, run_dir: Path) -> None:
    """Runs that kept their early exits: the policy of the last qute eval --dynamic against
    running to the end, its threshold sweep and the accuracy-vs-instructions curve."""
    if not (run_dir / EXITS_FILE).is_file():
        return
    page.section("Early exits: accuracy against instructions (device)")
    path = run_dir / DYNAMIC_FILE
    if not path.is_file():
        page.lack("early-exit inference against instructions (dynamic.json)",
                  f"qute quantize {run_dir} --exits && qute eval {run_dir} --dynamic budget:0.8 --board nucleo-f746")
        return
    d = _read_json(path)
    names = [f"exit_{k}" for k in range(len(d.get("costs", [])) - 1)] + ["end"]
    page.p(f"{d.get('board')}: {d.get('how')}. Instructions per inference when a run stops at "
           + ", ".join(f"{n} {_num(c)}" for n, c in zip(names, d.get("costs", []))) + " (measured under QEMU).")
    rows = []
    for label, r in (("policy", d.get("chosen", {})), ("run to the end", d.get("full", {}))):
        rows.append([label, _num(r.get("accuracy")), _num(r.get("nll")), _num(r.get("ece")), _num(r.get("ood_auroc")),
                     _num(r.get("mean_cost")), _num(r.get("cost_fraction"))])
    page.table(["", "accuracy", "NLL", "ECE", f"OOD AUROC ({d.get('ood')})", "mean instructions", "of the end"], rows)
    page.table([f"{d.get('sweep_score')} threshold", "accuracy", "NLL", "ECE", "mean instructions", "of the end"],
               [["never" if r.get("threshold") is None else _num(r.get("threshold")), _num(r.get("accuracy")),
                 _num(r.get("nll")), _num(r.get("ece")), _num(r.get("mean_cost")), _num(r.get("cost_fraction"))]
                for r in d.get("sweep", [])])
    if (run_dir / DYNAMIC_PLOT).is_file():
        page.img(run_dir / DYNAMIC_PLOT, "accuracy against mean instructions per inference")


def _monitor(page: _Page, run_dir: Path) -> None:
    page.section("Accuracy-drop timeline (device)")
    found = sorted(p.parent for p in run_dir.glob(f"*/{TIMELINE_FILE}"))
    if not found:
        page.lack("accuracy-drop timeline (qute monitor)",
                  f"qute monitor {run_dir} --board mps2-an500 --stream id,corrupt:contrast:5")
        return
    for folder in found:
        tl = _read_json(folder / TIMELINE_FILE)
        page.h3(f"{folder.name}: {tl.get('inputs_from')}")
        page.table(["board", "window", "rho", "ID part ends", "alarms in ID part", "first alarm device",
                    "first alarm host", "match"],
                   [[str(tl.get("board")), _num(tl.get("window")), _num(tl.get("rho"), 6), _num(tl.get("id_end")),
                     _num(tl.get("alarms_in_id_part")), _num(tl.get("first_alarm_device")),
                     _num(tl.get("first_alarm_host")), _num(tl.get("match"))]])
        if (folder / PLOT_FILE).is_file():
            page.img(folder / PLOT_FILE, "accuracy-drop timeline")


def _build(page: _Page, run_dir: Path, build: Path | None, transcript: Path | None) -> None:
    page.section("Build: memory and latency")
    if build is None:
        builds = find_builds(run_dir)
        if not builds:
            page.lack("memory report (no build found under the run)",
                      f"qute build --board nucleo-f746 {run_dir} -o {run_dir / 'build-nucleo-f746'}")
            page.lack("latency (instructions per inference)",
                      f"qute monitor {run_dir} --board mps2-an500 --stream id,corrupt:contrast:5")
            return
        build = builds[0]
        if len(builds) > 1:
            page.note(f"builds found: {', '.join(str(b) for b in builds)}; shown: {build} (choose with --build)")
    b = load_build(build)
    m = b.manifest
    page.p(f"{build}: board {m.board}; model {m.model.origin}; "
           f"{_num(m.inputs.samples)} inputs ({m.inputs.source})")
    mem_path = build / "memory.json"
    if not mem_path.is_file():
        page.lack("memory report (memory.json)", f"qute build --board {m.board} {run_dir} -o {build}")
    else:
        mem = _read_json(mem_path)
        page.h3(f"Memory on {mem.get('board')} ({mem.get('elf')}, linked for {mem.get('linked_for')})")
        rows = [[s["name"], f"0x{s['address']:x}", _num(s["size"]), _num(s["flash"]) if s["flash"] else "",
                 _num(s["ram"]) if s["ram"] else ""] for s in mem.get("sections", [])]
        f, r = mem.get("flash", {}), mem.get("ram", {})
        rows.append(["total", "", "", _num(f.get("used")), _num(r.get("used"))])
        rows.append(["capacity", "", "", _num(f.get("capacity")), _num(r.get("capacity"))])
        rows.append(["used", "", "", f"{_num(f.get('percent'), 1)}%", f"{_num(r.get('percent'), 1)}%"])
        page.table(["section", "address", "size", "flash", "RAM"], rows)
        page.note(f"model arena {_num(m.model.arena_bytes)} B (inputs and outputs included), weights "
                  f"{_num(m.model.weights_bytes)} B, per-op parameters {_num(m.model.parameter_bytes)} B "
                  f"(build.json)")
    page.h3("Latency")
    transcript = transcript or find_transcript(build)
    if transcript is None:
        page.lack("latency: no saved firmware transcript (transcript.txt) for this build", f"qute run {build}")
        return
    try:
        t = parse(Path(transcript).read_text())
    except (OSError, UnicodeDecodeError, TranscriptError) as e:
        raise QuteError(f"{transcript}: not a qute firmware transcript ({e})") from None
    cyc = [s.cycles for s in t.samples]
    if not cyc:
        page.lack(f"latency: {transcript} has no sample lines", f"qute monitor {build}")
        return
    counter = (t.start or {}).get("counter", "?")
    what = ("instructions per inference (QEMU -icount shift=0, not cycles)" if counter == "instructions"
            else f"{counter} per inference")
    page.table(["counter", "samples", "mean", "min", "max"],
               [[what, _num(len(cyc)), _num(round(sum(cyc) / len(cyc))), _num(min(cyc)), _num(max(cyc))]])
    page.note(f"from {transcript}")


def write_report(run_dir, out=None, build=None, transcript=None, compute: bool = True, data_dir=None,
                 progress=lambda s: None) -> tuple[Path, list[tuple[str, str]]]:
    """Writes the page; returns its path and the missing parts (what, command)."""
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    build = Path(build) if build is not None else None
    if build is not None and not build.is_dir():
        raise QuteError(f"--build {build} {outdir.missing(build)}"
                        + ("" if build.exists() else f"; make one with: qute build --board BOARD {run_dir} -o {build}"))
    if transcript is not None and not Path(transcript).is_file():
        raise QuteError(f"--transcript {transcript} {outdir.missing(transcript, 'file')}")
    out = Path(out) if out is not None else run_dir / REPORT_FILE
    if out.is_dir():
        raise QuteError(f"{out} is a folder, not a file; give -o a file name such as report.html")
    outdir.writable(out)  # before the evaluation it may run
    page = _Page()
    arch = f"{run.spec.arch} {','.join(map(str, run.spec.filters))}"
    title = f"qute report: {run_dir.name} ({run.spec.method}, {arch}, K={run.spec.num_heads}, {run.train.dataset})"
    _evaluation(page, run, run_dir, compute, data_dir, progress)
    _quantization(page, run_dir)
    _calibration(page, run_dir)
    _early_exits(page, run_dir)
    _monitor(page, run_dir)
    _build(page, run_dir, build, Path(transcript) if transcript else None)
    env = jinja2.Environment(autoescape=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    doc = env.from_string(TEMPLATE.read_text()).render(
        title=title, run_path=run_dir.resolve(), version=__version__, missing=page.missing, sections=page.sections)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic({out: doc.encode()})
    except OSError as e:
        raise QuteError(f"cannot write {out} ({e.strerror})") from None
    return out, [(m["what"], m["command"]) for m in page.missing]
