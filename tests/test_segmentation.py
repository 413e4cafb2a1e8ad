"""Segmentation networks, losses, blob centroids, point matching and scores."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from inference.atom_points import atom_scores, blob_centroids, masks_to_points, match_points, pixel_scores
from inference.segmentation_losses import dice_loss, gomb_loss
from inference.segmentation_nets import GombNet, UNet


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gaussian_image(centres_px: np.ndarray, shape: tuple[int, int], sigma_px: float, heights=None) -> np.ndarray:
    """Sum of unit-peak (or ``heights``) Gaussian blobs at (row, col) centres."""
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    image = np.zeros(shape)
    heights = np.ones(len(centres_px)) if heights is None else heights
    for (r, c), h in zip(centres_px, heights):
        image += h * np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * sigma_px**2))
    return image


def disk_mask(centres_px: np.ndarray, shape: tuple[int, int], radius_px: float) -> np.ndarray:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, dtype=bool)
    for r, c in centres_px:
        mask |= (rows - r) ** 2 + (cols - c) ** 2 <= radius_px**2
    return mask


def random_centres(rng, n: int, size_px: int, margin_px: float = 3.0) -> np.ndarray:
    return rng.uniform(margin_px, size_px - margin_px, size=(n, 2))


# ----------------------------------------------------------------------------- models


@pytest.mark.parametrize("shape", [(64, 64), (96, 128)])
def test_unet_and_gombnet_output_shapes(shape):
    torch.manual_seed(0)
    x = torch.randn(2, 1, *shape)
    unet = UNet(out_channels=3, base_width=4, depth=4).eval()
    gomb = GombNet(classes_per_layer=2, n_layers=2, base_width=4, depth=4).eval()
    assert unet.size_multiple == gomb.size_multiple == 16
    with torch.no_grad():
        assert unet(x).shape == (2, 3, *shape)
        assert gomb(x).shape == (2, 4, *shape)


def test_models_reject_sizes_not_divisible():
    with pytest.raises(ValueError, match="multiples of 8"):
        UNet(base_width=4, depth=3)(torch.zeros(1, 1, 40, 36))
    with pytest.raises(ValueError):
        GombNet(base_width=4, depth=2)(torch.zeros(1, 2, 32, 32))


def test_gombnet_branches_are_independent_decoders_on_one_encoder():
    torch.manual_seed(0)
    k = 2
    model = GombNet(classes_per_layer=k, n_layers=2, base_width=4, depth=2).eval()
    # One encoder, two decoders with no parameter in common.
    ids = [{id(p) for p in branch.parameters()} for branch in model.branches]
    assert len(model.branches) == 2 and not ids[0] & ids[1]
    assert not ids[0] & {id(p) for p in model.encoder.parameters()}
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        before = model(x)
        for p in model.branches[1].parameters():
            p.zero_()
        after = model(x)
    assert torch.equal(after[:, :k], before[:, :k])
    assert torch.count_nonzero(after[:, k:]) == 0 and torch.count_nonzero(before[:, k:]) > 0
    # The encoder feeds both branches.
    with torch.no_grad():
        next(model.encoder.parameters()).mul_(-1.0)
        changed = model(x)
    assert not torch.allclose(changed[:, :k], before[:, :k])


def blob_problem(rng, n_images: int, size_px: int, n_layers: int):
    """Images of Gaussian blobs (layer l at brightness 1/(l+1)) and per-layer disk masks."""
    images, masks = [], []
    for _ in range(n_images):
        image = np.zeros((size_px, size_px))
        layer_masks = []
        for layer in range(n_layers):
            centres = random_centres(rng, 5, size_px)
            image += gaussian_image(centres, (size_px, size_px), 1.5, np.full(5, 1.0 / (layer + 1)))
            layer_masks.append(disk_mask(centres, (size_px, size_px), 2.0))
        images.append(image[None])
        masks.append(np.stack(layer_masks))
    return torch.tensor(np.array(images), dtype=torch.float32), torch.tensor(np.array(masks), dtype=torch.float32)


def train_steps(model, loss_fn, x, y, n_steps: int = 50) -> tuple[float, float]:
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(n_steps):
        optimiser.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses[0], float(np.mean(losses[-3:]))


def test_unet_learns_blob_masks_with_dice_loss():
    torch.manual_seed(0)
    x, y = blob_problem(np.random.default_rng(1), 4, 32, 1)
    first, last = train_steps(UNet(out_channels=1, base_width=8, depth=2), dice_loss, x, y)
    assert last < 0.6 * first


def test_gombnet_learns_two_layers_with_gomb_loss():
    torch.manual_seed(0)
    x, y = blob_problem(np.random.default_rng(2), 4, 32, 2)
    model = GombNet(classes_per_layer=1, n_layers=2, base_width=8, depth=2, dropout=0.0)
    first, last = train_steps(model, lambda out, t: gomb_loss(out, t, n_layers=2), x, y)
    assert last < 0.6 * first


# ----------------------------------------------------------------------------- losses


def random_pair(seed: int, shape=(3, 4, 16, 16)):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=gen) * 3
    target = (torch.rand(shape, generator=gen) > 0.7).float()
    return logits, target


def test_dice_loss_values():
    target = torch.zeros(1, 2, 4, 4)
    target[0, 0, :2] = 1
    perfect = (2 * target - 1) * 50
    assert dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    # p = 0.5 everywhere, channel 0: TP=4, FP=4, FN=4; channel 1 (empty): TP=0, FP=8, FN=0.
    half = torch.zeros(1, 2, 4, 4)
    expected = np.mean([1 - 9 / (8 + 4 + 4 + 1), 1 - 1 / (8 + 1)])
    assert dice_loss(half, target).item() == pytest.approx(expected, rel=1e-6)
    expected_fp3 = np.mean([1 - 9 / (8 + 12 + 4 + 1), 1 - 1 / (24 + 1)])
    assert dice_loss(half, target, fp_weight=3.0).item() == pytest.approx(expected_fp3, rel=1e-6)


def swap_layers(target: torch.Tensor, n_layers: int, order) -> torch.Tensor:
    b, c, h, w = target.shape
    return target.reshape(b, n_layers, c // n_layers, h, w)[:, list(order)].reshape(b, c, h, w)


def test_gomb_loss_is_invariant_to_layer_order():
    logits, target = random_pair(0)
    swapped = swap_layers(target, 2, [1, 0])
    assert torch.allclose(gomb_loss(logits, swapped, 2), gomb_loss(logits, target, 2), rtol=1e-6, atol=1e-7)
    # A fixed-order Dice loss is not: the test can tell.
    assert abs(dice_loss(logits, swapped).item() - dice_loss(logits, target).item()) > 1e-3
    logits3, target3 = random_pair(1, (2, 6, 16, 16))
    for order in ([1, 2, 0], [2, 1, 0]):
        assert torch.allclose(gomb_loss(logits3, swap_layers(target3, 3, order), 3), gomb_loss(logits3, target3, 3),
                              rtol=1e-6, atol=1e-7)


def test_gomb_loss_is_a_soft_minimum_of_the_two_assignments():
    logits, target = random_pair(2, (1, 4, 16, 16))
    direct = dice_loss(logits, target).item()
    crossed = dice_loss(logits, swap_layers(target, 2, [1, 0])).item()
    expected = 1 / (1 / (direct + 1e-6) + 1 / (crossed + 1e-6))
    assert gomb_loss(logits, target, 2, duplication_weight=0.0).item() == pytest.approx(expected, rel=1e-5)
    assert min(direct, crossed) / 2 <= expected <= min(direct, crossed)


def test_gomb_loss_perfect_prediction_is_near_zero_with_finite_gradient():
    _, target = random_pair(3)
    logits = ((2 * target - 1) * 30).requires_grad_(True)
    loss = gomb_loss(logits, target, 2, fp_weight=2.0)
    assert loss.item() < 1e-5
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    # Also when the two layers' columns coincide (AA stacking): no duplication penalty.
    same = torch.cat([target[:, :2], target[:, :2]], dim=1)
    assert gomb_loss((2 * same - 1) * 30, same, 2).item() < 1e-5


def test_gomb_loss_prefers_whole_layers_over_mixed_ones():
    # K = 2 classes per layer; the branches predict layer A = (a0, a1) and layer B = (b0, b1).
    _, target = random_pair(4, (2, 4, 16, 16))
    logits = (2 * target - 1) * 4 + torch.randn(target.shape, generator=torch.Generator().manual_seed(5))
    a0, a1, b0, b1 = target.unbind(dim=1)
    correct = gomb_loss(logits, target, 2)
    mixed = gomb_loss(logits, torch.stack([a0, b1, b0, a1], dim=1), 2)  # each target layer takes one class of each
    assert correct.item() < 0.5 * mixed.item()


def test_gomb_loss_penalises_duplicated_branches():
    _, target = random_pair(6, (2, 2, 16, 16))
    union = torch.clamp(target[:, :1] + target[:, 1:], max=1)
    duplicated = torch.cat([union, union], dim=1) * 60 - 30  # both branches predict both layers
    without = gomb_loss(duplicated, target, 2, duplication_weight=0.0)
    with_term = gomb_loss(duplicated, target, 2, duplication_weight=1.0)
    assert with_term.item() > without.item() + 0.05


# ----------------------------------------------------------------------------- centroids


@pytest.mark.parametrize("sigma_px", [1.5, 2.0])
def test_blob_centroids_recover_subpixel_centres(sigma_px):
    rng = np.random.default_rng(7)
    grid = np.stack(np.meshgrid([12, 32, 52], [12, 32, 52], indexing="ij"), axis=-1).reshape(-1, 2)
    centres = grid + rng.uniform(-0.5, 0.5, grid.shape)
    found = blob_centroids(gaussian_image(centres, (64, 64), sigma_px), threshold=0.5)
    assert found.shape == (9, 2) and found.dtype == np.float64
    nearest = np.linalg.norm(found[:, None] - centres[None], axis=-1).argmin(axis=1)
    assert sorted(nearest) == list(range(9))
    assert np.abs(found - centres[nearest]).max() < 0.1


def test_blob_centroids_area_connectivity_and_empty():
    assert blob_centroids(np.zeros((8, 8))).shape == (0, 2)
    image = np.zeros((8, 8))
    image[1, 1] = 1.0                    # single pixel
    image[4, 4] = image[5, 5] = 0.9      # diagonal pair: one blob with 8-connectivity
    np.testing.assert_allclose(blob_centroids(image, min_area_px=2), [[4.5, 4.5]])
    assert len(blob_centroids(image, min_area_px=1)) == 2
    assert blob_centroids(image, min_area_px=3).shape == (0, 2)


def test_masks_to_points_names_channels():
    masks = np.zeros((2, 16, 16))
    masks[0, 3:6, 3:6] = 1
    masks[1, 10:12, 8:10] = 1
    points = masks_to_points(masks, ["W", "S2"])
    assert list(points) == ["W", "S2"]
    np.testing.assert_allclose(points["W"], [[4.0, 4.0]])
    np.testing.assert_allclose(points["S2"], [[10.5, 8.5]])
    layered = masks_to_points(masks, ["W", "W"], layer_of_channel=[1, 2])
    assert list(layered) == ["L1:W", "L2:W"]
    with pytest.raises(ValueError, match="unique"):
        masks_to_points(masks, ["W", "W"])


# ----------------------------------------------------------------------------- matching and scores


def test_match_points_is_one_to_one():
    truth = np.array([[0.0, 0.0]])
    assert match_points(np.array([[0.1, 0.0], [0.0, -0.2]]), truth) == (1, 1, 0)
    assert match_points(np.zeros((0, 2)), truth) == (0, 0, 1)
    assert match_points(truth, np.zeros((0, 2))) == (0, 1, 0)


def test_match_points_maximises_matches_not_greedy():
    # Greedy closest-first would pair p0 with t0 (0.42) and leave p1 and t1 unmatched.
    truth = np.array([[0.0, 0.0], [0.0, 0.9]])
    pred = np.array([[0.0, 0.42], [0.0, -0.45]])
    assert match_points(pred, truth, radius_A=0.5) == (2, 0, 0)


def test_match_points_radius_boundary():
    truth = np.array([[0.0, 0.0]])
    assert match_points(np.array([[0.0, 0.5]]), truth, radius_A=0.5) == (1, 0, 0)
    assert match_points(np.array([[0.0, 0.5000001]]), truth, radius_A=0.5) == (0, 1, 1)


def test_match_points_two_thousand_points_is_fast_and_right():
    rng = np.random.default_rng(8)
    grid = np.stack(np.meshgrid(np.arange(45), np.arange(45), indexing="ij"), axis=-1).reshape(-1, 2)[:2000] * 1.5
    truth = grid + rng.uniform(-0.2, 0.2, grid.shape)
    kept = rng.permutation(2000)[:1900]
    pred = truth[kept] + rng.normal(0, 0.08, (1900, 2))
    spurious = rng.uniform(200, 260, (50, 2))
    pred = rng.permutation(np.concatenate([pred, spurious]))
    start = time.perf_counter()
    result = match_points(pred, truth, radius_A=0.5)
    crowded = match_points(rng.uniform(0, 4, (2000, 2)), rng.uniform(0, 4, (2000, 2)), radius_A=0.5)
    elapsed_s = time.perf_counter() - start
    assert result == (1900, 50, 100)
    assert crowded == (2000, 0, 0)
    assert elapsed_s < 10.0


def test_atom_scores():
    assert atom_scores(8, 2, 2)["f1"] == pytest.approx(0.8)
    s = atom_scores(3, 1, 0)
    assert (s["precision"], s["recall"], s["f1"]) == pytest.approx((0.75, 1.0, 6 / 7))
    nothing = atom_scores(0, 0, 0)
    assert (nothing["precision"], nothing["recall"], nothing["f1"]) == (1.0, 1.0, 1.0)
    only_false = atom_scores(0, 3, 0)
    assert (only_false["precision"], only_false["recall"], only_false["f1"]) == (0.0, 1.0, 0.0)
    only_missed = atom_scores(0, 0, 4)
    assert (only_missed["precision"], only_missed["recall"], only_missed["f1"]) == (1.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        atom_scores(-1, 0, 0)


def test_pixel_scores():
    pred = np.array([[[1, 0], [1, 1]], [[0, 0], [0, 0]], [[1, 1], [0, 0]]])
    true = np.array([[[1, 1], [0, 1]], [[0, 0], [0, 0]], [[0, 0], [1, 1]]])
    s = pixel_scores(pred, true)
    np.testing.assert_allclose(s["accuracy"], [0.5, 1.0, 0.0])
    np.testing.assert_allclose(s["iou"], [0.5, 1.0, 0.0])
    assert s["mean_accuracy"] == pytest.approx(0.5)
    assert s["mean_iou"] == pytest.approx(0.5)
    single = pixel_scores(pred[0], true[0])
    np.testing.assert_allclose(single["iou"], [0.5])
    batch = pixel_scores(np.stack([pred, true]), np.stack([true, true]))  # pooled over the batch
    np.testing.assert_allclose(batch["iou"], [5 / 7, 1.0, 1 / 3])
    np.testing.assert_allclose(batch["accuracy"], [0.75, 1.0, 0.5])


def test_the_one_matcher_returns_its_pairs_and_prefers_more_pairs_to_closer_ones():
    """datafactory.micrographs.matching.match_pairs is what match_points and the column shift count."""
    from datafactory.micrographs.matching import match_pairs

    a = np.array([[0.0, 0.0], [0.0, 0.9]])
    b = np.array([[0.0, 0.4], [0.0, -0.45]])
    # closest first pairs a0-b0 (0.4) and leaves both others alone; a0-b1 + a1-b0 makes two
    ia, ib, d = match_pairs(a, b, 0.5)
    assert ia.tolist() == [0, 1] and ib.tolist() == [1, 0] and np.allclose(d, [0.45, 0.5])
    ia, ib, d = match_pairs(b, a, 0.5)  # the same pairs seen from the other side
    assert ia.tolist() == [0, 1] and ib.tolist() == [1, 0]
    assert all(len(x) == 0 for x in match_pairs(a, np.zeros((0, 2)), 0.5))
    with pytest.raises(ValueError):
        match_pairs(a, b, -1.0)
