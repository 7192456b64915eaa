"""The error every setting check raises; in a module of its own so that the parsers of single
settings (source_url.py) and the settings model (settings.py) can share it."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting is missing or wrong; the message names the setting and what to do."""
