"""The files a training run writes besides checkpoints: ``metrics.csv`` and ``summary.json``, read back safely."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from ..core.errors import RunFileError
from ..core.files import atomic_write_text

__all__ = ["METRIC_COLUMNS", "metrics_row", "read_metrics", "write_metrics", "read_summary", "write_summary"]

METRIC_COLUMNS = ["step", "loss", "grad_norm", "lr", "images_per_s", "elapsed_s"]


def metrics_row(**values: float) -> dict[str, float]:
    """One row, its numbers rounded as the CSV stores them (6 significant digits).

    A run keeps its rows in memory exactly as a resumed run reads them back from
    disk, so everything computed from them (the summary's final loss) is the same
    whether or not the run was interrupted.
    """
    return {k: (int(values[k]) if k == "step" else float(f"{values[k]:.6g}")) for k in METRIC_COLUMNS}


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """Rows of a metrics CSV as dicts of floats (``step`` as int); one clear error naming a damaged file."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not set(METRIC_COLUMNS) <= set(reader.fieldnames):
                raise ValueError(f"its header is {reader.fieldnames}, expected {METRIC_COLUMNS}")
            return [{k: (int(row[k]) if k == "step" else float(row[k])) for k in METRIC_COLUMNS} for row in reader]
    except FileNotFoundError:
        raise RunFileError(f"{path} does not exist") from None
    except (ValueError, TypeError, csv.Error, UnicodeDecodeError) as exc:
        raise RunFileError(f"{path} is damaged ({exc}); move it aside to continue without its rows, "
                           "or start over with --fresh") from exc


def write_metrics(path: Path, rows: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (r[k] if k == "step" else f"{r[k]:.6g}") for k in METRIC_COLUMNS})  # as metrics_row rounds
    atomic_write_text(path, buf.getvalue())


def read_summary(path: str | Path) -> dict[str, Any]:
    """A run's ``summary.json`` as a dict; one clear error naming a damaged file."""
    path = Path(path)
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RunFileError(f"{path} does not exist") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunFileError(f"{path} is damaged ({exc}); delete it and resume to write it again") from exc
    if not isinstance(data, dict):
        raise RunFileError(f"{path} is damaged (it holds a {type(data).__name__}, not a mapping); "
                           "delete it and resume to write it again")
    return data


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(summary, indent=2) + "\n")
