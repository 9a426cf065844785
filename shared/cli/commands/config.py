"""`driftloop config`: every setting of the stack (environment variable, default, meaning).

The settings classes are discovered here, in the CLI, so that the library never imports a service.
"""

from __future__ import annotations

import importlib

from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings

from driftloop.shared.settings import SERVICES, CommonSettings, ServiceSettings


def settings_classes() -> list[type[BaseSettings]]:
    """CommonSettings and every service's settings class, for docs and checks."""
    found: list[type[BaseSettings]] = [CommonSettings]
    for name in SERVICES:
        module = importlib.import_module(f"driftloop.services.{name}.settings")
        found += [
            obj
            for obj in vars(module).values()
            if isinstance(obj, type)
            and issubclass(obj, ServiceSettings)
            and obj is not ServiceSettings
        ]
    return found


def settings_table() -> str:
    """The README's configuration table, generated from the settings classes."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for cls in settings_classes():
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name, info in cls.model_fields.items():
            sub = info.annotation
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                for child, child_info in sub.model_fields.items():
                    rows.append(_row(f"{prefix}{name}__{child}".upper(), child_info))
            else:
                rows.append(_row(f"{prefix}{name}".upper(), info))
    return "\n".join(rows) + "\n"


def _row(env: str, info: object) -> str:
    default = getattr(info, "default", None)
    if isinstance(default, SecretStr):
        default = "(secret)"
    text = " ".join((getattr(info, "description", None) or "").split()).replace("|", "\\|")
    shown = "" if default is None else str(default)
    return f"| `{env}` | `{shown}` | {text} |" if shown else f"| `{env}` | | {text} |"
