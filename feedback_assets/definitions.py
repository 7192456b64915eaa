"""The code location Dagster loads (`dagster dev`, workspace.yaml, `dagster job execute -m`): every
module of feedback_assets/defs/ merged, with the resources and the executor every job shares."""

from __future__ import annotations

import importlib
import pkgutil

import dagster as dg

from feedback_assets import defs as defs_folder
from feedback_assets.resources import resources_for, settings_in_effect


def _defs_folder() -> list[dg.Definitions]:
    """Each module's `defs`, found by walking the folder, as `dg.load_from_defs_folder` would; that
    function finds the folder through pyproject.toml's [tool.dg], which an installed package (the
    image) does not carry beside it (docs/decisions.md, "The definitions folder")."""
    modules = [
        importlib.import_module(f"{defs_folder.__name__}.{m.name}") for m in pkgutil.iter_modules(defs_folder.__path__)
    ]
    return [module.defs for module in modules]


defs = dg.Definitions.merge(
    *_defs_folder(),
    dg.Definitions(
        # The settings as the code location loads them, shown on the resource's page; the key (and a
        # source URL, which may hold a password) by the name of its variable, never its value.
        resources=resources_for(settings_in_effect()),
        # Polars already uses every core inside a step; a process per step only adds seconds of
        # start-up to every run (docs/decisions.md, "In-process executor": 20 s against 4.8 s).
        executor=dg.in_process_executor,
    ),
)
