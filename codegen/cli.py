"""`qute-codegen`: compile an int8 .tflite model to C, or report what it costs."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import click

from codegen import outdir
from codegen.emit import generate as gen_c
from codegen.fold import fold
from codegen.ir import CodegenError
from codegen.outdir import Kind, OutputError
from codegen.reader import read_file
from codegen.report import build_report


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def cli():
    """Compile full-integer int8 .tflite models to plain C99, bit-exact with TensorFlow Lite Micro.

    \b
    Example:
      qute-codegen generate model.int8.tflite -o build/model
      qute-codegen report model.int8.tflite
    """


def _older_generate(folder: Path) -> bool:
    """A folder of a qute-codegen from before markers: exactly report.json and one PREFIX.h/.c pair."""
    names = sorted(p.name for p in folder.iterdir())
    return (len(names) == 3 and "report.json" in names and all((folder / n).is_file() for n in names)
            and {Path(n).suffix for n in names} == {".c", ".h", ".json"} and len({Path(n).stem for n in names}) == 2)


GENERATED = Kind("qute-codegen generate", ".qute-codegen", _older_generate)


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", required=True, type=click.Path(), help="Folder to write qute_model.h/.c into.")
@click.option("--prefix", default="qute_model", show_default=True, help="Name of the generated files and C symbols.")
@click.option("--force", is_flag=True, help="Replace an existing output folder (only one qute-codegen generate made).")
def generate(model, out, prefix, force):
    """Write PREFIX.h, PREFIX.c and report.json for MODEL.

    \b
    Example:
      qute-codegen generate runs/digits/model.int8.tflite -o build/digits
    """
    if not prefix.isidentifier():
        raise CodegenError(f"--prefix {prefix!r} is not a C identifier")
    outdir.check(out, GENERATED, force)
    graph = fold(read_file(model))
    gen = gen_c(graph, prefix)
    report = build_report(graph, Path(model).read_bytes(), gen)
    with outdir.staging(out, GENERATED, force) as tmp:
        (tmp / f"{prefix}.h").write_text(gen.header)
        (tmp / f"{prefix}.c").write_text(gen.source)
        (tmp / "report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    out = Path(out)
    click.echo(report.format())
    click.echo(f"wrote {out / (prefix + '.h')}, {out / (prefix + '.c')}, {out / 'report.json'}")


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def report(model, as_json):
    """Per-op MACs and weights, flash and RAM totals, and TFLite Micro's arena for MODEL.

    \b
    Example:
      qute-codegen report ../shared/models/kws_dscnn_int8.tflite
    """
    rep = build_report(read_file(model), Path(model).read_bytes())
    click.echo(json.dumps(rep.to_dict(), indent=2) if as_json else rep.format())


class Terminated(BaseException):
    """SIGTERM, raised where the process is, so staging folders are cleaned up as on Ctrl-C."""


def _terminate(signum, frame):
    raise Terminated()


def run_cli(group: click.Group, prog: str, argv=None, user_errors: tuple = (CodegenError,), failures: tuple = ()) -> int:
    """Runs a click group: a user's mistake is one line on stderr and exit status 2, never a traceback;
    a run that went wrong (one of `failures`: a mismatch, a crash, a time-out) its message and 1.

    Ctrl-C exits 130 and SIGTERM 143 (128 + the signal, as a shell reports a process the signal
    killed), each with one line, after the cleanup of whatever was being written.
    """
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread: signals stay the caller's business
        previous = _terminate
    try:
        group.main(args=argv, prog_name=prog, standalone_mode=False)
    except (OutputError, *user_errors) as e:
        click.echo(f"{prog}: error: {e}", err=True)
        return 2
    except failures as e:
        click.echo(f"{prog}: {e}", err=True)
        return 1
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort as e:  # click turns Ctrl-C (and end of input) into Abort
        if isinstance(e.__context__, KeyboardInterrupt):
            click.echo(f"{prog}: interrupted", err=True)
            return 130
        click.echo("aborted", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo(f"{prog}: interrupted", err=True)
        return 130
    except Terminated:
        click.echo(f"{prog}: terminated", err=True)
        return 143
    except click.ClickException as e:  # usage errors included
        click.echo(f"{prog}: error: {e.format_message()}", err=True)
        return 2
    finally:
        if previous is not _terminate:
            signal.signal(signal.SIGTERM, previous)
    return 0


def main(argv=None) -> int:
    return run_cli(cli, "qute-codegen", argv)


if __name__ == "__main__":
    sys.exit(main())
