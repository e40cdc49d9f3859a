"""`convert_checkpoint`: rewrite any supported generator checkpoint in the safetensors form."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from harness.errors import ConfigError
from harness.generator.loading import load_generator
from harness.generator.safetensors_io import write_safetensors

log = logging.getLogger(__name__)


def convert_checkpoint(src: str | Path, dst: str | Path, overwrite: bool = False) -> Path:
    """Load `src` (any format `load_generator` reads) and write it to `dst` as safetensors.

    `dst` must end in .safetensors. The file is written under a temporary name and renamed, so
    an interrupted conversion leaves no partial `dst`. Returns `dst`.
    """
    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise ConfigError(f"{dst}: the output name must end in .safetensors")
    if dst.is_dir():
        raise ConfigError(f"{dst}: is a directory; give a file name ending in .safetensors")
    if dst.exists() and not overwrite:
        raise ConfigError(f"{dst}: already exists; pass --force to overwrite it")
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise ConfigError(f"{dst}: is the source file; choose another output name")

    generator = load_generator(src, device="cpu")
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = dst.with_name(dst.name + ".partial")
    try:
        write_safetensors(generator, partial)
        os.replace(partial, dst)
    finally:
        partial.unlink(missing_ok=True)
    log.info(
        "converted %s (%s, sha256 %s) to %s",
        src,
        generator.source.format,
        generator.source.sha256,
        dst,
    )
    return dst
