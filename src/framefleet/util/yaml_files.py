"""Reading the YAML files users write (pipelines, service configs, hardware catalogues) with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from framefleet.errors import OptionError


def read_yaml_mapping(path: str | Path, flag: str, what: str = "a mapping") -> dict[str, Any]:
    """The mapping in a YAML file named by `flag` (e.g. "--pipeline"); an empty file is an empty mapping.
    Raises `OptionError` naming the flag and the file when it is missing, not YAML or not a mapping."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise OptionError(f"{flag} {path}: no such file") from None
    except (OSError, yaml.YAMLError) as exc:
        raise OptionError(f"{flag} {path}: cannot read it as YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise OptionError(f"{flag} {path}: expected {what}")
    return data
