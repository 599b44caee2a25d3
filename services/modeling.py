"""Config + safetensors persistence shared by every model class (the diffusers pattern).

A model directory holds `config.json` (validated by the model's pydantic config class),
`model.safetensors` and, for shipped checkpoints, `MANIFEST.json`. Loading never unpickles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar, TypeVar

import torch
from pydantic import BaseModel, ValidationError
from safetensors.torch import load_file, save_file

from services.manifest import MANIFEST, verify_manifest

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
M = TypeVar("M", bound="ConfigModel")


class CheckpointError(ValueError):
    """A checkpoint directory is missing files, has a bad config, or weights that do not fit."""


class ConfigModel(torch.nn.Module):
    config_class: ClassVar[type[BaseModel]]

    def __init__(self, config: BaseModel) -> None:
        super().__init__()
        self.config = config

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_NAME).write_text(self.config.model_dump_json(indent=2) + "\n")
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_NAME))
        return directory

    @classmethod
    def load_config(cls, directory: str | Path) -> BaseModel:
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise CheckpointError(f"{directory}: missing {CONFIG_NAME}")
        try:
            return cls.config_class.model_validate(json.loads(path.read_text()))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise CheckpointError(f"{path}: invalid {cls.__name__} config: {exc}") from exc

    @classmethod
    def from_pretrained(cls: type[M], directory: str | Path, device: str | torch.device = "cpu") -> M:
        directory = Path(directory)
        if not directory.is_dir():
            raise CheckpointError(f"checkpoint directory {directory} does not exist")
        if (directory / MANIFEST).is_file():
            verify_manifest(directory)
        model = cls(cls.load_config(directory))
        weights = directory / WEIGHTS_NAME
        if not weights.is_file():
            raise CheckpointError(f"{directory}: missing {WEIGHTS_NAME}")
        state = load_file(str(weights))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{weights}: weights do not match {cls.__name__} (missing {missing[:5]}, unexpected {unexpected[:5]})")
        return model.to(device).eval()
