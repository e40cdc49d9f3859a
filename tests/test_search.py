"""Direction search on tiny differentiable models with known optima."""

from __future__ import annotations

import torch

from harness.search import SearchSettings, search_directions

NUM_WS, W_DIM, NUM_SAMPLES = 4, 8, 6


def make_models(seed: int = 0):
    """A linear 'generator' from W+ to 3x4x4 images, a linear classifier and embedder."""
    generator = torch.Generator().manual_seed(seed)
    synthesis_matrix = torch.randn(NUM_WS * W_DIM, 3 * 4 * 4, generator=generator) * 0.2
    classifier_matrix = torch.randn(3 * 4 * 4, 3, generator=generator)
    embed_matrix = torch.randn(3 * 4 * 4, 5, generator=generator)

    def synthesis(ws):
        return torch.tanh(ws.flatten(1) @ synthesis_matrix).view(-1, 3, 4, 4)

    def classifier(images):
        return images.flatten(1) @ classifier_matrix

    def embed(images):
        return images.flatten(1) @ embed_matrix + 3.0

    ws = torch.randn(NUM_SAMPLES, NUM_WS, W_DIM, generator=generator)
    return synthesis, classifier, embed, ws


def target_probability(synthesis, classifier, ws, direction, index):
    with torch.no_grad():
        return torch.softmax(classifier(synthesis(ws + direction)), dim=1)[:, index].mean()


def test_search_raises_target_probability():
    synthesis, classifier, embed, ws = make_models()
    settings = SearchSettings(steps=60, learning_rate=0.1, lambda_id=0.0, lambda_l2=0.0)
    results = search_directions(
        synthesis, classifier, embed, ws, [("a", 0), ("b", 1), ("c", 2)], settings, progress=False
    )
    assert [r.status for r in results] == ["ok", "ok", "ok"]
    zero = torch.zeros(NUM_WS, W_DIM)
    for result in results:
        before = target_probability(synthesis, classifier, ws, zero, result.class_index)
        after = target_probability(synthesis, classifier, ws, result.direction, result.class_index)
        assert after > before + 0.2, (result.class_name, float(before), float(after))
        assert result.loss_history[-1] < result.loss_history[0]


def test_identity_weight_keeps_embedding():
    synthesis, classifier, embed, ws = make_models()
    classes = [("a", 0)]
    loose = search_directions(
        synthesis, classifier, embed, ws, classes,
        SearchSettings(steps=60, learning_rate=0.1, lambda_id=0.0, lambda_l2=0.0), progress=False,
    )[0]
    tight = search_directions(
        synthesis, classifier, embed, ws, classes,
        SearchSettings(steps=60, learning_rate=0.1, lambda_id=50.0, lambda_l2=0.0), progress=False,
    )[0]

    def identity_loss(direction):
        base = embed(synthesis(ws))
        moved = embed(synthesis(ws + direction))
        return float((1 - torch.cosine_similarity(base, moved, dim=1)).mean())

    assert identity_loss(tight.direction) < identity_loss(loose.direction)


def test_l2_weight_shrinks_direction():
    synthesis, classifier, embed, ws = make_models()
    norms = []
    for lambda_l2 in (0.0, 1.0):
        settings = SearchSettings(steps=60, learning_rate=0.1, lambda_id=0.0, lambda_l2=lambda_l2)
        result = search_directions(
            synthesis, classifier, embed, ws, [("a", 0)], settings, progress=False
        )[0]
        norms.append(float(result.direction.norm()))
    assert norms[1] < norms[0]


def test_layer_mask_limits_direction():
    synthesis, classifier, embed, ws = make_models()
    settings = SearchSettings(steps=20, learning_rate=0.1, layers=(1, 2))
    result = search_directions(
        synthesis, classifier, embed, ws, [("a", 0)], settings, progress=False
    )[0]
    assert torch.all(result.direction[0] == 0)
    assert torch.all(result.direction[3] == 0)
    assert result.direction[1:3].abs().sum() > 0


def test_class_batches_match_single_batch():
    synthesis, classifier, embed, ws = make_models()
    classes = [("a", 0), ("b", 1), ("c", 2)]
    together = search_directions(
        synthesis, classifier, embed, ws, classes, SearchSettings(steps=10), progress=False
    )
    one_by_one = search_directions(
        synthesis, classifier, embed, ws, classes,
        SearchSettings(steps=10, class_batch_size=1), progress=False,
    )
    for a, b in zip(together, one_by_one):
        assert torch.allclose(a.direction, b.direction, atol=1e-5)


def test_non_finite_loss_stops_one_class():
    synthesis, classifier, embed, ws = make_models()
    calls = {"count": 0}

    def exploding_classifier(images):
        logits = classifier(images)
        calls["count"] += 1
        if calls["count"] > 5:  # from step 5 (the sixth call, steps count from 0) class "b" is NaN
            num_samples = ws.shape[0]
            logits = logits.clone()
            logits[num_samples : 2 * num_samples, 1] = float("nan")
        return logits

    settings = SearchSettings(steps=20, learning_rate=0.1)
    results = search_directions(
        synthesis, exploding_classifier, embed, ws, [("a", 0), ("b", 1), ("c", 2)], settings,
        progress=False,
    )
    assert [r.status for r in results] == ["ok", "error", "ok"]
    assert results[1].message == "non-finite loss at step 5"
    assert results[1].error_step == 5
    assert torch.all(results[1].direction == 0)
    assert torch.isfinite(results[0].direction).all()
    assert results[0].direction.abs().sum() > 0
