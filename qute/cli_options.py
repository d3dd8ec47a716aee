"""The command line's shared options, parameter types and progress output (qute.cli's commands use them)."""

from __future__ import annotations

import math
import sys

import click


def echo_progress(line: str) -> None:
    """The `progress` callback every command passes to the library: one line on stderr."""
    click.echo(line, err=True)


def data_dir_option(note: str = ""):
    """--data-dir, as every command that reads a dataset takes it."""
    return click.option("--data-dir", type=click.Path(file_okay=False),
                        help=f"Folder holding the datasets (else $QUTE_DATA, else ../shared/data){' ' + note if note else ''}.")


def config_option(note: str = ""):
    """--config: the qute.toml whose tables give the command's defaults."""
    return click.option("--config", "config_path", type=click.Path(dir_okay=False),
                        help=f"qute.toml project file (default: ./qute.toml when present){' ' + note if note else ''}.")


def board_option(help: str):
    """--board: a name from boards/ (qute boards lists them)."""
    return click.option("--board", metavar="BOARD", help=help)


class CommaList(click.ParamType):
    """A comma-separated list of distinct names from `choices`, in the order given."""

    name = "LIST"

    def __init__(self, choices, what: str = "name"):
        self.choices, self.what = tuple(choices), what

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        names = [s.strip() for s in value.split(",") if s.strip()]
        for name in names or [""]:
            if name not in self.choices:
                self.fail(f"unknown {self.what} {name!r}; choose from: {', '.join(self.choices)}", param, ctx)
        if len(set(names)) != len(names):
            self.fail(f"a {self.what} is given twice: {value}", param, ctx)
        return names


class IntList(click.ParamType):
    """A comma-separated list of integers (what they must be is the setting's to check)."""

    name = "N,N,..."

    def convert(self, value, param, ctx):
        if isinstance(value, (list, tuple)):
            return tuple(value)
        try:
            return tuple(int(s) for s in value.split(","))
        except ValueError:
            self.fail(f"expected comma-separated integers, got {value!r}", param, ctx)


def seconds(ctx, param, value):
    """--timeout: checked when the command line is read, not after the build it would bound."""
    if value is not None and not 0 < value < math.inf:
        raise click.BadParameter(f"must be a positive number of seconds, got {value}")
    return value


class EpochProgress:
    """Training progress on stderr: a bar on a terminal; in a log (CI, nohup, a pipe), one line
    per epoch, at most about 20 of them, so the log shows progress and the latest numbers."""

    def __init__(self, epochs: int):
        self.epochs, self.done, self.last = epochs, 0, {}
        self.tty = sys.stderr.isatty()
        self.every = max(1, -(-epochs // 20))

    def _numbers(self) -> str:
        r = self.last
        return f"loss {r['loss']:.3f}  val acc {r['val_accuracy']:.3f}" if "loss" in r and "val_accuracy" in r else ""

    def __enter__(self):
        if self.tty:
            self.bar = click.progressbar(length=self.epochs, label="epochs", show_pos=True, file=sys.stderr,
                                         item_show_func=lambda _: self._numbers() or None).__enter__()
        return self

    def __call__(self, record: dict, _model=None) -> None:
        self.last.update(record)
        self.done += 1
        if self.tty:
            self.bar.update(1)
        elif self.done % self.every == 0 or self.done == self.epochs:
            click.echo(f"epoch {self.done}/{self.epochs}  {self._numbers()}".rstrip(), err=True)

    def __exit__(self, *exc):
        if self.tty:
            self.bar.__exit__(*exc)
        return False
