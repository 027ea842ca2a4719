"""Reading report tables (CSV or JSONL) and joining predictions with references by id."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from vision.errors import CTScribeError, InputNotFoundError, UnsupportedFormatError
from vision.registry import REGION_KEYS

ID_CANDIDATES = ("id", "AccessionNo", "VolumeName", "study_id", "volume_name")
TEXT_CANDIDATES = ("text", "report", "report_text", "Findings_EN", "findings")


class ReportTableError(CTScribeError):
    """A report table lacks the columns ctscribe needs, or its ids are not usable."""


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        raise InputNotFoundError(f"{path} does not exist: pass a CSV or JSONL file of reports.")
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix == ".gz" else path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            with path.open(newline="", encoding="utf-8-sig") as f:
                return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
        if suffix in (".jsonl", ".ndjson", ".json"):
            text = path.read_text(encoding="utf-8")
            if suffix == ".json" and text.lstrip().startswith("["):
                return list(json.loads(text))
            return [json.loads(line) for line in text.splitlines() if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as e:
        raise UnsupportedFormatError(f"{path} could not be parsed ({e}); write UTF-8 CSV or one JSON object "
                                     "per line.") from e
    raise UnsupportedFormatError(f"{path}: unknown extension {path.suffix!r}; use .csv, .tsv or .jsonl.")


def read_reports(path: str | Path, id_column: str | None = None,
                 text_column: str | None = None) -> tuple[dict[str, str], dict[str, dict[str, str]] | None]:
    """Read a report table.

    Args:
        path: CSV/TSV/JSONL with an id column and either a text column or one column per region
            (``lung``, ``trachea_and_bronchi``, ... as in :data:`vision.registry.REGION_KEYS`).
        id_column / text_column: column names when they are not one of the usual names.

    Returns:
        (id → full report text, id → {region → text} when the table has region columns, else None).
        Full text of a region table is its region texts joined in report order.
    """
    path = Path(path)
    rows = _rows(path)
    if not rows:
        raise ReportTableError(f"{path} holds no rows: it needs a header and one row per report.")
    cols = list(rows[0].keys())
    idc = id_column or next((c for c in ID_CANDIDATES if c in cols), None)
    if idc is None or idc not in cols:
        raise ReportTableError(f"{path}: no id column (looked for {id_column or ', '.join(ID_CANDIDATES)}; "
                               f"found {', '.join(cols)}). Pass --id-column NAME.")
    txc = text_column or next((c for c in TEXT_CANDIDATES if c in cols), None)
    region_cols = [r for r in REGION_KEYS if r in cols]
    if text_column and text_column not in cols:
        raise ReportTableError(f"{path}: text column {text_column!r} not found (columns: {', '.join(cols)}).")
    if txc is None and not region_cols:
        raise ReportTableError(f"{path}: no text column (looked for {', '.join(TEXT_CANDIDATES)}) and no region "
                               f"columns ({', '.join(REGION_KEYS)}). Pass --text-column NAME.")
    texts: dict[str, str] = {}
    regions: dict[str, dict[str, str]] | None = {} if region_cols else None
    for k, row in enumerate(rows):
        rid = str(row.get(idc) if row.get(idc) is not None else "").strip()
        if not rid:
            raise ReportTableError(f"{path}: row {k + 1} has an empty id; every report needs one.")
        if rid in texts:
            raise ReportTableError(f"{path}: id {rid!r} appears twice; ids must be unique.")
        if regions is not None:
            regions[rid] = {r: _s(row.get(r)) for r in region_cols}
        texts[rid] = _s(row.get(txc)) if txc else " ".join(t for t in regions[rid].values() if t)
    return texts, regions


def _s(v) -> str:
    return "" if v is None else str(v).strip()


def join_ids(preds: dict[str, str], refs: dict[str, str]) -> tuple[list[str], dict[str, list[str]]]:
    """Ids present in both tables (reference order) and the ids found in only one of them."""
    common = [i for i in refs if i in preds]
    mismatch = {"only_in_pred": [i for i in preds if i not in refs], "only_in_ref": [i for i in refs if i not in preds]}
    if not common:
        raise ReportTableError("predictions and references share no id: check --id-column and that both files "
                               f"describe the same studies (e.g. pred ids {list(preds)[:3]}, ref ids {list(refs)[:3]}).")
    return common, mismatch


def write_table(path: str | Path, rows: list[dict], columns: list[str]) -> None:
    """Write rows as CSV (UTF-8, header first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in columns})
