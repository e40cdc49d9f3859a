"""Read NVlabs/stylegan2-ada-pytorch network pickles without running code from the file.

A network pickle is `pickle.dump` of a dict whose `G_ema` (like `G`, `D`, `augment_pipe`) is a
module of a class decorated by `torch_utils.persistence.persistent_class`. Such an object
pickles as a call `_reconstruct_persistent_obj(meta)`, where `meta` contains the source code of
the class's module (`module_src`), `class_name` and `state` (the instance `__dict__`
with `_parameters`, `_buffers`, `_modules`, `_init_kwargs`, ...). NVIDIA's loader executes
`module_src`; this reader never does.

`find_class` resolves only the names in `_ALLOWED_GLOBALS`. The persistence hook becomes a
placeholder that keeps `class_name` and `state`. Tensors and storages are rebuilt by functions
of this module that check their arguments, and storage bytes are read with
`torch.load(weights_only=True)`. Containers and numpy scalars map to their plain types. Any
other global (os.system, builtins.eval, subprocess.Popen, ...) raises UnsafeCheckpointError
naming it, before anything from the file is called.
"""

from __future__ import annotations

import collections
import io
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.errors import CheckpointError, LatentGateError, UnsafeCheckpointError

try:  # numpy >= 2 moved the pickling helpers; files written under numpy 1 name numpy.core
    from numpy._core.multiarray import _reconstruct as _numpy_reconstruct
    from numpy._core.multiarray import scalar as _numpy_scalar
except ImportError:  # pragma: no cover - numpy 1
    from numpy.core.multiarray import _reconstruct as _numpy_reconstruct
    from numpy.core.multiarray import scalar as _numpy_scalar

# Positional order of stylegan2-ada-pytorch's Generator.__init__, for pickles whose
# `_init_args` is not empty.
_GENERATOR_ARG_NAMES = (
    "z_dim",
    "c_dim",
    "w_dim",
    "img_resolution",
    "img_channels",
    "mapping_kwargs",
    "synthesis_kwargs",
)


class PersistentObject:
    """Placeholder for an object that `torch_utils.persistence` would rebuild from source."""

    def __init__(self, class_name: str, state: dict[str, Any]) -> None:
        self.class_name = class_name
        self.state = state

    def __repr__(self) -> str:
        return f"PersistentObject({self.class_name})"


class _EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict (a dict with attribute access) that keeps its items."""


def _reconstruct_persistent_obj(meta: object) -> PersistentObject:
    if not isinstance(meta, dict):
        raise CheckpointError(f"persistent object metadata is a {type(meta).__name__}, not a dict")
    class_name = meta.get("class_name")
    state = meta.get("state")
    if not isinstance(class_name, str) or not isinstance(state, dict):
        raise CheckpointError(
            "persistent object metadata lacks a class_name string or a state dict"
        )
    # meta["module_src"] is the class's Python source. It is deliberately left unread.
    return PersistentObject(class_name, state)


def _load_storage_from_bytes(data: object) -> torch.storage.TypedStorage:
    if not isinstance(data, bytes):
        raise CheckpointError(f"storage payload is a {type(data).__name__}, not bytes")
    try:
        storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise UnsafeCheckpointError(
            f"refusing to load: a tensor storage holds objects that torch.load(weights_only=True) "
            f"rejects ({str(error).strip().splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, ValueError) as error:
        raise CheckpointError(f"a tensor storage is truncated or corrupt ({error})") from None
    if not isinstance(storage, torch.storage.TypedStorage):
        raise CheckpointError(f"storage payload contains a {type(storage).__name__}, not a storage")
    return storage


def _rebuild_tensor(
    storage: object,
    storage_offset: object,
    size: object,
    stride: object,
    requires_grad: object = False,
    backward_hooks: object = None,
    metadata: object = None,
) -> torch.Tensor:
    """Rebuild a tensor view of a storage after checking that it stays inside the storage.

    `requires_grad`, `backward_hooks` and `metadata` from the file are dropped: hooks are
    callables, and a loaded generator needs none of them.
    """
    if not isinstance(storage, torch.storage.TypedStorage):
        raise CheckpointError(f"tensor storage is a {type(storage).__name__}, not a storage")
    if not _is_int_tuple(size) or not _is_int_tuple(stride) or len(size) != len(stride):
        raise CheckpointError(f"invalid tensor size {size!r} or stride {stride!r}")
    if isinstance(storage_offset, bool) or not isinstance(storage_offset, int) or storage_offset < 0:
        raise CheckpointError(f"invalid tensor storage offset {storage_offset!r}")
    if any(dim < 0 for dim in size) or any(step < 0 for step in stride):
        raise CheckpointError(f"negative tensor size {size!r} or stride {stride!r}")
    # Tensor.set_ does not check bounds, so a crafted size could read outside the storage.
    if all(dim > 0 for dim in size):
        last_element = storage_offset + sum((dim - 1) * step for dim, step in zip(size, stride))
        if last_element >= storage.size():
            raise CheckpointError(
                f"tensor of size {list(size)} at offset {storage_offset} reaches element "
                f"{last_element} of a storage with {storage.size()} elements"
            )
    return torch.empty(0, dtype=storage.dtype).set_(storage, storage_offset, size, stride)


def _rebuild_parameter(data: object, requires_grad: object = False, backward_hooks: object = None) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise CheckpointError(f"parameter data is a {type(data).__name__}, not a tensor")
    return data


def _rebuild_parameter_with_state(
    data: object, requires_grad: object = False, backward_hooks: object = None, state: object = None
) -> torch.Tensor:
    return _rebuild_parameter(data)


def _latin1_bytes(text: object, encoding: object) -> bytes:
    """Decode the form protocol 2 writes bytes in: `_codecs.encode(str, "latin1")`."""
    if not isinstance(text, str) or encoding != "latin1":
        raise CheckpointError(f"unexpected _codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    # Protocol 2 names builtins by their Python 2 module and writes bytes through _codecs.
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("_codecs", "encode"): _latin1_bytes,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib", "EasyDict"): _EasyDict,
    # Module attributes such as weight_gain are numpy float64 scalars.
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedReader, path: Path) -> None:
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise UnsafeCheckpointError(
                f"{self._path}: refusing to load: the pickle asks for {module}.{name}, which is "
                "not among the tensor, container and stylegan2-ada-pytorch persistence types "
                "this reader allows; a pickle can run any code when loaded normally, so do not "
                "open this file with pickle. If you trust its origin, export G_ema's "
                "init_kwargs and state_dict with torch.save and load that instead"
            )
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError(
            f"{self._path}: the pickle uses persistent ids, which stylegan2-ada-pytorch network "
            "pickles do not; if this is a torch.save file, it is corrupt"
        )


def read_network_pickle(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Return `G_ema`'s constructor arguments and its state dict under NVIDIA's names."""
    try:
        with path.open("rb") as file, warnings.catch_warnings():
            # Rebuilding tensors goes through TypedStorage, which torch reports as deprecated.
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
            data = _RestrictedUnpickler(file, path).load()
    except LatentGateError as error:
        if str(path) not in str(error):
            raise type(error)(f"{path}: {error}") from None
        raise
    except (pickle.UnpicklingError, EOFError) as error:
        raise CheckpointError(
            f"{path}: cannot unpickle the file, it is truncated or not a pickle ({error}); "
            "download or copy it again"
        ) from None
    except (
        AttributeError,
        IndexError,
        KeyError,
        TypeError,
        ValueError,
        RuntimeError,
        MemoryError,
        RecursionError,
    ) as error:
        raise CheckpointError(
            f"{path}: the pickle is malformed ({type(error).__name__}: {error}); it is not a "
            "stylegan2-ada-pytorch network pickle"
        ) from None

    if not isinstance(data, dict) or "G_ema" not in data:
        found = sorted(str(key) for key in data) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(
            f"{path}: the pickle contains no 'G_ema' (found {found}); expected a "
            "stylegan2-ada-pytorch network pickle such as network-snapshot-*.pkl"
        )
    g_ema = data["G_ema"]
    if not isinstance(g_ema, PersistentObject) or g_ema.class_name != "Generator":
        raise CheckpointError(
            f"{path}: G_ema is {g_ema!r}, not a stylegan2-ada-pytorch Generator"
        )
    return _init_kwargs(g_ema, path), _collect_state_dict(g_ema, "", path)


def _init_kwargs(g_ema: PersistentObject, path: Path) -> dict[str, Any]:
    kwargs = g_ema.state.get("_init_kwargs", {})
    args = g_ema.state.get("_init_args", ())
    if not isinstance(kwargs, dict) or not isinstance(args, (tuple, list)):
        raise CheckpointError(f"{path}: G_ema's _init_kwargs or _init_args is malformed")
    if len(args) > len(_GENERATOR_ARG_NAMES):
        raise CheckpointError(f"{path}: G_ema has {len(args)} positional constructor arguments")
    merged = dict(zip(_GENERATOR_ARG_NAMES, args))
    merged.update(kwargs)
    return merged


def _collect_state_dict(obj: PersistentObject, prefix: str, path: Path) -> dict[str, torch.Tensor]:
    """Flatten `_parameters` and persistent `_buffers` of a module tree into a state dict."""
    state = obj.state
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    result: dict[str, torch.Tensor] = {}
    for table in ("_parameters", "_buffers"):
        entries = state.get(table) or {}
        if not isinstance(entries, dict):
            raise CheckpointError(f"{path}: {prefix or 'G_ema.'}{table} is not a dict")
        for name, value in entries.items():
            if value is None or (table == "_buffers" and name in non_persistent):
                continue
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(
                    f"{path}: {prefix}{name} is a {type(value).__name__}, not a tensor"
                )
            result[f"{prefix}{name}"] = value
    children = state.get("_modules") or {}
    if not isinstance(children, dict):
        raise CheckpointError(f"{path}: {prefix or 'G_ema.'}_modules is not a dict")
    for name, child in children.items():
        if child is None:
            continue
        if not isinstance(child, PersistentObject):
            raise CheckpointError(
                f"{path}: submodule {prefix}{name} is a {type(child).__name__}, not a "
                "stylegan2-ada-pytorch persistent module"
            )
        result.update(_collect_state_dict(child, f"{prefix}{name}.", path))
    return result


def _is_int_tuple(value: object) -> bool:
    return isinstance(value, (tuple, list)) and all(
        isinstance(item, int) and not isinstance(item, bool) for item in value
    )
