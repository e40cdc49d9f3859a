"""NVIDIA network pickles: read without running code from the file; hostile pickles are rejected.

The pickles are written here in stylegan2-ada-pytorch's structure: every module reduces to
`torch_utils.persistence._reconstruct_persistent_obj(meta)` with its class source in
`meta["module_src"]` and its `__dict__` in `meta["state"]`. Fake `torch_utils` and `dnnlib`
modules exist in sys.modules only while a pickle is written.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from harness.errors import CheckpointError, UnsafeCheckpointError
from harness.generator import load_generator
from harness.generator.nvidia_pickle import read_network_pickle

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
NVIDIA_STATE = FIXTURES / "nvidia_ada_r32_state.pt"
NVIDIA_EXPECTED = FIXTURES / "nvidia_ada_r32_expected.npz"
TOLERANCE = 1e-4

BUFFER_NAMES = {"w_avg", "resample_filter", "noise_const"}
CLASS_NAMES = {
    "mapping": "MappingNetwork",
    "synthesis": "SynthesisNetwork",
    "torgb": "ToRGBLayer",
    "affine": "FullyConnectedLayer",
    "embed": "FullyConnectedLayer",
}


def _class_name(path: list[str]) -> str:
    if not path:
        return "Generator"
    last = path[-1]
    if last in CLASS_NAMES:
        return CLASS_NAMES[last]
    if last.startswith("fc"):
        return "FullyConnectedLayer"
    if last.startswith("conv"):
        return "SynthesisLayer"
    if last.startswith("b") and last[1:].isdigit():
        return "SynthesisBlock"
    raise AssertionError(f"no class for {path}")


class _PersistenceModules:
    """Fake torch_utils.persistence and dnnlib.util, registered only inside the `with` block."""

    def __init__(self, module_src: str) -> None:
        self.module_src = module_src
        persistence = types.ModuleType("torch_utils.persistence")
        torch_utils = types.ModuleType("torch_utils")
        torch_utils.persistence = persistence

        def _reconstruct_persistent_obj(meta):
            raise AssertionError("the tests only write these pickles")

        _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
        _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
        persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
        self.reconstruct = _reconstruct_persistent_obj

        dnnlib = types.ModuleType("dnnlib")
        util = types.ModuleType("dnnlib.util")
        easy_dict = type("EasyDict", (dict,), {"__module__": "dnnlib.util"})
        util.EasyDict = easy_dict
        dnnlib.util = util
        self.easy_dict = easy_dict
        self.patch = mock.patch.dict(
            sys.modules,
            {
                "torch_utils": torch_utils,
                "torch_utils.persistence": persistence,
                "dnnlib": dnnlib,
                "dnnlib.util": util,
            },
        )

    def __enter__(self):
        self.patch.__enter__()
        return self

    def __exit__(self, *exc_info):
        return self.patch.__exit__(*exc_info)


class _PersistentModule(torch.nn.Module):
    """A module that pickles the way persistence.persistent_class makes NVIDIA's modules pickle."""

    def __init__(self, class_name: str, modules: _PersistenceModules) -> None:
        super().__init__()
        self._persistent_meta = (class_name, modules)

    def __reduce__(self):
        class_name, modules = self._persistent_meta
        state = {key: value for key, value in self.__dict__.items() if key != "_persistent_meta"}
        meta = dict(
            type="class", version=6, module_src=modules.module_src, class_name=class_name, state=state
        )
        return (modules.reconstruct, (meta,))


def _build_tree(state_dict: dict, init_kwargs: dict, modules: _PersistenceModules) -> _PersistentModule:
    root = _PersistentModule("Generator", modules)
    for name, tensor in state_dict.items():
        *path, leaf = name.split(".")
        module = root
        for depth, part in enumerate(path):
            child = module._modules.get(part)
            if child is None:
                child = _PersistentModule(_class_name(path[: depth + 1]), modules)
                # NVIDIA layers keep gains as numpy float64 attributes.
                child.weight_gain = np.float64(1.0) / np.sqrt(np.float64(64))
                module.add_module(part, child)
            module = child
        if leaf in BUFFER_NAMES:
            module.register_buffer(leaf, tensor.clone())
        else:
            module.register_parameter(leaf, torch.nn.Parameter(tensor.clone(), requires_grad=False))
    kwargs = dict(init_kwargs)
    kwargs["mapping_kwargs"] = modules.easy_dict(kwargs.get("mapping_kwargs", {}))
    kwargs["synthesis_kwargs"] = modules.easy_dict(kwargs.get("synthesis_kwargs", {}))
    root._init_args = ()
    root._init_kwargs = modules.easy_dict(kwargs)
    return root


def write_network_pickle(
    path: Path,
    *,
    module_src: str = "class Generator: pass\n",
    protocol: int = pickle.DEFAULT_PROTOCOL,
    edit_state=None,
    edit_kwargs=None,
) -> Path:
    """Write the fixture generator as a stylegan2-ada-pytorch network pickle."""
    checkpoint = torch.load(NVIDIA_STATE, weights_only=True)
    state_dict = dict(checkpoint["state_dict"])
    init_kwargs = dict(checkpoint["init_kwargs"])
    if edit_state is not None:
        edit_state(state_dict)
    if edit_kwargs is not None:
        edit_kwargs(init_kwargs)
    with _PersistenceModules(module_src) as modules:
        g_ema = _build_tree(state_dict, init_kwargs, modules)
        discriminator = _PersistentModule("Discriminator", modules)
        discriminator.register_parameter("weight", torch.nn.Parameter(torch.randn(4, 3)))
        snapshot = {
            "training_set_kwargs": {"path": "ffhq.zip", "resolution": 32},
            "G": g_ema,
            "D": discriminator,
            "G_ema": g_ema,
            "augment_pipe": None,
        }
        with path.open("wb") as file:
            pickle.dump(snapshot, file, protocol=protocol)
    assert "torch_utils" not in sys.modules
    return path


class _ShellCommand:
    """Pickles to a call of `function(*args)`, which a plain pickle.load would make."""

    def __init__(self, function, *args) -> None:
        self.function = function
        self.args = args

    def __reduce__(self):
        return (self.function, self.args)


def _touch_command(marker: Path) -> str:
    return f"touch {marker}"


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_network_pickle_matches_reference(tmp_path, protocol):
    path = write_network_pickle(tmp_path / "network-snapshot.pkl", protocol=protocol)
    generator = load_generator(path)
    expected = np.load(NVIDIA_EXPECTED)
    assert generator.source.format == "nvidia-pickle"
    with torch.no_grad():
        ws = generator.mapping(torch.from_numpy(expected["z"]))
        img = generator.synthesis(ws)
        img_trunc = generator.synthesis(generator.mapping(torch.from_numpy(expected["z"]), truncation_psi=0.7))
        img_wplus = generator.synthesis(torch.from_numpy(expected["wplus"]))
    assert (ws - torch.from_numpy(expected["ws"])).abs().max().item() < TOLERANCE
    assert (img - torch.from_numpy(expected["img"])).abs().max().item() < TOLERANCE
    assert (img_trunc - torch.from_numpy(expected["img_trunc07"])).abs().max().item() < TOLERANCE
    assert (img_wplus - torch.from_numpy(expected["img_wplus"])).abs().max().item() < TOLERANCE


def test_network_pickle_recovers_init_kwargs_and_names(tmp_path):
    path = write_network_pickle(tmp_path / "network.pkl")
    init_kwargs, state_dict = read_network_pickle(path)
    reference = torch.load(NVIDIA_STATE, weights_only=True)
    assert init_kwargs["img_resolution"] == 32
    assert init_kwargs["mapping_kwargs"] == {"num_layers": 2}
    assert set(state_dict) == set(reference["state_dict"])
    for key, tensor in reference["state_dict"].items():
        assert torch.equal(state_dict[key], tensor), key


def test_module_source_is_never_executed(tmp_path):
    marker = tmp_path / "module_src_ran"
    source = f"open({str(marker)!r}, 'w').write('executed')\nclass Generator: pass\n"
    path = write_network_pickle(tmp_path / "network.pkl", module_src=source)
    generator = load_generator(path)
    assert generator.resolution == 32
    assert not marker.exists()


@pytest.mark.parametrize(
    "function, payload, qualified_name",
    [
        (os.system, "touch {marker}", f"{os.system.__module__}.system"),
        (subprocess.call, ["touch", "{marker}"], "subprocess.call"),
        (eval, "__import__('os').system('touch {marker}')", "builtins.eval"),
    ],
    ids=["os.system", "subprocess.call", "eval"],
)
def test_shell_payload_rejected_and_not_run(tmp_path, function, payload, qualified_name):
    marker = tmp_path / "payload_ran"
    if isinstance(payload, list):
        payload = [part.format(marker=marker) for part in payload]
    else:
        payload = payload.format(marker=marker)
    path = tmp_path / "evil.pkl"
    with path.open("wb") as file:
        pickle.dump({"G_ema": _ShellCommand(function, payload)}, file)
    with pytest.raises(UnsafeCheckpointError, match=rf"refusing to load: the pickle asks for {qualified_name}"):
        load_generator(path)
    assert not marker.exists()


def test_payload_nested_in_module_state_rejected(tmp_path):
    marker = tmp_path / "payload_ran"

    def add_payload(init_kwargs):
        init_kwargs["synthesis_kwargs"] = {"conv_clamp": _ShellCommand(os.system, _touch_command(marker))}

    path = write_network_pickle(tmp_path / "network.pkl", edit_kwargs=add_payload)
    with pytest.raises(UnsafeCheckpointError, match=r"\.system"):
        load_generator(path)
    assert not marker.exists()


def test_storage_bytes_with_payload_rejected(tmp_path):
    marker = tmp_path / "payload_ran"
    # Protocol 2 is what torch.save's legacy format uses for storage bytes.
    storage_bytes = pickle.dumps(_ShellCommand(os.system, _touch_command(marker)), protocol=2)
    path = tmp_path / "evil_storage.pkl"
    with path.open("wb") as file:
        pickle.dump({"G_ema": _ShellCommand(torch.storage._load_from_bytes, storage_bytes)}, file)
    with pytest.raises(UnsafeCheckpointError, match="tensor storage holds objects"):
        load_generator(path)
    assert not marker.exists()


def test_tensor_outside_storage_rejected(tmp_path):
    storage = torch.arange(4, dtype=torch.float32).untyped_storage()
    typed = torch.storage.TypedStorage(wrap_storage=storage, dtype=torch.float32, _internal=True)
    oversized = _ShellCommand(torch._utils._rebuild_tensor_v2, typed, 0, (100,), (1,), False, collections.OrderedDict())
    path = tmp_path / "oversized.pkl"
    with path.open("wb") as file:
        pickle.dump({"G_ema": oversized}, file)
    with pytest.raises(CheckpointError, match=r"reaches element 99 of a storage with 4 elements"):
        load_generator(path)


def test_torch_file_with_code_rejected(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pt"
    torch.save({"g_ema": _ShellCommand(os.system, _touch_command(marker)), "latent_avg": torch.zeros(4)}, path)
    with pytest.raises(CheckpointError, match="refusing to load: the file contains Python objects"):
        load_generator(path)
    assert not marker.exists()


def test_class_conditional_pickle_not_supported(tmp_path):
    def make_conditional(init_kwargs):
        init_kwargs["c_dim"] = 10

    def add_embedding(state_dict):
        state_dict["mapping.embed.weight"] = torch.zeros(64, 10)
        state_dict["mapping.embed.bias"] = torch.zeros(64)

    path = write_network_pickle(tmp_path / "conditional.pkl", edit_kwargs=make_conditional, edit_state=add_embedding)
    with pytest.raises(CheckpointError, match=r"class-conditional generators \(c_dim=10\) are not supported yet"):
        load_generator(path)


def test_pickle_without_g_ema_rejected(tmp_path):
    path = tmp_path / "other.pkl"
    with path.open("wb") as file:
        pickle.dump({"weights": [1, 2, 3]}, file)
    with pytest.raises(CheckpointError, match=r"contains no 'G_ema' \(found \['weights'\]\)"):
        load_generator(path)


def test_truncated_pickle_rejected(tmp_path):
    full = write_network_pickle(tmp_path / "network.pkl").read_bytes()
    path = tmp_path / "truncated.pkl"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_generator(path)


def test_restricted_reader_needs_no_torch_utils(tmp_path):
    path = write_network_pickle(tmp_path / "network.pkl")
    buffer = io.BytesIO(path.read_bytes())
    with pytest.raises(ModuleNotFoundError, match="torch_utils"):
        pickle.load(buffer)  # proves the file names NVIDIA's hook, which only a safe reader skips
    assert read_network_pickle(path)[0]["z_dim"] == 64
