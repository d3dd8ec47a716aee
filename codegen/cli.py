"""`qute-codegen`: compile an int8 .tflite model to C, or report what it costs."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import click

from codegen.ir import CodegenError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def cli():
    """Compile full-integer int8 .tflite models to plain C99, bit-exact with TensorFlow Lite Micro.

    \b
    Example:
      qute-codegen generate model.int8.tflite -o build/model
      qute-codegen report model.int8.tflite
    """


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", required=True, type=click.Path(file_okay=False), help="Folder to write qute_model.h/.c into.")
@click.option("--prefix", default="qute_model", show_default=True, help="Name of the generated files and C symbols.")
def generate(model, out, prefix):
    """Write PREFIX.h, PREFIX.c and report.json for MODEL.

    \b
    Example:
      qute-codegen generate runs/digits/model.int8.tflite -o build/digits
    """
    from codegen.emit import generate as gen_c
    from codegen.fold import fold
    from codegen.reader import read_file
    from codegen.report import build_report

    if not prefix.isidentifier():
        raise CodegenError(f"--prefix {prefix!r} is not a C identifier")
    graph = fold(read_file(model))
    gen = gen_c(graph, prefix)
    report = build_report(graph, Path(model).read_bytes(), gen)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / f"{prefix}.h").write_text(gen.header)
        (tmp / f"{prefix}.c").write_text(gen.source)
        (tmp / "report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
    from codegen.reader import read_file
    from codegen.report import build_report

    rep = build_report(read_file(model), Path(model).read_bytes())
    click.echo(json.dumps(rep.to_dict(), indent=2) if as_json else rep.format())


def run_cli(group: click.Group, prog: str, argv=None, user_errors: tuple = (CodegenError,)) -> int:
    """Runs a click group: a user's mistake is one line on stderr and exit status 2, never a traceback."""
    try:
        group.main(args=argv, prog_name=prog, standalone_mode=False)
    except user_errors as e:
        click.echo(f"{prog}: error: {e}", err=True)
        return 2
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.ClickException as e:  # usage errors included
        click.echo(f"{prog}: error: {e.format_message()}", err=True)
        return 2
    return 0


def main(argv=None) -> int:
    return run_cli(cli, "qute-codegen", argv)


if __name__ == "__main__":
    sys.exit(main())
