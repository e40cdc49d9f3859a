"""Training of the demo generator by distillation from latent to rendered attributes.

The demo generator is a real StyleGAN2 (LatentGate's own module, saved in rosinality's format),
but it is not trained adversarially. Every latent z has a target: its first NUM_ATTRIBUTE_DIMS
coordinates, after the mapping network's own normalisation of z, are read as the standard
normal variables `u` of the renderer's prior (`attributes_from_normal`), and the generator is
trained to reproduce `render(attributes_from_normal(u))` with a pixel loss. The remaining z
coordinates carry nothing, and the noise inputs are switched off, so G(z) is deterministic.

So the generator's attribute distribution is the renderer's prior by construction, and the
quality figure that matters is how faithfully it reproduces each render
(`evaluate_generator`). The recipe (`train_demo_generator`) has five phases: two with the pixel
loss, one that adds losses read through an attribute regressor, one that adds the demo
identity model's ArcFace similarity, so that a sample shows the person its latent was meant to,
and a last one like it that weighs the hair attributes the others left behind.
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from harness.demo.attributes import NUM_ATTRIBUTE_DIMS, AvatarAttributes, attributes_from_normal
from harness.demo.optimization import optimizer_step
from harness.demo.render import render
from harness.generator import Architecture, Generator, build_generator, save_rosinality_checkpoint
from harness.identity import IdentityModel

log = logging.getLogger(__name__)

DEMO_ARCHITECTURE = Architecture(
    resolution=64,
    z_dim=64,
    w_dim=64,
    num_mapping_layers=4,
    mapping_hidden_dim=64,
    channels={4: 128, 8: 128, 16: 96, 32: 64, 64: 32},
)


def intended_attributes(z: torch.Tensor) -> AvatarAttributes:
    """Return the attributes a latent z `[N, z_dim]` is trained to render.

    z is normalised to unit second moment, as StyleGAN2's mapping network does first, so the
    target depends only on what the mapping network sees.
    """
    return attributes_from_normal(_normalised(z)[:, :NUM_ATTRIBUTE_DIMS])


def _normalised(z: torch.Tensor) -> torch.Tensor:
    """Scale each latent to unit second moment, as the mapping network's first step does."""
    return z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)


def _downsampled_l1(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 at full, half and quarter resolution: coarse layout converges before fine texture."""
    loss = F.l1_loss(output, target)
    for _ in range(2):
        output, target = F.avg_pool2d(output, 2), F.avg_pool2d(target, 2)
        loss = loss + F.l1_loss(output, target)
    return loss


def train_generator(
    architecture: Architecture = DEMO_ARCHITECTURE,
    steps: int = 6000,
    batch_size: int = 32,
    learning_rate: float = 1e-2,
    mapping_learning_rate_factor: float = 10.0,
    seed: int = 0,
    progress: bool = True,
    checkpoint_path: Path | None = None,
    checkpoint_every: int = 1000,
    network: Generator | None = None,
) -> Generator:
    """Distil the renderer into a StyleGAN2 generator and return it in eval mode.

    With `network`, training continues from that generator (its architecture replaces
    `architecture`) with a fresh optimiser and schedule.

    The mapping network's weights are stored divided by its learning-rate multiplier (0.01),
    so Adam moves its effective weights 100 times slower than the synthesis network's; its
    learning rate is raised by `mapping_learning_rate_factor` to learn the prior's non-linear
    quantile functions within a short run. With `checkpoint_path`, the generator is also saved
    there (rosinality format, w_avg estimated) every `checkpoint_every` steps.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    if network is None:
        network = build_generator(architecture)
    architecture = network.architecture
    assert architecture.z_dim >= NUM_ATTRIBUTE_DIMS
    optimizer, schedule = _optimizer_and_schedule(
        network, learning_rate, mapping_learning_rate_factor, steps, warmup_fraction=0.05
    )

    network.train()
    bar = tqdm(range(steps), desc="generator", disable=not progress)
    for step in bar:
        z = torch.randn(batch_size, architecture.z_dim, generator=generator)
        target = render(intended_attributes(z), size=architecture.resolution) * 2 - 1
        output = network(z, noise_mode="none")
        loss = _downsampled_l1(output, target)
        optimizer_step(loss, optimizer, schedule)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if checkpoint_path is not None and (step + 1) % checkpoint_every == 0:
            _save_checkpoint(network, checkpoint_path)
            log.info("step %d: loss %.4f, checkpoint written to %s", step + 1, loss.item(), checkpoint_path)

    network.eval().requires_grad_(False)
    network.estimate_w_avg()
    return network


def _optimizer_and_schedule(
    network: Generator,
    learning_rate: float,
    mapping_factor: float,
    steps: int,
    warmup_fraction: float,
    extra_parameters: tuple[list[torch.nn.Parameter], float] | None = None,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.OneCycleLR]:
    """Make every parameter trainable except the noise strengths, which are set to 0 and frozen.

    Returns Adam, with the mapping network's rate raised by `mapping_factor`, and a one-cycle
    schedule. `extra_parameters` (parameters, learning rate) adds a group for modules that are
    trained along with the generator but not saved.
    """
    network.requires_grad_(True)
    for name, parameter in network.named_parameters():
        if name.endswith("noise_strength"):
            parameter.data.zero_()
            parameter.requires_grad_(False)
    mapping = [p for p in network.mapping.parameters() if p.requires_grad]
    synthesis = [p for p in network.synthesis.parameters() if p.requires_grad]
    groups = [(mapping, learning_rate * mapping_factor), (synthesis, learning_rate)]
    if extra_parameters is not None:
        groups.append(extra_parameters)
    rates = [rate for _, rate in groups]
    optimizer = torch.optim.Adam(
        [{"params": params, "lr": rate} for params, rate in groups], betas=(0.9, 0.99)
    )
    # OneCycleLR (torch 2.14) divides by zero when its warm-up ends one step in, as it does for
    # 20 steps at a fraction of 0.05, so such a warm-up takes two steps instead.
    if math.isclose(warmup_fraction * steps, 1.0) and steps > 2:
        warmup_fraction = 2.0 / steps
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, rates, total_steps=steps, pct_start=warmup_fraction
    )
    return optimizer, schedule


def _save_checkpoint(network: Generator, path: Path) -> None:
    """Save a copy in rosinality's format with w_avg estimated, leaving training undisturbed."""
    snapshot = copy.deepcopy(network).eval().requires_grad_(False)
    snapshot.estimate_w_avg()
    save_rosinality_checkpoint(snapshot, path)


def continue_with_identity(
    network: Generator,
    identity_model: IdentityModel,
    teacher: torch.nn.Module,
    steps: int = 3000,
    batch_size: int = 16,
    learning_rate: float = 1e-3,
    mapping_learning_rate_factor: float = 100.0,
    identity_weight: float = 1.0,
    readout_weight: float = 1.0,
    feature_weight: float = 1.0,
    attribute_weight: float = 4.0,
    attribute_loss_weights: tuple[float, ...] | None = None,
    attribute_readout_weight: float = 0.0,
    seed: int = 31,
    progress: bool = True,
) -> Generator:
    """Last phase: continue training so that samples show the person their latent was meant to show.

    The refinement's losses stay (pixels, and the teacher regressor's activations and readout,
    here of TEACHER_ATTRIBUTES, which include the identity traits). Two losses join them. The
    first is 1 minus the ArcFace similarity between G(z) and the render of z (demo face crop).
    The second is the squared error of a linear readout from w to the prior's standard normal
    variables `u`, so that the mapping network passes every attribute on. The readout is
    discarded afterwards. The mapping network's rate is 100 times the synthesis network's here,
    against 10 in the earlier phases, which left it dropping face shape and fringe.

    From the generator of the first three phases, the defaults raised `evaluate_generator`'s
    R^2 of face width from 0.07 to 0.73, face height from 0.00 to 0.77 and eye spacing from 0.03
    to 0.31. The similarity of a sample to its render rose from 0.07 to 0.67. Hair did not
    suffer: R^2 of curl rose from 0.12 to 0.30 and braids from 0.64 to 0.74, hair length and
    fringe stayed (0.88, 0.17), and skin tone fell from 0.93 to 0.90.

    `attribute_loss_weights` weighs the teacher's attribute loss per TEACHER_ATTRIBUTES entry
    (default: equal). With `attribute_readout_weight` above 0, a second linear readout from w
    must give the attribute values themselves, not only the normal variables.

    The recipe runs this phase twice: first with the defaults, then as the hair phase
    (HAIR_PHASE_SETTINGS), which weighs curl, braids, fringe and eye spacing up and adds the
    attribute readout.
    """
    from harness.demo.evaluate_generator import TEACHER_ATTRIBUTES, _targets

    embedder = identity_model.torch_module()
    features = _TeacherFeatures(teacher)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    readout = torch.nn.Linear(network.architecture.w_dim, NUM_ATTRIBUTE_DIMS)
    readout_parameters = list(readout.parameters())
    attribute_readout = None
    if attribute_readout_weight > 0:
        attribute_readout = torch.nn.Linear(network.architecture.w_dim, len(TEACHER_ATTRIBUTES))
        readout_parameters += list(attribute_readout.parameters())
    loss_weights = None if attribute_loss_weights is None else torch.tensor(attribute_loss_weights)
    optimizer, schedule = _optimizer_and_schedule(
        network,
        learning_rate,
        mapping_learning_rate_factor,
        steps,
        warmup_fraction=0.1,
        extra_parameters=(readout_parameters, 1e-2),
    )

    network.train()
    bar = tqdm(range(steps), desc="generator identity phase", disable=not progress)
    for step in bar:
        z = torch.randn(batch_size, network.z_dim, generator=generator)
        u = _normalised(z)[:, :NUM_ATTRIBUTE_DIMS]
        attributes = attributes_from_normal(u)
        target = render(attributes, size=network.resolution) * 2 - 1
        ws = network.mapping(z)
        output = network.synthesis(ws, noise_mode="none")
        with torch.no_grad():
            target_embedding = embedder(target)
        similarity = F.cosine_similarity(embedder(output), target_embedding, dim=1)
        identity_loss = (1 - similarity).mean()
        expected = _targets(attributes, TEACHER_ATTRIBUTES)
        feature_loss, attribute_loss = _teacher_losses(features, output, target, expected, loss_weights)
        loss = (
            _downsampled_l1(output, target)
            + identity_weight * identity_loss
            + readout_weight * F.mse_loss(readout(ws[:, 0]), u)
            + feature_weight * feature_loss
            + attribute_weight * attribute_loss
        )
        if attribute_readout is not None:
            loss = loss + attribute_readout_weight * F.mse_loss(attribute_readout(ws[:, 0]), expected)
        optimizer_step(loss, optimizer, schedule)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}", identity=f"{identity_loss.item():.3f}")

    network.eval().requires_grad_(False)
    network.estimate_w_avg()
    return network


class _TeacherFeatures(torch.nn.Module):
    """A frozen attribute regressor that returns its block activations and its outputs."""

    def __init__(self, regressor: torch.nn.Module) -> None:
        super().__init__()
        self.regressor = regressor.eval().requires_grad_(False)

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        activations = []
        x = images
        for layer in self.regressor.features:
            x = layer(x)
            if isinstance(layer, torch.nn.ReLU):
                activations.append(x)
        return activations, self.regressor.head(x)


def _teacher_losses(
    features: _TeacherFeatures,
    output: torch.Tensor,
    target: torch.Tensor,
    expected: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the teacher's feature loss and attribute loss of `output` against the render.

    The feature loss compares block activations, each normalised by the render's mean
    activation. The attribute loss is the squared error of the teacher's readout of `output`
    against `expected` `[N, outputs]`, each column multiplied by its entry of `weights` when
    given.
    """
    with torch.no_grad():
        target_activations, _ = features(target)
    activations, readout = features(output)
    feature_loss = sum(
        (a - t).abs().mean() / (t.abs().mean() + 1e-6) for a, t in zip(activations, target_activations)
    ) / len(activations)
    if weights is None:
        return feature_loss, F.mse_loss(readout, expected)
    return feature_loss, ((readout - expected).square() * weights).mean()


def refine_generator(
    network: Generator,
    teacher: torch.nn.Module,
    steps: int = 2500,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    mapping_learning_rate_factor: float = 10.0,
    feature_weight: float = 1.0,
    attribute_weight: float = 4.0,
    seed: int = 1,
    progress: bool = True,
) -> Generator:
    """Third phase: keep the pixel loss and add losses read through an attribute regressor.

    A pixel loss alone draws hair curls and braids as their blurred average, because their fine
    pattern is hard to place exactly. Here the generator also matches the regressor's block
    activations on the render (normalised per block by the render's mean activation), and the
    regressor's attribute readout of G(z) must equal the attributes z was meant to have
    (MEASURED_ATTRIBUTES of evaluate_generator). The teacher regressor is trained with a
    different seed from the one `evaluate_generator` trains to score the result.
    """
    from harness.demo.evaluate_generator import MEASURED_ATTRIBUTES, _targets

    features = _TeacherFeatures(teacher)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer, schedule = _optimizer_and_schedule(
        network, learning_rate, mapping_learning_rate_factor, steps, warmup_fraction=0.1
    )

    network.train()
    bar = tqdm(range(steps), desc="generator refinement", disable=not progress)
    for step in bar:
        z = torch.randn(batch_size, network.z_dim, generator=generator)
        attributes = intended_attributes(z)
        target = render(attributes, size=network.resolution) * 2 - 1
        output = network(z, noise_mode="none")
        expected = _targets(attributes, MEASURED_ATTRIBUTES)
        feature_loss, attribute_loss = _teacher_losses(features, output, target, expected)
        loss = (
            _downsampled_l1(output, target)
            + feature_weight * feature_loss
            + attribute_weight * attribute_loss
        )
        optimizer_step(loss, optimizer, schedule)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}", features=f"{feature_loss.item():.3f}")

    network.eval().requires_grad_(False)
    network.estimate_w_avg()
    return network


# The demo generator's recipe: two pixel-loss phases (the second continues the first at a lower
# learning rate), the regressor-guided refinement, the identity phase, then the identity phase
# again as the hair phase. Step counts of the five phases; `train_demo_generator(steps=N)`
# scales them all by N / 6000.
RECIPE_STEPS = (6000, 6000, 2500, 3000, 6000)
RECIPE_LEARNING_RATES = (1e-2, 3e-3)
# The hair phase's settings of `continue_with_identity`. The teacher's attribute loss is
# weighed per TEACHER_ATTRIBUTES entry (skin tone, hair length, curl, braids, fringe, face
# width, face height, eye spacing), so that the attributes the identity phase left furthest
# from their renders count more. The feature loss, which pulls G(z)'s texture towards the
# render's, counts twice. On the generator of the first four phases, this phase raised
# evaluate_generator's R^2 of curl from 0.37 to 0.64, braids from 0.73 to 0.86 and fringe
# from 0.26 to 0.77, on renders with hair textures of 2 to 4.5 px. The textures were then
# coarsened to 6.4 and 16 px. Read by a scoring regressor trained on the new renders, a second
# hair phase on that generator raised curl from -0.69 to 0.92, fringe from 0.66 to 0.86 and
# braids from 0.47 to 0.67. NOTE: the teacher shares the scoring regressor's
# architecture. The cross-check regressor (MobileNetV3-small) reads curl at 0.92 too, but
# braids at 0.38 and fringe at 0.69, so the scoring R^2 overstates braids and fringe.
HAIR_PHASE_SETTINGS = {
    "attribute_loss_weights": (1.0, 1.0, 8.0, 3.0, 8.0, 1.0, 1.0, 2.0),
    "feature_weight": 2.0,
    "attribute_readout_weight": 1.0,
}


def train_demo_generator(
    identity_model: IdentityModel,
    seed: int = 0,
    steps: int | None = None,
    progress: bool = True,
    start: Generator | None = None,
) -> Generator:
    """Train the committed demo generator from scratch, or run its last phase from `start`.

    `start` is a generator that has been through every phase but the last (the hair phase),
    and only the hair phase runs on it.

    NOTE: the committed generator was made in four runs: the first three phases, then the
    identity phase with `start`, then the hair phase with `start`, all on renders whose hair
    textures had periods of 2 to 4.5 px. The fourth run is the hair phase once more, with
    `start`, on the current renders (`started_from` in the manifest names that start). The five
    phases have not been run end to end in one go, nor on the current renders alone.
    """
    from harness.demo.evaluate_generator import TEACHER_ATTRIBUTES, train_attribute_regressor

    scale = 1.0 if steps is None else steps / RECIPE_STEPS[0]
    phase_steps = [max(1, round(count * scale)) for count in RECIPE_STEPS]
    # Every trainer seeds itself, so training the identity phases' teacher first changes no
    # result of the phases before them.
    identity_teacher = train_attribute_regressor(
        seed=seed + 7, attribute_names=TEACHER_ATTRIBUTES, progress=progress
    )
    network = start
    if network is None:
        network = train_generator(
            steps=phase_steps[0], learning_rate=RECIPE_LEARNING_RATES[0], seed=seed, progress=progress
        )
        network = train_generator(
            steps=phase_steps[1],
            learning_rate=RECIPE_LEARNING_RATES[1],
            seed=seed + 2,
            progress=progress,
            network=network,
        )
        # The teachers' seeds differ from evaluate_generator's regressors (4242, 4243), which
        # score the result.
        teacher = train_attribute_regressor(seed=seed + 7, progress=progress)
        network = refine_generator(network, teacher, steps=phase_steps[2], seed=seed + 1, progress=progress)
        network = continue_with_identity(
            network, identity_model, identity_teacher, steps=phase_steps[3], seed=seed + 31, progress=progress
        )
    return continue_with_identity(
        network,
        identity_model,
        identity_teacher,
        steps=phase_steps[4],
        seed=seed + 37,
        progress=progress,
        **HAIR_PHASE_SETTINGS,
    )
