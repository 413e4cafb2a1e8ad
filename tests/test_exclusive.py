"""Exclusive classes per layer: the softmax head and its loss."""

from __future__ import annotations

import torch

from inference.exclusive import exclusive_loss, layer_softmax


def test_layer_softmax_sums_to_one_with_the_background_per_layer():
    logits = torch.randn(2, 5, 4, 4)
    groups = [[0, 1, 2], [3, 4]]
    p = layer_softmax(logits, groups)
    for g in groups:
        s = p[:, g].sum(dim=1)
        assert torch.all(s < 1) and torch.all(s > 0)
    # background logit 0: a channel with logit 0 alone in its layer has probability 1/2
    assert torch.allclose(layer_softmax(torch.zeros(1, 1, 2, 2), [[0]]), torch.full((1, 1, 2, 2), 0.5))


def test_loss_is_lowest_for_the_right_class_and_weights_rare_classes():
    target = torch.zeros(1, 2, 3, 3)
    target[0, 1, 1, 1] = 1.0  # one pixel of class 1, the rest background
    right = torch.full((1, 2, 3, 3), -6.0)
    right[0, 1, 1, 1] = 6.0
    wrong = torch.full((1, 2, 3, 3), -6.0)
    wrong[0, 0, 1, 1] = 6.0  # the pixel called class 0 instead
    assert exclusive_loss(right, target, [[0, 1]]) < 0.01 < exclusive_loss(wrong, target, [[0, 1]])
    heavy = exclusive_loss(wrong, target, [[0, 1]], class_weight=torch.tensor([1.0, 5.0]))
    assert heavy > 4 * exclusive_loss(wrong, target, [[0, 1]])  # the rare class's miss costs five times as much
    logits = torch.zeros(1, 2, 3, 3, requires_grad=True)
    exclusive_loss(logits, target, [[0, 1]]).backward()
    assert logits.grad[0, 1, 1, 1] < 0 < logits.grad[0, 0, 1, 1]  # pushes the right class up, the other down
