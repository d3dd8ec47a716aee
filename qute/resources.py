"""Where the C sources and board descriptors live, in a checkout and in an installed wheel alike."""

from importlib import resources
from pathlib import Path


def _package_dir(package: str) -> Path:
    return Path(str(resources.files(package)))


def firmware_dir() -> Path:
    return _package_dir("qute._firmware")


def boards_dir() -> Path:
    return _package_dir("qute._boards")
