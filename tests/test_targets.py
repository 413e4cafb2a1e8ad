"""Stacking targets: circle codes without a seam, layer-reversal orbits, errors in Å and degrees."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inference.targets import Target, circle_code, circle_decode, rotational_order

HEX = ((3.16, -1.58), (0.0, 3.16 * math.sqrt(3) / 2))  # a1, a2 as columns: |a1| = |a2| = 3.16 Å at 120°
SLIP = Target("slip", 1, 120.0, HEX)
TWIST = Target("twist", 1, 120.0, HEX)


def slip_labels(*pairs) -> torch.Tensor:
    return torch.tensor(pairs, dtype=torch.float32)[:, None, :]  # (B, 1 interface, 2)


def test_no_seam_at_the_cell_edge():
    """A label of 0.99 against a prediction of 0.01 costs what 0.02 does, not what 0.98 does."""
    label = slip_labels((0.99, 0.3))  # Db = 0.3 keeps -D (0.01, 0.7) far from the predictions below
    across = SLIP.loss(circle_code(torch.tensor([[0.01, 0.3]])), label)
    near = SLIP.loss(circle_code(torch.tensor([[0.97, 0.3]])), label)  # 0.02 away on the same side
    far = SLIP.loss(circle_code(torch.tensor([[0.51, 0.3]])), label)
    assert float(across) == pytest.approx(float(near), rel=0.15)  # the L1 part depends a little on where on the circle
    assert far > 20 * across
    assert SLIP.errors(np.array([[0.01, 0.3]]), np.array([[0.99, 0.3]]))[0] == pytest.approx(0.02 * 3.16, rel=1e-6)


def test_codes_round_trip():
    values = np.random.default_rng(0).random((50, 2))
    np.testing.assert_allclose(circle_decode(circle_code(torch.tensor(values)).numpy()), values, atol=1e-6)


def test_layer_reversal_is_the_same_answer():
    """D and -D are one stacking seen from either side: the loss and the error cannot tell them apart."""
    d = torch.tensor([[0.2, 0.7]])
    label = slip_labels((0.2, 0.7))
    assert SLIP.loss(circle_code(-d), label) == pytest.approx(0.0, abs=1e-6)
    assert SLIP.loss(circle_code(d), label) == pytest.approx(0.0, abs=1e-6)
    assert SLIP.loss(circle_code(torch.tensor([[0.3, 0.7]])), label) > 0.01
    assert SLIP.errors(np.array([[0.8, 0.3]]), np.array([[0.2, 0.7]]))[0] == pytest.approx(0.0, abs=1e-9)
    # every canonical form is one member of the orbit, and both members map to the same one
    assert np.allclose(SLIP.canonical(np.array([[0.2, 0.7]])), SLIP.canonical(np.array([[0.8, 0.3]])))


def test_trilayer_reversal_swaps_and_negates_the_interfaces():
    t = Target("slip", 2, 120.0, HEX)
    labels = torch.tensor([[[0.1, 0.2], [0.3, 0.6]]])
    reversed_ = torch.tensor([[-0.3, -0.6, -0.1, -0.2]])
    assert t.loss(circle_code(reversed_), labels) == pytest.approx(0.0, abs=1e-6)
    assert t.loss(circle_code(torch.tensor([[-0.1, -0.2, -0.3, -0.6]])), labels) > 0.1  # negating alone is not a symmetry
    assert t.n_outputs == 8 and t.value_names == ["D1a", "D1b", "D2a", "D2b"]


def test_slip_error_uses_the_cell_metric():
    """ΔD is the shortest lattice-periodic distance in Å, through the 120° cell."""
    # (0.1, 0.1) in a 120° cell: |0.1 a1 + 0.1 a2| = 0.1 * 3.16 (a1 + a2 has the length of a1)
    assert SLIP.errors(np.array([[0.1, 0.1]]), np.array([[0.0, 0.0]]))[0] == pytest.approx(0.316, rel=1e-4)
    # (0.5, 0.5) is nearer to (1, 1) = 0 through a1 + a2 than along the fractional box
    assert SLIP.errors(np.array([[0.6, 0.6]]), np.array([[0.0, 0.0]]))[0] == pytest.approx(0.4 * 3.16, rel=1e-4)


def test_twist_period_and_mirror():
    """MX2 twists are periodic in 120° and theta ~ -theta (layer reversal), so [0°, 60°] is the
    whole range: 61° is 59° seen from below, 119° is 1°; 20° and 40° are different stackings."""
    def cost(pred_deg, label_deg):
        return float(TWIST.loss(circle_code(torch.tensor([[pred_deg / 120.0]])), torch.tensor([[label_deg]])))

    assert cost(61.0, 59.0) == pytest.approx(0.0, abs=1e-6)
    assert cost(119.0, 1.0) == pytest.approx(0.0, abs=1e-6)
    assert cost(122.0, 0.0) == pytest.approx(cost(2.0, 0.0), rel=1e-4)  # no seam at the period
    assert cost(3.0, 1.0) > 1e-3
    assert TWIST.errors(np.array([[119.0]]), np.array([[1.0]]))[0] == pytest.approx(0.0, abs=1e-9)
    assert TWIST.errors(np.array([[3.0]]), np.array([[1.0]]))[0] == pytest.approx(2.0)
    assert TWIST.errors(np.array([[40.0]]), np.array([[20.0]]))[0] == pytest.approx(20.0)
    np.testing.assert_allclose(TWIST.decode(circle_code(torch.tensor([[100 / 120.0], [20 / 120.0]])).numpy()), [[20.0], [20.0]], atol=1e-4)


def test_rotational_order_of_real_cells():
    from datafactory.simulation.structures import LayerCell, builtin_cell

    def order(name):
        cell = LayerCell.from_atoms(builtin_cell(name), 0.3)
        contents = {}
        species = np.array([contents.setdefault(tuple(sorted(cell.numbers[cell.column_of_site == t])), len(contents))
                            for t in range(len(cell.column_anchor_frac))])
        return rotational_order(cell.column_anchor_frac @ cell.basis.T, species, cell.basis)

    assert order("MoS2") == 3
    assert order("graphene") == 6
