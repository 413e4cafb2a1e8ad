"""The real-data benchmark's scorer (benchmarks/real_transfer.py): perfect for the reference, zero for nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import real_transfer  # noqa: E402

PIXEL_A = 0.134


def synthetic_reference() -> dict:
    """A 12x12-cell MoS2 lattice on a 160² image: Mo, S sites with a few S1, SSe and an empty site."""
    a_px = 3.16 / PIXEL_A
    a1, a2 = np.array([0.0, a_px]), np.array([a_px * np.sqrt(3) / 2, a_px / 2])
    mo = np.array([5 + i * a1 + j * a2 for i in range(-6, 12) for j in range(12)])
    mo = mo[(mo > 2).all(1) & (mo < 158).all(1)]
    s = mo + (a1 + a2) / 3
    s = s[(s > 2).all(1) & (s < 158).all(1)]
    cls = np.array(["S2"] * len(s), dtype="<U3")
    cls[::9], cls[4::11], cls[7] = "S1", "SSe", "vac"
    valid = np.zeros((160, 160), bool)
    valid[8:-8, 8:-8] = True
    return {
        "position_px": np.concatenate([mo, s + 0.2]).astype(np.float32),
        "position_centroid_px": np.concatenate([mo, s]).astype(np.float32),
        "sublattice": np.array(["Mo"] * len(mo) + ["S"] * len(s)),
        "s_class": np.concatenate([np.array(["Mo"] * len(mo)), cls]),
        "valid_mask": valid,
    }


def reference_as_found(ref: dict) -> tuple[np.ndarray, list[str]]:
    sub, cls = ref["sublattice"].astype(str), ref["s_class"].astype(str)
    pos = np.where((sub == "Mo")[:, None], ref["position_px"], ref["position_centroid_px"])
    keep = cls != "vac"
    return pos[keep], [f"L1:{c}" for c in cls[keep]]


def check_perfect(score: dict) -> None:
    for part in ("Mo", "S"):
        assert score[part]["f1"] == 1.0 and score[part]["fp"] == 0
    assert score["SSe"]["recall"] == 1.0 and score["SSe"]["precision"] == 1.0
    assert score["S1"]["recall"] == 1.0 and score["duplicates"] == 0
    assert score["position_error_pm"]["all"] == pytest.approx(0.0, abs=1e-6)


def check_empty(score: dict) -> None:
    for part in ("Mo", "S"):
        assert score[part]["f1"] == 0.0 and score[part]["recall"] == 0.0
    assert score["SSe"]["recall"] == 0.0 and score["S1"]["recall"] == 0.0


def test_reference_scores_one_and_nothing_scores_zero():
    ref = synthetic_reference()
    check_perfect(real_transfer.score(*reference_as_found(ref), ref, PIXEL_A))
    check_empty(real_transfer.score(np.zeros((0, 2)), [], ref, PIXEL_A))


def test_mistakes_are_counted_where_they_belong():
    ref = synthetic_reference()
    rc, names = reference_as_found(ref)
    names = list(names)
    sse = [k for k, n in enumerate(names) if n.endswith("SSe")]
    names[sse[0]] = "L1:Mo"  # a dopant read as a metal: a metal false positive and a missed S site
    names[sse[1]] = "L1:S2"  # a dopant read as S2: S site found, dopant missed
    extra = rc[:1] + [0.0, 0.5 * 3.16 / PIXEL_A]  # a column between sites
    twin = rc[5:6] + 0.3  # the same column reported twice
    score = real_transfer.score(np.concatenate([rc, extra, twin]), names + ["L1:S2", names[5]], ref, PIXEL_A)
    assert score["Mo"]["fp"] >= 1 and score["S"]["fn"] == 1
    assert score["SSe"]["recall"] == pytest.approx(1 - 2 / int((ref["s_class"] == "SSe").sum()))
    assert score["duplicates"] == 1


@pytest.mark.skipif(not real_transfer.REFERENCE.is_dir(), reason="../shared reference tables not present")
@pytest.mark.parametrize("crop", ["a", "b"])
def test_shared_reference_scores_itself_perfectly(crop):
    ref = real_transfer.load_reference(crop)
    check_perfect(real_transfer.score(*reference_as_found(ref), ref, PIXEL_A))
    check_empty(real_transfer.score(np.zeros((0, 2)), [], ref, PIXEL_A))


def test_best_row_needs_the_most_seeds_and_weighs_every_firm_score():
    def result(mo: float, s: float, sse_r: float, sse_p: float) -> dict:
        return {"b": {"Mo": {"f1": mo}, "S": {"f1": s}, "SSe": {"recall": sse_r, "precision": sse_p}}}

    results = {
        "steady": [result(0.99, 0.98, 0.8, 0.8)] * 3,
        "lucky": [result(1.0, 1.0, 1.0, 1.0)],  # one seed: cannot show its worst case
        "no_se": [result(1.0, 1.0, 0.0, 0.0), result(1.0, 1.0, 0.9, 0.9), result(1.0, 1.0, 0.9, 0.9)],
    }
    summaries = {name: {"S F1": (np.mean([r["b"]["S"]["f1"] for r in rs]),)} for name, rs in results.items()}
    assert real_transfer.firm_score(results["steady"]) == pytest.approx((0.99 + 0.98 + 0.8) / 3)
    assert real_transfer.firm_score(results["no_se"]) == pytest.approx(2 / 3)
    assert real_transfer.best_row(results, summaries) == "steady"
