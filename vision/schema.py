"""JSON-serialisable results of the vision stage: measurements and region summaries.

Every number a report quotes comes from one of these objects, stored beside the report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Measurement:
    """One quantitative measurement.

    Args:
        name: stable identifier, e.g. ``lung_volume_left_ml``, ``laa950_percent``, ``nodule``.
        value: the number (``None`` when the measurement could not be made; then ``confidence`` is ``"absent"``).
        unit: ``"mL"``, ``"%"``, ``"HU"``, ``"mm"``, ``"ratio"``, ``"score"``, ``"count"``.
        method: how it was measured, in words a radiologist can check (thresholds, structuring elements).
        region: RadGenome region key (``vision.registry.REGION_KEYS``).
        confidence: ``"high"``, ``"medium"``, ``"low"`` or ``"absent"``; approximate methods say so here and in method.
        extra: measurement-specific fields (nodules: ``diameter_mm``, ``location``, ``center_ras_mm``, ``side``,
            ``lobe``, ``volume_mm3``, ``mean_hu``; calcium: ``approximate: true``).
    """

    name: str
    value: float | None
    unit: str
    method: str
    region: str
    confidence: str = "high"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        extra = d.pop("extra")
        d.update(extra)  # flat JSON: nodule objects carry diameter_mm / location at top level
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        base = {k: d[k] for k in ("name", "value", "unit", "method", "region") if k in d}
        extra = {k: v for k, v in d.items() if k not in base and k != "confidence"}
        return cls(**base, confidence=d.get("confidence", "high"), extra=extra)
