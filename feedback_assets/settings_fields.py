"""The machinery of the settings model (settings.py, which declares each FEEDBACK_* variable): the
`Setting` a model field carries, reading a model's fields from explicit values, the environment and
the defaults, and the checks of each kind of value: text from the environment, or a typed value
from a resource field, in; the typed value, or a ConfigError that names the variable and never
echoes a secret, out."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass
from typing import Any, Generic, Literal, TypeVar, get_args

from pydantic import BaseModel, GetCoreSchemaHandler, ValidationError
from pydantic_core import core_schema

from feedback_assets.errors import ConfigError
from feedback_assets.schemas import TRAINING_COLUMNS
from feedback_assets.source_url import SourceLocation, parse_source_url

# A resource field gives a typed value, the environment gives text; both are checked the same way.
SettingValue = str | int | bool | float
Value = TypeVar("Value")

# Exported columns an attacker may know of a person; `conditions` is the sensitive attribute that
# l-diversity measures within their groups, so it cannot be one of them (docs/privacy.md).
SENSITIVE_ATTRIBUTE = "conditions"
QUASI_IDENTIFIER_CHOICES = tuple(name for name in TRAINING_COLUMNS if name != SENSITIVE_ATTRIBUTE)
DEFAULT_QUASI_IDENTIFIERS = ("age_range", "feedback_created_at", "analysis_created_at")
MIN_KEY_HEX_DIGITS = 64


def parse_hmac_key(name: str, raw: SettingValue) -> bytes:
    """Decode the pseudonymisation key; the message never echoes any part of it."""
    hint = (
        f"set {name} to at least {MIN_KEY_HEX_DIGITS} hex digits, "
        "e.g. the output of `python -c 'import secrets; print(secrets.token_hex(32))'`"
    )
    text = str(raw).strip()
    if not text:
        raise ConfigError(f"{name} is not set: {hint}")
    if any(c not in "0123456789abcdefABCDEF" for c in text):
        raise ConfigError(f"{name} is not hexadecimal: {hint}")
    if len(text) < MIN_KEY_HEX_DIGITS:
        raise ConfigError(f"{name} has {len(text)} hex digits, fewer than {MIN_KEY_HEX_DIGITS}: {hint}")
    if len(text) % 2:
        raise ConfigError(f"{name} has an odd number of hex digits: {hint}")
    return bytes.fromhex(text)


def parse_label(name: str, raw: SettingValue) -> str:
    label = str(raw).strip()
    if not label or not all(c.isalnum() or c in "-_." for c in label):
        raise ConfigError(f"{name} must be a short label of letters, digits, '-', '_' or '.'")
    return label


def parse_bool(name: str, raw: SettingValue) -> bool:
    if isinstance(raw, bool):
        return raw
    value = str(raw).strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


def _converted(name: str, raw: SettingValue, kind: str, convert: Callable[[str | int | float], Value]) -> Value:
    try:
        return convert(raw.strip() if isinstance(raw, str) else raw)
    except ValueError:
        raise ConfigError(f"{name} must be {kind}, not {raw!r}") from None


@dataclass(frozen=True)
class Whole:
    """A whole number from `low` to `high`. The messages read `{name} must be <kind>, not <the text
    given>` and `{name} must be <within>, not <the number>`; without `within`, a number out of bounds
    gets the first message too."""

    kind: str
    low: int
    high: int | None = None
    within: str | None = None

    def __call__(self, name: str, raw: SettingValue) -> int:
        if isinstance(raw, bool | float):
            raise ConfigError(f"{name} must be {self.kind}, not {raw!r}")
        value = _converted(name, raw, self.kind, int)
        if value < self.low or (self.high is not None and value > self.high):
            raise ConfigError(
                f"{name} must be {self.within}, not {value}"
                if self.within
                else f"{name} must be {self.kind}, not {raw!r}"
            )
        return value


@dataclass(frozen=True)
class Ratio:
    """A day's volume bound, as a multiple of the usual day: strictly above `low` (and below `high`)."""

    low: float
    high: float | None
    what: str

    def __call__(self, name: str, raw: SettingValue) -> float:
        if isinstance(raw, bool):
            raise ConfigError(f"{name} must be a number, not {raw!r}")
        value = _converted(name, raw, "a number", float)
        if not (value > self.low and (self.high is None or value < self.high)):
            bounds = f"more than {self.low:g}" + ("" if self.high is None else f" and less than {self.high:g}")
            raise ConfigError(f"{name} must be {bounds} ({self.what}), not {value:g}")
        return value


@dataclass(frozen=True)
class OneOf(Generic[Value]):
    """One of a Literal's values, as written."""

    choices: tuple[Value, ...]

    def __call__(self, name: str, raw: SettingValue) -> Value:
        value = str(raw).strip()
        for choice in self.choices:
            if value == choice:
                return choice
        raise ConfigError(f"{name} must be one of {', '.join(map(str, self.choices))}, not {raw!r}")


def parse_quasi_identifiers(name: str, raw: SettingValue) -> tuple[str, ...]:
    """A comma-separated list of exported columns, each once, in the order given."""
    names = tuple(column.strip() for column in str(raw).split(",") if column.strip())
    if not names:
        raise ConfigError(
            f"{name} names no column; give exported columns separated by commas, "
            f"e.g. {','.join(DEFAULT_QUASI_IDENTIFIERS)}"
        )
    if SENSITIVE_ATTRIBUTE in names:
        raise ConfigError(
            f"{name} cannot include {SENSITIVE_ATTRIBUTE!r}: it is the sensitive "
            "attribute whose diversity is measured within the groups"
        )
    unknown = [column for column in names if column not in QUASI_IDENTIFIER_CHOICES]
    if unknown:
        raise ConfigError(
            f"{name} names {', '.join(map(repr, unknown))}, which the CSV does not "
            f"have; choose from {', '.join(QUASI_IDENTIFIER_CHOICES)}"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"{name} names a column twice")
    return names


ExportFormat = Literal["csv", "parquet"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = get_args(ExportFormat)


def parse_export_formats(name: str, raw: SettingValue) -> tuple[ExportFormat, ...]:
    """`csv`, `parquet` or both, separated by a comma in either order; always in the order csv, parquet,
    so that the resource shows one text for one choice."""
    given = [part.strip() for part in str(raw).split(",") if part.strip()]
    unknown = [part for part in given if part not in EXPORT_FORMATS]
    if not given or unknown or len(set(given)) != len(given):
        raise ConfigError(f"{name} must be csv,parquet, csv or parquet, not {raw!r}")
    return tuple(choice for choice in EXPORT_FORMATS if choice in given)


def parse_past_day(name: str, raw: SettingValue) -> str:
    """A day written YYYY-MM-DD that has ended (UTC), as that text."""
    text = str(raw).strip()
    try:
        day = dt.date.fromisoformat(text) if len(text) == len("YYYY-MM-DD") else None
    except ValueError:
        day = None
    if day is None:
        raise ConfigError(f"{name} must be a date written YYYY-MM-DD, not {text!r}")
    if day >= dt.datetime.now(dt.UTC).date():
        raise ConfigError(f"{name} is {text}, not before today: the first partition must be a day that has ended")
    return day.isoformat()


def parse_source(name: str, raw: SettingValue) -> SourceLocation:
    """FEEDBACK_SOURCE_URL: its messages name the variable themselves, and never any part of a password."""
    return parse_source_url(str(raw))


def parse_http_url(name: str, raw: SettingValue) -> str:
    """An http(s) URL, or ConfigError naming the setting (the URL itself, which may hold a token, never)."""
    url = str(raw).strip()
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{name} must be an http:// or https:// URL")
    return url.rstrip("/")


@dataclass(frozen=True)
class Setting:
    """One FEEDBACK_* variable, as the metadata of the model field that holds its value: how it is
    checked, its default (as text, the form the environment gives) and how the docs show it; the
    field's docstring is its meaning.

    Pydantic calls `check` to validate the field, so a model validated from raw values parses each
    one with the message its parser writes."""

    variable: str
    parse: Callable[[str, Any], Any]
    default: str | None
    _: KW_ONLY
    # The contract's default cell for a setting without a default.
    unset: str = ""
    # README's cell after the default.
    readme: str = ""
    # Without a default: a required setting is parsed as empty (its parser says what to set), any
    # other is None; `fallback` computes the default from the environment instead.
    required: bool = False
    fallback: Callable[[Mapping[str, str]], str] | None = None
    # Shown in the UI as the variable's name (dg.EnvVar) when the environment sets it: it may hold a password.
    secret: bool = False

    @property
    def field(self) -> str:
        """The resource field's name: the variable's, without the prefix."""
        return self.variable.removeprefix("FEEDBACK_").lower()

    @property
    def documented_default(self) -> str:
        return self.default if self.default is not None else self.unset

    def check(self, raw: SettingValue | None) -> Any:
        if raw is None:
            return self.parse(self.variable, "") if self.required else None
        return self.parse(self.variable, raw)

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(self.check)


Model = TypeVar("Model", bound=BaseModel)


def declared(model: type[BaseModel]) -> dict[str, Setting]:
    """The model's fields and the Setting each declares, in the model's order."""
    return {
        name: next(meta for meta in field.metadata if isinstance(meta, Setting))
        for name, field in model.model_fields.items()
    }


def _raw(setting: Setting, values: Mapping[str, SettingValue | None], env: Mapping[str, str]) -> SettingValue | None:
    """A value given explicitly, else the environment's (empty counts as unset), else the default."""
    given = values.get(setting.variable)
    if isinstance(given, str):
        given = given.strip()
    if given is not None and given != "":
        return given
    text = (env.get(setting.variable) or "").strip()
    if text:
        return text
    return setting.fallback(env) if setting.fallback is not None else setting.default


def read_setting(model: type[BaseModel], field: str, env: Mapping[str, str] | None = None) -> Any:
    """One setting of `model`, from the environment, checked; a ConfigError names it when it is wrong."""
    setting = declared(model)[field]
    return setting.check(_raw(setting, {}, os.environ if env is None else env))


def read(
    model: type[Model], values: Mapping[str, SettingValue | None] | None = None, env: Mapping[str, str] | None = None
) -> Model:
    """Every setting of `model` from explicit values keyed by variable name (None: not given), falling
    back to the environment, then to the defaults; the first wrong one raises its ConfigError."""
    environ = os.environ if env is None else env
    raw = {name: _raw(setting, values or {}, environ) for name, setting in declared(model).items()}
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, ConfigError):
            raise cause from None
        name = declared(model)[str(error["loc"][0])].variable
        raise ConfigError(f"{name} is not valid: {error['msg']}") from None


def read_leniently(model: type[Model], env: Mapping[str, str] | None = None) -> tuple[Model, dict[str, str]]:
    """Every setting of `model` from the environment; a wrong one takes its default, and its message
    is returned by field name, for whatever depends on it to fail with."""
    environ = os.environ if env is None else env
    raw: dict[str, SettingValue | None] = {}
    problems: dict[str, str] = {}
    for name, setting in declared(model).items():
        try:
            raw[name] = _raw(setting, {}, environ)
            setting.check(raw[name])
        except ConfigError as exc:
            problems[name] = str(exc)
            raw[name] = setting.default
    return model.model_validate(raw), problems
