"""Regression targets for stacking: slip and twist, with no seam and no false distinction.

Two facts of the physics shape the representation.

**Periodicity.** A slip ``(Da, Db)`` is a fraction of the cell vectors ``a1, a2``: ``D`` and
``D + n`` (``n`` integer) are the same stacking. A twist ``θ`` of a monolayer with an
``N``-fold axis is periodic in ``360°/N`` (120° for MX2, 60° for graphene). Regressing the
raw number puts a seam at the period's edge: a label of 0.99 against a prediction of 0.01
would cost 0.98 instead of 0.02. Every periodic coordinate ``f`` (in periods) is therefore
encoded as the point ``(cos 2πf, sin 2πf)`` on the unit circle; two values ``δ`` apart (on
the circle) are ``2 sin(πδ)`` apart in the code, whatever side of the seam they lie on. The
decoder is ``atan2``.

**Layer order.** A projection cannot tell which layer is on top. Swapping the layers of a
bilayer slipped by ``D`` gives the layers ``(L + D, L)``, which is the bilayer slipped by
``−D`` moved by ``D``: the same image up to a translation, which a window cannot see. In
the simulator, after the best shift, the images of ``D`` and ``−D`` correlate with r = 0.987,
against 0.993 for ``D`` and ``D`` + 0.03 cell and 0.95 for ``D`` + 0.1 cell (thermal
displacements and vacancies are drawn anew in each). Likewise ``θ`` and ``−θ`` differ by a
rotation of the whole picture, which the twist datasets draw at random. For a trilayer ``(D1, D2)`` the reversal
gives ``(−D2, −D1)``. So each label has an orbit of equivalent values, and the loss and the
errors take the nearest member: ``loss = min over g of ℓ(prediction, code(g·label))``.
The network may answer any member; :meth:`Target.canonical` folds answers into one
fundamental domain for display. (The lattice's point group is not in the orbit: the slip
datasets keep the in-plane rotation within a few degrees, so a 120° turn of the stack is a
visibly different image.)

``ℓ`` is ``λ_MSE·MSE + λ_L1·L1`` over the code, with the reference work's 1 and 0.5.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch

TARGETS = ("slip", "slip2", "twist")


def circle_code(periods: torch.Tensor) -> torch.Tensor:
    """(..., k) values in periods → (..., 2k) interleaved (cos 2πf, sin 2πf)."""
    angle = 2 * math.pi * periods
    return torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1).flatten(-2)


def circle_decode(code: np.ndarray) -> np.ndarray:
    """(..., 2k) codes → (..., k) values in periods, in [0, 1)."""
    code = np.asarray(code, dtype=np.float64)
    c, s = code[..., 0::2], code[..., 1::2]
    return np.mod(np.arctan2(s, c) / (2 * math.pi), 1.0)


def rotational_order(positions_A: np.ndarray, species: np.ndarray, basis_A: np.ndarray, tolerance_A: float = 0.05) -> int:
    """Largest N in (6, 4, 3, 2) such that a rotation by 360°/N about some axis maps the projected
    crystal onto itself (species kept), else 1.

    ``positions_A`` (S, 2) are projected site positions in one cell, ``species`` (S,) a hashable
    label per projected site (for example the sorted column content), ``basis_A`` the cell
    vectors as columns. A rotation R is a symmetry when some translation t sends every site
    ``R·p + t`` onto a site of the same species, modulo the lattice.
    """
    positions_A = np.asarray(positions_A, float)
    inverse = np.linalg.inv(basis_A)
    frac = np.mod(positions_A @ inverse.T, 1.0)

    def on_lattice(points_frac: np.ndarray, kind) -> bool:
        for p, s in zip(points_frac, kind):
            d = frac[species == s] - p
            d -= np.round(d)
            if not np.any(np.linalg.norm(d @ basis_A.T, axis=1) < tolerance_A):
                return False
        return True

    for order in (6, 4, 3, 2):
        a = 2 * math.pi / order
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        turned = positions_A @ rot.T
        first = turned[0]
        for j in np.flatnonzero(species == species[0]):  # t sends site 0 onto some site of its species
            shift = positions_A[j] - first
            if on_lattice(np.mod((turned + shift) @ inverse.T, 1.0), species):
                return order
    return 1


@dataclass(frozen=True)
class Target:
    """What a regression model predicts and how it is scored.

    Attributes
    ----------
    kind : "slip", "slip2" or "twist"
    n_interfaces : int
        Interfaces regressed (1 for "slip" and "twist", 2 for "slip2").
    period_deg : float
        Period of the twist (360/N for an N-fold monolayer); unused for slips.
    basis_A : (2, 2) list
        Cell vectors a1, a2 as columns, Å: turns slip fractions into Å for ΔD.
    """

    kind: str
    n_interfaces: int
    period_deg: float = 120.0
    basis_A: tuple = ((1.0, 0.0), (0.0, 1.0))

    @property
    def n_values(self) -> int:
        """Label values per sample: 2 per slip interface, 1 per twist."""
        return 2 * self.n_interfaces if self.kind != "twist" else self.n_interfaces

    @property
    def n_outputs(self) -> int:
        """Network outputs: a (cos, sin) pair per label value."""
        return 2 * self.n_values

    @property
    def value_names(self) -> list[str]:
        if self.kind == "twist":
            return ["twist_deg"] if self.n_interfaces == 1 else [f"twist{k + 1}_deg" for k in range(self.n_interfaces)]
        if self.n_interfaces == 1:
            return ["Da", "Db"]
        return [f"D{k + 1}{axis}" for k in range(self.n_interfaces) for axis in "ab"]

    @property
    def units(self) -> str:
        return "deg" if self.kind == "twist" else "cell fraction"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "n_interfaces": self.n_interfaces, "period_deg": self.period_deg, "basis_A": [list(r) for r in self.basis_A]}

    @classmethod
    def from_dict(cls, d: dict) -> "Target":
        return cls(d["kind"], int(d["n_interfaces"]), float(d["period_deg"]), tuple(tuple(float(v) for v in r) for r in d["basis_A"]))

    # ------------------------------------------------------------------ labels

    def periods(self, labels: torch.Tensor) -> torch.Tensor:
        """Dataset labels → (B, n_values) values in periods. ``labels`` is ``slip_frac``
        (B, L−1, 2) for slips and ``twist_deg`` (B, L−1) for twists."""
        labels = labels.float()
        if self.kind == "twist":
            return labels[:, : self.n_interfaces] / self.period_deg
        return labels[:, : self.n_interfaces].reshape(len(labels), -1)

    def orbit(self, periods: torch.Tensor) -> list[torch.Tensor]:
        """Every label equivalent to ``periods`` (B, n_values) under layer reversal."""
        if self.kind == "twist":
            return [periods, -periods] if self.n_interfaces == 1 else [periods, -periods.flip(-1)]
        per = periods.reshape(len(periods), self.n_interfaces, 2)
        return [periods, (-per.flip(1)).reshape(len(periods), -1)]

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor, mse_weight: float = 1.0, l1_weight: float = 0.5) -> torch.Tensor:
        """Mean over the batch of ``min over the orbit`` of λ_MSE·MSE + λ_L1·L1 between the
        network's outputs (B, n_outputs) and the circle codes of the label."""
        outputs = outputs.float()
        costs = []
        for member in self.orbit(self.periods(labels)):
            diff = outputs - circle_code(member)
            costs.append(mse_weight * diff.pow(2).mean(1) + l1_weight * diff.abs().mean(1))
        return torch.stack(costs).min(0).values.mean()

    # ------------------------------------------------------------------ answers

    def decode(self, outputs: np.ndarray) -> np.ndarray:
        """Network outputs → (B, n_values) in the label's units (cell fractions or degrees),
        folded into the fundamental domain (:meth:`canonical`)."""
        values = circle_decode(outputs)
        return self.canonical(values * self.period_deg if self.kind == "twist" else values)

    def canonical(self, values: np.ndarray) -> np.ndarray:
        """One representative per orbit: twists in [0, period/2]; slips with the first
        nonzero of (Da + Db, Da) of the first interface in the lower half-circle."""
        values = np.asarray(values, dtype=np.float64).copy()
        if self.kind == "twist":
            p = self.period_deg
            if self.n_interfaces == 1:
                v = np.mod(values, p)
                return np.where(v > p / 2, p - v, v)
            return values
        per = np.mod(values.reshape(len(values), self.n_interfaces, 2), 1.0)
        flipped = np.mod(-per[:, ::-1], 1.0)
        key = lambda x: (np.mod(x[:, 0, 0] + x[:, 0, 1], 1.0), x[:, 0, 0])  # noqa: E731
        (s0, a0), (s1, a1) = key(per), key(flipped)
        take = (s1 < s0 - 1e-9) | ((np.abs(s1 - s0) <= 1e-9) & (a1 < a0))
        per[take] = flipped[take]
        return per.reshape(len(values), -1)

    def errors(self, predicted: np.ndarray, true: np.ndarray) -> np.ndarray:
        """Per sample: the distance from the prediction to the nearest equivalent of the label.
        Slips: ΔD in Å (Euclidean, through the cell metric, every interface together);
        twists: degrees. Both arrays are (B, n_values) in label units."""
        predicted = torch.as_tensor(np.asarray(predicted, np.float64))
        true = torch.as_tensor(np.asarray(true, np.float64))
        if self.kind == "twist":
            best = None
            for member in self.orbit(true):
                d = torch.remainder(predicted - member + self.period_deg / 2, self.period_deg) - self.period_deg / 2
                e = d.abs().max(1).values
                best = e if best is None else torch.minimum(best, e)
            return best.numpy()
        basis = np.asarray(self.basis_A, dtype=np.float64)
        shifts = np.array(list(itertools.product((-1, 0, 1), repeat=2)), dtype=np.float64)  # nearest image in a skew cell
        best = None
        for member in self.orbit(true):
            d = (predicted - member).numpy().reshape(len(predicted), self.n_interfaces, 2)
            d -= np.round(d)
            cart = (d[:, :, None, :] + shifts) @ basis.T  # (B, I, 9, 2) Å
            e = np.sqrt((np.linalg.norm(cart, axis=-1).min(-1) ** 2).sum(-1))
            best = e if best is None else np.minimum(best, e)
        return best
