"""The one way checkpoint files are written and read: all or nothing, and errors that name the file.

Every checkpoint of the project (a policy's config.json and model.safetensors, a Stage II encoder's
config and weights, a training run's state) goes through `atomic`: the writer writes a
temporary path beside the target, which replaces the target only when the writing finished, so a
crash or a full disk never leaves a torn checkpoint behind. Readers raise `CheckpointError` saying
which file is missing or corrupt.
"""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or corrupt; the message says which file and what to do."""


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic(path: str | Path) -> Iterator[Path]:
    """Write the file or directory `path` all or nothing: the block writes the temporary path this
    yields (beside `path`); when the block ends, that replaces `path`. When it raises, `path` is left
    as it was. OSError (a full disk, no permission) becomes CheckpointError naming `path`."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove(tmp)
        try:
            yield tmp
        except BaseException:
            _remove(tmp)
            raise
    except OSError as e:
        raise CheckpointError(f"could not write {path} ({e}); check the disk space and permissions") from None
    move_into_place(tmp, path)


def move_into_place(tmp: str | Path, path: str | Path) -> None:
    """Replace the file or directory `path` with the finished `tmp`: the last step of `atomic`, for a writer
    whose temporary is filled by several processes (the training loop's state)."""
    tmp, path = Path(tmp), Path(path)
    try:
        if tmp.is_dir() and path.is_dir():  # a rename cannot replace a directory: set the old one aside first
            old = path.with_name(path.name + ".old")
            _remove(old)
            path.replace(old)
            tmp.replace(path)
            _remove(old)
        else:
            tmp.replace(path)
    except OSError as e:
        raise CheckpointError(f"could not write {path} ({e}); check the disk space and permissions") from None


def save_tensors(tensors: dict[str, torch.Tensor] | nn.Module, path: str | Path) -> Path:
    """Write a safetensors file atomically: a dict of tensors, or a module's state (tensors it shares, such
    as tied embeddings, stored once)."""
    from safetensors.torch import save_file, save_model

    path = Path(path)
    with atomic(path) as tmp:
        if isinstance(tensors, nn.Module):
            save_model(tensors, str(tmp), metadata={"format": "pt"})
        else:
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata={"format": "pt"})
    return path


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, on the CPU (all of it is read, so a torn file fails here)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; copy the checkpoint again or retrain")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path} is corrupt or not a safetensors file ({e}); copy it again or retrain") from None


def load_module(module: nn.Module, path: str | Path, strict: bool = True) -> tuple[list[str], list[str]]:
    """Load a safetensors file into `module` (tensors it shares restored from the one stored copy); returns
    the (missing, unexpected) names. CheckpointError when the file is missing or corrupt, or does not fit
    the module: tensors of other shapes, or with `strict` other names."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; copy the checkpoint again or retrain")
    try:
        missing, unexpected = load_model(module, str(path), strict=strict, device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is corrupt or not a safetensors file ({e}); copy it again or retrain") from None
    except RuntimeError as e:  # load_state_dict's: names or shapes differ
        raise CheckpointError(f"{path} does not match the model it is loaded into: {e}") from None
    return sorted(missing), sorted(unexpected)


def write_json(value, path: str | Path) -> Path:
    """Write `value` as indented JSON, atomically."""
    path = Path(path)
    with atomic(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2) + "\n")
    return path


def read_json(path: str | Path, what: str = "checkpoint file") -> dict:
    """The JSON object in `path`; CheckpointError naming the file when it is missing, not JSON or not an object."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; it is not a {what}")
    try:
        value = json.loads(path.read_text())
        if not isinstance(value, dict):
            raise TypeError(f"the top level is a {type(value).__name__}, not an object")
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path} is not a valid {what} ({type(e).__name__}: {e}); "
                              "fix it, re-save the checkpoint or retrain") from None
    return value
