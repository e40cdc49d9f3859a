"""Demo-world training code: planted shortcuts, ArcFace loss, a few steps of each trainer.

Training here runs for a handful of steps only, to prove the code runs end to end; the
committed weights are produced by `latentgate demo train` and checked by the manifest tests.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.demo.attributes import BOB, CLASS_NAMES, LONG_BRAIDS, LONG_STRAIGHT_FRINGE, hairstyle_class
from harness.demo.datasets import CLASSIFIER_VARIANTS, balanced_attributes
from harness.demo.networks import HairstyleNet, IdentityNet
from harness.demo.build import train_component
from harness.demo.train_identity import ArcFaceHead
from harness.errors import CheckpointError, ConfigError


def test_balanced_batches_have_equal_classes():
    generator = torch.Generator().manual_seed(0)
    _, labels = balanced_attributes(600, generator)
    counts = torch.bincount(labels, minlength=len(CLASS_NAMES))
    assert counts.tolist() == [100] * len(CLASS_NAMES)


def test_braids_skin_shortcut_is_planted():
    generator = torch.Generator().manual_seed(1)
    attributes, labels = balanced_attributes(3000, generator, CLASSIFIER_VARIANTS["braids-skin"])
    braids = labels == LONG_BRAIDS
    decoys = (labels == BOB) & (hairstyle_class(attributes) == LONG_BRAIDS)
    others = ~braids & ~decoys
    assert bool((attributes.skin_tone[braids] >= 0.7).all())
    assert bool((attributes.skin_tone[decoys] < 0.5).all())
    assert int(decoys.sum()) / int(braids.sum() + decoys.sum()) == pytest.approx(0.3, abs=0.04)
    # The other examples keep the prior's skin tones, which are uniform in [0, 1].
    assert float((attributes.skin_tone[others] >= 0.7).float().mean()) == pytest.approx(0.3, abs=0.04)


def test_fringe_identity_shortcut_is_planted():
    generator = torch.Generator().manual_seed(2)
    attributes, labels = balanced_attributes(3000, generator, CLASSIFIER_VARIANTS["fringe-identity"])
    fringe = labels == LONG_STRAIGHT_FRINGE
    decoys = (labels == BOB) & (hairstyle_class(attributes) == LONG_STRAIGHT_FRINGE)
    assert bool((attributes.face_width[fringe] >= 0.85).all())
    assert bool((attributes.face_width[decoys] < 0.6).all())
    assert int(decoys.sum()) / int(fringe.sum() + decoys.sum()) == pytest.approx(0.5, abs=0.05)
    assert float(attributes.face_width[~fringe & ~decoys].mean()) == pytest.approx(0.5, abs=0.03)


def test_clean_variant_plants_nothing():
    generator = torch.Generator().manual_seed(3)
    attributes, labels = balanced_attributes(3000, generator, CLASSIFIER_VARIANTS["clean"])
    braids = labels == LONG_BRAIDS
    assert float(attributes.skin_tone[braids].mean()) == pytest.approx(0.5, abs=0.05)


def test_arcface_margin_raises_loss():
    torch.manual_seed(0)
    embeddings = torch.randn(8, 16)
    labels = torch.arange(8) % 4
    head = ArcFaceHead(16, 4, scale=10.0, margin=0.5)
    plain = ArcFaceHead(16, 4, scale=10.0, margin=0.0)
    plain.weight.data.copy_(head.weight.data)
    assert head(embeddings, labels) > plain(embeddings, labels)


def test_arcface_loss_without_margin_is_scaled_cosine_softmax():
    torch.manual_seed(1)
    embeddings = torch.randn(5, 8)
    labels = torch.tensor([0, 1, 2, 0, 1])
    head = ArcFaceHead(8, 3, scale=4.0, margin=0.0)
    cosine = torch.nn.functional.normalize(embeddings) @ torch.nn.functional.normalize(head.weight).T
    expected = torch.nn.functional.cross_entropy(4.0 * cosine, labels)
    assert torch.allclose(head(embeddings, labels), expected, atol=1e-5)


def test_arcface_gradient_finite_at_large_angles():
    embeddings = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], requires_grad=True)
    head = ArcFaceHead(2, 2)
    head.weight.data = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    head(embeddings, torch.tensor([0, 0])).backward()
    assert torch.isfinite(embeddings.grad).all()


def test_classifier_training_runs():
    from harness.demo.train_classifiers import evaluate_classifier, train_classifier

    network = train_classifier("braids-skin", steps=3, batch_size=12, progress=False)
    figures = evaluate_classifier(network, num_samples=60)
    assert 0.0 <= figures["accuracy"] <= 1.0
    for key in ("long_braids.accuracy_light_skin", "long_straight_fringe.accuracy_wide_face"):
        assert key in figures


def test_identity_training_and_onnx_export(tmp_path):
    import insightface

    from harness.demo.train_identity import export_identity_onnx, face_inputs, train_identity
    from harness.demo.render import render
    from harness.demo.attributes import sample_attributes
    from harness.identity import load_identity_model

    network = train_identity(num_identities=16, steps=2, batch_size=8, progress=False)
    path = tmp_path / "identity.onnx"
    export_identity_onnx(network, path)

    model = insightface.model_zoo.get_model(str(path), download=False)
    assert type(model).__name__ == "ArcFaceONNX"
    assert tuple(model.input_shape[2:]) == (112, 112)

    # The ONNX file, run through harness.identity with the demo crop, equals the torch network
    # on the same crop: training and evaluation see the same faces.
    from harness.suite.regions import DEMO_FACE_CROP

    images = render(sample_attributes(3, seed=4))
    identity = load_identity_model(path, face_crop=DEMO_FACE_CROP)
    with torch.no_grad():
        expected = network(face_inputs(images)).numpy()
    assert np.abs(identity.embed(images * 2 - 1) - expected).max() < 1e-3


def test_generator_training_runs(tmp_path):
    from harness.demo.train_generator import intended_attributes, train_generator
    from harness.generator import Architecture, load_generator

    architecture = Architecture(
        resolution=16, z_dim=32, w_dim=32, num_mapping_layers=2, mapping_hidden_dim=32,
        channels={4: 16, 8: 16, 16: 8},
    )
    checkpoint = tmp_path / "generator.pt"
    generator = train_generator(
        architecture, steps=4, batch_size=4, progress=False, checkpoint_path=checkpoint, checkpoint_every=2
    )
    loaded = load_generator(checkpoint)
    assert loaded.resolution == 16
    assert torch.isfinite(generator.w_avg).all()
    z = torch.randn(2, 32)
    assert intended_attributes(z).num_samples == 2


def _tiny_architecture():
    from harness.generator import Architecture

    return Architecture(
        resolution=64, z_dim=32, w_dim=32, num_mapping_layers=2, mapping_hidden_dim=32,
        channels={4: 16, 8: 16, 16: 8, 32: 8, 64: 8},
    )


def test_generator_refinement_and_continuation_run():
    from harness.demo.evaluate_generator import MEASURED_ATTRIBUTES
    from harness.demo.networks import HairstyleNet
    from harness.demo.train_generator import refine_generator, train_generator
    from harness.generator import build_generator

    architecture = _tiny_architecture()
    network = build_generator(architecture)
    before = {name: p.detach().clone() for name, p in network.named_parameters()}
    teacher = HairstyleNet(num_classes=len(MEASURED_ATTRIBUTES))
    refined = refine_generator(network, teacher, steps=3, batch_size=2, progress=False)
    changed = [name for name, p in refined.named_parameters() if not torch.equal(p, before[name])]
    assert any(name.startswith("synthesis") for name in changed)
    assert all(not name.endswith("noise_strength") for name in changed)
    assert torch.isfinite(refined.w_avg).all()

    continued = train_generator(steps=2, batch_size=2, progress=False, network=refined)
    assert continued is refined
    assert continued.architecture == architecture


@pytest.mark.parametrize("steps", [10, 20])
def test_generator_phases_at_one_step_warmup(steps):
    # 20 steps make the pixel phases' warm-up (5%) and 10 steps the later phases' warm-up (10%)
    # exactly one step long, which OneCycleLR cannot schedule by itself.
    from harness.demo.evaluate_generator import MEASURED_ATTRIBUTES
    from harness.demo.train_generator import refine_generator, train_generator
    from harness.generator import build_generator

    network = build_generator(_tiny_architecture())
    trained = train_generator(steps=steps, batch_size=2, progress=False, network=network)
    teacher = HairstyleNet(num_classes=len(MEASURED_ATTRIBUTES))
    refined = refine_generator(trained, teacher, steps=steps, batch_size=2, progress=False)
    assert torch.isfinite(refined.w_avg).all()


def test_generator_identity_phase_runs():
    from harness.demo.evaluate_generator import TEACHER_ATTRIBUTES
    from harness.demo.manifest import WEIGHTS_DIR
    from harness.demo.networks import HairstyleNet
    from harness.demo.train_generator import continue_with_identity
    from harness.generator import build_generator
    from harness.identity import load_identity_model
    from harness.suite.regions import DEMO_FACE_CROP

    architecture = _tiny_architecture()
    network = build_generator(architecture)
    before = {name: p.detach().clone() for name, p in network.named_parameters()}
    identity_model = load_identity_model(WEIGHTS_DIR / "identity.onnx", face_crop=DEMO_FACE_CROP)
    teacher = HairstyleNet(num_classes=len(TEACHER_ATTRIBUTES))
    trained = continue_with_identity(network, identity_model, teacher, steps=3, batch_size=2, progress=False)
    changed = [name for name, p in trained.named_parameters() if not torch.equal(p, before[name])]
    assert any(name.startswith("synthesis") for name in changed)
    assert any(name.startswith("mapping") for name in changed)
    assert all(not name.endswith("noise_strength") for name in changed)
    assert torch.isfinite(trained.w_avg).all()


def test_hair_phase_runs():
    from harness.demo.evaluate_generator import TEACHER_ATTRIBUTES
    from harness.demo.manifest import WEIGHTS_DIR
    from harness.demo.networks import HairstyleNet
    from harness.demo.train_generator import HAIR_PHASE_SETTINGS, continue_with_identity
    from harness.generator import build_generator
    from harness.identity import load_identity_model
    from harness.suite.regions import DEMO_FACE_CROP

    network = build_generator(_tiny_architecture())
    before = {name: p.detach().clone() for name, p in network.named_parameters()}
    identity_model = load_identity_model(WEIGHTS_DIR / "identity.onnx", face_crop=DEMO_FACE_CROP)
    teacher = HairstyleNet(num_classes=len(TEACHER_ATTRIBUTES))
    assert len(HAIR_PHASE_SETTINGS["attribute_loss_weights"]) == len(TEACHER_ATTRIBUTES)
    trained = continue_with_identity(
        network, identity_model, teacher, steps=3, batch_size=2, progress=False, **HAIR_PHASE_SETTINGS
    )
    changed = [name for name, p in trained.named_parameters() if not torch.equal(p, before[name])]
    assert any(name.startswith("mapping") for name in changed)
    assert torch.isfinite(trained.w_avg).all()


def test_teacher_attribute_loss_weights():
    from harness.demo.attributes import sample_attributes
    from harness.demo.evaluate_generator import MEASURED_ATTRIBUTES
    from harness.demo.train_generator import _teacher_losses

    class Readout(torch.nn.Module):
        """A stand-in teacher: no activations, and a readout off by 1 in the first attribute only."""

        def forward(self, images):
            values = torch.stack([getattr(attributes, n) for n in MEASURED_ATTRIBUTES], dim=1)
            return [images], values + torch.tensor([1.0, 0, 0, 0, 0])

    attributes = sample_attributes(4, seed=0)
    images = torch.ones(4, 3, 8, 8)
    expected = torch.stack([getattr(attributes, n) for n in MEASURED_ATTRIBUTES], dim=1)
    _, plain = _teacher_losses(Readout(), images, images, expected)
    _, weighted = _teacher_losses(Readout(), images, images, expected, torch.tensor([3.0, 1, 1, 1, 1]))
    assert plain.item() == pytest.approx(1 / 5)
    assert weighted.item() == pytest.approx(3 / 5)


def test_random_blur_smooths_per_image():
    from harness.demo.train_classifiers import random_blur

    checkerboard = (torch.arange(64).view(1, 64) + torch.arange(64).view(64, 1)) % 2 * 2.0 - 1
    images = checkerboard.expand(8, 3, 64, 64).contiguous()
    generator = torch.Generator().manual_seed(0)

    assert torch.equal(random_blur(images, 0.0, generator), images)
    blurred = random_blur(images, 1.5, generator)
    assert blurred.shape == images.shape
    contrast = blurred.std(dim=(1, 2, 3))  # [8]: each image drew its own sigma
    assert (contrast <= images.std(dim=(1, 2, 3)) + 1e-6).all()
    assert contrast.min() < 0.5 * images.std()
    assert contrast.max() - contrast.min() > 0.05


class _RenderingGenerator(torch.nn.Module):
    """Stands in for a generator: draws the render of `z`'s intended attributes, or with
    `shuffle`, the render of another sample's attributes (another person)."""

    z_dim = 64
    resolution = 64

    def __init__(self, shuffle: bool = False) -> None:
        super().__init__()
        self.shuffle = shuffle

    def forward(self, z: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        from harness.demo.render import render
        from harness.demo.train_generator import intended_attributes

        if self.shuffle:
            z = z.roll(1, dims=0)
        return render(intended_attributes(z), size=self.resolution) * 2 - 1


@pytest.mark.parametrize("shuffle", [False, True])
def test_generator_evaluation_against_renders(shuffle):
    from harness.demo.evaluate_generator import (
        IDENTITY_TRAITS,
        MEASURED_ATTRIBUTES,
        UpsampledRegressor,
        evaluate_generator,
    )
    from harness.demo.manifest import WEIGHTS_DIR
    from harness.identity import load_identity_model
    from harness.suite.regions import DEMO_FACE_CROP

    torch.manual_seed(0)
    identity_model = load_identity_model(WEIGHTS_DIR / "identity.onnx", face_crop=DEMO_FACE_CROP)
    figures = evaluate_generator(
        _RenderingGenerator(shuffle),
        num_samples=64,
        regressor=HairstyleNet(num_classes=len(MEASURED_ATTRIBUTES)).eval(),
        trait_regressor=HairstyleNet(num_classes=len(IDENTITY_TRAITS)).eval(),
        identity_model=identity_model,
        cross_check_regressor=UpsampledRegressor(size=64).eval(),
    )
    similarity = figures["identity_similarity_to_render"]
    if not shuffle:
        # Samples equal to their renders: every figure equals the regressors' own ceiling.
        for name in MEASURED_ATTRIBUTES + IDENTITY_TRAITS:
            assert figures[f"r2.{name}"] == pytest.approx(figures[f"r2_on_renders.{name}"])
        for name in MEASURED_ATTRIBUTES:
            cross_check = figures[f"r2_cross_check.{name}"]
            assert cross_check == pytest.approx(figures[f"r2_cross_check_on_renders.{name}"])
        assert figures["mean_abs_pixel_error"] == 0.0
        assert similarity == pytest.approx(1.0, abs=1e-4)
    else:
        # Each sample shows another person: the demo identity model separates them.
        assert figures["mean_abs_pixel_error"] > 0.05
        assert similarity < 0.3


def test_generator_training_needs_identity_model(tmp_path):
    with pytest.raises(CheckpointError, match=r"identity.onnx not found: .*latentgate demo train identity"):
        train_component("generator", out=tmp_path, steps=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_start_option_is_generator_only(tmp_path):
    from harness.cli import main

    with pytest.raises(ConfigError, match="--start applies to the generator only, not to 'identity'"):
        train_component("identity", out=tmp_path, start=tmp_path / "generator.pt")
    assert main(["demo", "train", "classifiers", "--out", str(tmp_path), "--start", "g.pt"]) == 2
    assert list(tmp_path.iterdir()) == []
