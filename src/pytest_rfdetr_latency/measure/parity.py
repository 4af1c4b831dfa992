"""Output parity: does a backend compute what FP32 PyTorch computes, on the same seeded input and weights?

A backend that got fast by getting wrong must fail whatever its speed. Comparing outputs element by element is
wrong for DETR-style models, though: the decoder's queries come from a top-k over encoder proposals, and a
half-precision backend may pick the same objects in another order. So detections are compared as sets: the best
``TOP`` detections of the reference, each matched to the candidate's detection (among its best ``2 * TOP``) with the
highest box IoU, the same class preferred among equal boxes. Reported: the share of reference detections found again
(IoU >= 0.5), the share of those whose class agrees, the mean IoU of the matches, the largest score difference
between matched detections of the same class, and for segmentation and keypoint models the mask IoU and the keypoint
distance of the matches. Pure numpy; no torch here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TOP = 50

# Per precision: (least share of reference detections found again, least mean IoU of matches, largest score
# difference, least mean mask IoU). FP32 backends differ only in summation order; TF32 and half precision round
# matmul inputs.
# With seeded random weights every score sits near every other (0.04-0.12 for RFDETRMedium), so which detections make
# a top-50 reshuffles under any rounding. Measured on the H200 (docs/h200-matrix.md), the three default models found
# again 82-100 % (TF32), 84-100 % (FP16), 72-94 % (bf16), with score errors up to 0.021 and mask IoU down to 0.91
# (FP16) and 0.68 (bf16); the limits leave a margin below that. Broken outputs find almost nothing again; a trained
# checkpoint's confident detections sit far from these limits. Classes of matched detections agreed in 96-100 %
# (TF32, FP16) and 89-97 % (bf16); keypoints moved by at most 6e-4 of the image (bf16).
Limits = tuple[float, float, float, float, float, float]
# found_share_min, mean_iou_min, max_score_error_max, mask_iou_min, class_agreement_min, keypoint_error_max
LIMITS: dict[str, Limits] = {
    "fp32": (0.98, 0.98, 2e-3, 0.95, 0.98, 1e-3),
    "tf32": (0.50, 0.95, 3e-2, 0.80, 0.90, 5e-3),
    "fp16": (0.40, 0.90, 5e-2, 0.80, 0.85, 5e-3),
    "bf16": (0.35, 0.85, 8e-2, 0.55, 0.75, 1e-2),
}


@dataclass(frozen=True)
class Parity:
    precision: str
    metrics: dict[str, float]
    limits: dict[str, float]
    failures: tuple[str, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "passed": self.passed,
            "metrics": {k: round(v, 6) for k, v in self.metrics.items()},
            "limits": self.limits,
            "failures": list(self.failures),
        }


def top_scores(logits: Any, k: int) -> tuple[Any, Any]:
    """rfdetr's post-processing ranking: a sigmoid per class, then the ``k`` best (query × class) pairs. Returns
    their flat indices (query * classes + class) and scores, best first. Runs on the timed e2e path of ONNX Runtime
    cases: a partition, then a sort of the ``k`` only."""
    import numpy as np

    flat = (1.0 / (1.0 + np.exp(-np.asarray(logits)))).ravel()
    k = min(k, flat.size)
    top = np.argpartition(-flat, k - 1)[:k]
    top = top[np.argsort(-flat[top], kind="stable")]
    return top, flat[top]


def _detections(outputs: Mapping[str, Any], top: int = TOP, image: int = 0) -> tuple[Any, Any, Any, Any]:
    """Top detections of one image: query index, class, score, normalized xyxy box."""
    import numpy as np

    logits = np.asarray(outputs["logits"][image], dtype=np.float64)[:, :-1]
    best, scores = top_scores(logits, top)
    query, cls = np.divmod(best, logits.shape[1])
    cx, cy, w, h = np.asarray(outputs["boxes"][image], dtype=np.float64)[query].T
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return query, cls, scores, boxes


def _iou(a: Any, b: Any) -> Any:
    """IoU of every box in ``a`` against every box in ``b`` (xyxy)."""
    import numpy as np

    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def compare(reference: Mapping[str, Any], candidate: Mapping[str, Any], precision: str) -> Parity:
    """Compare ``candidate``'s raw outputs with FP32 PyTorch's ``reference`` (names: boxes, logits, masks,
    keypoints; arrays with the batch first)."""
    import numpy as np

    limits = LIMITS.get(precision, LIMITS["fp16"])
    metrics: dict[str, float] = {}
    failures: list[str] = []
    for name, array in candidate.items():
        values = np.asarray(array)
        if values.size and not np.all(np.isfinite(values)):
            failures.append(f"output {name!r} holds NaN or inf")
    if failures:
        return Parity(precision, metrics, _named(limits), tuple(failures))

    rq, rc, rs, rb = _detections(reference)
    # A reference detection may rank a little lower in the candidate: look for it among twice as many.
    cq, cc, cs, cb = _detections(candidate, 2 * TOP)
    iou = _iou(rb, cb)
    # One query yields a detection per class, all with the same box: among equal boxes, prefer the same class.
    best = (iou + 0.05 * (rc[:, None] == cc[None, :])).argmax(axis=1)
    best_iou = iou[np.arange(len(rq)), best]
    found = best_iou >= 0.5
    agree = found & (rc == cc[best])
    metrics["found_share"] = float(found.mean()) if len(found) else 1.0
    metrics["class_agreement"] = float(agree.sum() / max(found.sum(), 1))
    metrics["mean_iou"] = float(best_iou[found].mean()) if found.any() else 0.0
    errors = np.abs(rs[agree] - cs[best[agree]])
    metrics["max_score_error"] = float(errors.max()) if agree.any() else 1.0
    metrics["mean_score_error"] = float(errors.mean()) if agree.any() else 1.0

    if "masks" in reference and "masks" in candidate and found.any():
        ref_masks = np.asarray(reference["masks"][0])[rq[found]] > 0
        cand_masks = np.asarray(candidate["masks"][0])[cq[best[found]]] > 0
        inter = np.logical_and(ref_masks, cand_masks).sum(axis=(1, 2))
        union = np.logical_or(ref_masks, cand_masks).sum(axis=(1, 2))
        metrics["mask_iou"] = float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0)))
    if "keypoints" in reference and "keypoints" in candidate and found.any():
        ref_points = np.asarray(reference["keypoints"][0], dtype=np.float64)[rq[found]][..., :2]
        cand_points = np.asarray(candidate["keypoints"][0], dtype=np.float64)[cq[best[found]]][..., :2]
        metrics["keypoint_error"] = float(np.abs(ref_points - cand_points).mean())

    failures += _beyond(metrics, limits, precision, len(rq))
    return Parity(precision, metrics, _named(limits), tuple(failures))


def _beyond(metrics: Mapping[str, float], limits: Limits, precision: str, top: int) -> list[str]:
    """Each way the metrics fall outside ``precision``'s limits, in words (``top``: the reference's detections)."""
    failures: list[str] = []
    least_found, least_iou, most_score, least_mask, least_agreement, most_keypoint = limits
    if metrics["found_share"] < least_found:
        failures.append(f"only {metrics['found_share']:.0%} of the FP32 reference's top {top} detections were "
                        f"found again (at least {least_found:.0%} expected for {precision})")
    if metrics["mean_iou"] < least_iou:
        failures.append(f"matched boxes overlap the reference's by a mean IoU of {metrics['mean_iou']:.3f} "
                        f"(at least {least_iou} expected for {precision})")
    if metrics["max_score_error"] > most_score:
        failures.append(f"matched scores differ by up to {metrics['max_score_error']:.3g} "
                        f"(at most {most_score:g} expected for {precision})")
    if metrics.get("mask_iou", 1.0) < least_mask:
        failures.append(f"matched masks overlap the reference's by a mean IoU of {metrics['mask_iou']:.3f} "
                        f"(at least {least_mask} expected for {precision})")
    if metrics["class_agreement"] < least_agreement:
        failures.append(f"only {metrics['class_agreement']:.0%} of the matched detections have the reference's "
                        f"class (at least {least_agreement:.0%} expected for {precision})")
    if metrics.get("keypoint_error", 0.0) > most_keypoint:
        failures.append(f"matched keypoints moved by {metrics['keypoint_error']:.3g} of the image on average (at "
                        f"most {most_keypoint:g} expected for {precision})")
    return failures


def _named(limits: Limits) -> dict[str, float]:
    names = ("found_share_min", "mean_iou_min", "max_score_error_max", "mask_iou_min", "class_agreement_min",
             "keypoint_error_max")
    return dict(zip(names, limits))
