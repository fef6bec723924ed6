"""One mechanism for settings: frozen dataclasses whose fields carry their own rules.

A field declared with :func:`setting` holds its default, the check of its values with
the rule in words, the allowed choices, and a help line. From those one declaration:

- :func:`check_settings` validates an instance (types from the annotations, then the
  choices and checks) with one-line errors naming the field and what is allowed;
- :func:`parse_settings` builds an instance from a mapping (YAML, JSON), rejecting
  unknown keys;
- :func:`add_flags` adds the command-line flags of the fields to an argparse parser,
  and :func:`given_flags` reads back the ones the user gave;
- :func:`to_flags` writes the flags that reproduce an instance (the commands that
  ``nas run`` prints);
- :func:`derive` makes a dataclass of some fields of another, so a section of ``nas
  run``'s config embeds a command's settings instead of re-declaring them.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True, kw_only=True)
    ... class Demo:
    ...     epochs: int = setting(3, "training epochs", check=lambda v: v >= 1, rule=">= 1")
    ...     def __post_init__(self): check_settings(self, "demo")
    >>> Demo(epochs=2).epochs, to_flags(Demo(epochs=2))
    (2, '--epochs 2')
    >>> Demo(epochs=0)
    Traceback (most recent call last):
    ...
    nas.settings.SettingsError: demo: epochs must be >= 1, got 0
"""
from __future__ import annotations

import argparse
import dataclasses
import shlex
import typing
from collections.abc import Callable, Iterable
from dataclasses import MISSING, Field, field, fields
from typing import Any

from nas.errors import NasError

__all__ = ["SettingsError", "setting", "check_settings", "parse_settings", "add_flags",
           "given_flags", "to_flags", "derive", "defaults"]


class SettingsError(NasError):
    """A setting is unknown, badly typed or out of range."""


def setting(default: Any = MISSING, help: str = "", *, check: Callable[[Any], bool] | None = None,
            rule: str = "", choices: Iterable[str] = (), flag: bool | str = True,
            metavar: str | None = None) -> Any:
    """A dataclass field with its rule: ``check(value)`` must hold (``rule`` says it in
    words), or the value must be one of ``choices``. ``flag=False`` keeps the field off
    the command line (``"hidden"``: a flag not shown in ``--help``)."""
    meta = {"help": help, "check": check, "rule": rule, "choices": tuple(choices),
            "flag": flag, "metavar": metavar}
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------- types

def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _kind(hint: Any) -> tuple[type, bool]:
    """(base type, nullable) of an annotation: ``int``, ``float | None``, ``tuple[str, ...]``."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        base = [a for a in args if a is not type(None)]
        return _kind(base[0])[0], True
    if origin is tuple or hint is tuple:
        return tuple, False
    return hint, False


def _coerce(name: str, value: Any, kind: type, nullable: bool, where: str,
            meta: dict[str, Any], error: type[NasError] = SettingsError) -> Any:
    if value is None:
        if nullable:
            return None
        raise error(f"{where}: {name} must be {_expected(kind, meta)}, got None")
    if kind is tuple:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise error(f"{where}: {name}: expected a list of names, got {_short(value)}")
        value = tuple(value)
    elif kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    elif (kind is bool) != isinstance(value, bool) or not isinstance(value, kind):
        raise error(f"{where}: {name}: expected {_expected(kind, meta)}"
                            f"{' or null' if nullable else ''}, got {_short(value)}")
    choices = meta.get("choices") or ()
    bad = [v for v in (value if kind is tuple else (value,)) if choices and v not in choices]
    if bad:
        raise error(f"{where}: {name} must be one of {', '.join(choices)}, got "
                            f"{_short(bad[0])}")
    check = meta.get("check")
    if check is not None and not check(value):
        raise error(f"{where}: {name} must be {meta.get('rule') or 'valid'}, got "
                            f"{_short(value)}")
    return value


def _expected(kind: type, meta: dict[str, Any]) -> str:
    rule = meta.get("rule")
    return f"{kind.__name__}{f' ({rule})' if rule else ''}"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# --------------------------------------------------------------------------- checking

def check_settings(obj: Any, where: str, error: type[NasError] = SettingsError) -> None:
    """Validate (and coerce, int -> float) every field of the dataclass instance ``obj``;
    nested settings dataclasses are checked when they are built."""
    hints = _hints(type(obj))
    for f in fields(obj):
        if dataclasses.is_dataclass(hints[f.name]):  # a section: built (and checked) already
            if not isinstance(getattr(obj, f.name), hints[f.name]):
                raise error(f"{where}: {f.name} must be a {hints[f.name].__name__}, got "
                            f"{_short(getattr(obj, f.name))}")
            continue
        kind, nullable = _kind(hints[f.name])
        value = _coerce(f.name, getattr(obj, f.name), kind, nullable, where, dict(f.metadata),
                        error)
        object.__setattr__(obj, f.name, value)


def parse_settings(cls: type, raw: Any, where: str, *, ignore: Iterable[str] = (),
                   error: type[NasError] = SettingsError) -> Any:
    """An instance of ``cls`` from a mapping; unknown keys (not in ``ignore``) are errors."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise error(f"{where}: expected a mapping, got {type(raw).__name__}")
    names = [f.name for f in fields(cls)]
    unknown = [str(k) for k in raw if k not in names and k not in set(ignore)]
    if unknown:
        raise error(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: "
                            f"{', '.join(names)}")
    hints = _hints(cls)
    by_name = {f.name: f for f in fields(cls)}
    values = {}
    for k, v in raw.items():
        if k not in names:
            continue
        if dataclasses.is_dataclass(hints[k]):  # a section must be a mapping: `train:` alone
            if not isinstance(v, dict):      # is a mistake, not the defaults
                raise error(f"{where}: {k}: expected a mapping, got {type(v).__name__}")
            v = parse_settings(hints[k], v, f"{where}: {k}", error=error)
        else:  # checked here, so the error names where the value came from
            kind, nullable = _kind(hints[k])
            v = _coerce(k, v, kind, nullable, where, dict(by_name[k].metadata), error)
        values[k] = v
    return cls(**values)


def defaults(cls: type) -> dict[str, Any]:
    """Field name -> default value (``MISSING`` fields left out)."""
    out = {}
    for f in fields(cls):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out


def derive(name: str, sources: type | Iterable[type], names: Iterable[str], *, doc: str = "",
           changes: dict[str, Any] | None = None, extra: Iterable[tuple[str, Any, Any]] = (),
           error: type[NasError] = SettingsError, module: str | None = None) -> type:
    """A frozen dataclass ``name`` with the fields ``names`` of ``sources`` (the first that
    has each): the same types, rules and help, defaults from there unless ``changes`` says
    otherwise; ``extra`` adds ``(name, type, setting(...))`` fields of its own. Pass the
    ``module`` the class is assigned in (``__name__``), so it pickles."""
    sources = [sources] if isinstance(sources, type) else list(sources)
    changes = changes or {}
    spec = []
    for n in names:
        src = next(s for s in sources if n in {f.name for f in fields(s)})
        f: Field = {f.name: f for f in fields(src)}[n]
        default = changes.get(n, f.default)
        spec.append((n, _hints(src)[n], field(default=default, metadata=f.metadata)))
    spec += list(extra)

    def __post_init__(self) -> None:  # noqa: N807
        check_settings(self, name, error)

    cls = dataclasses.make_dataclass(name, spec, frozen=True, kw_only=True,
                                     namespace={"__post_init__": __post_init__,
                                                "__doc__": doc or sources[0].__doc__})
    cls.__module__ = module or sources[0].__module__
    return cls


# --------------------------------------------------------------------------- flags

def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_flags(parser: argparse.ArgumentParser, cls: type, *, only: Iterable[str] | None = None,
              skip: Iterable[str] = (), required: Iterable[str] = ()) -> list[str]:
    """Add a flag per field of ``cls`` (those with ``flag`` set, or ``only``); a flag left
    out of the command line is ``None``, so it overrides nothing. Returns the field names."""
    hints = _hints(cls)
    skip, required = set(skip), set(required)
    out = []
    for f in fields(cls):
        meta = dict(f.metadata)
        if (only is not None and f.name not in only) or f.name in skip \
                or (only is None and not meta.get("flag", False)):
            continue
        kind, _ = _kind(hints[f.name])
        help_ = meta.get("help", "")
        if f.default not in (MISSING, None, "", ()) and "default" not in help_:
            help_ += f" (default {_show(f.default)})"
        if meta.get("flag") == "hidden":
            help_ = argparse.SUPPRESS
        kw: dict[str, Any] = {"help": help_, "dest": f.name, "default": None}
        if meta.get("metavar"):
            kw["metavar"] = meta["metavar"]
        if kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif kind is tuple:
            kw["type"] = lambda s: tuple(x for x in s.split(",") if x)
            kw.setdefault("metavar", "A,B")
        else:  # choices are checked by the dataclass: one error line, not argparse's usage
            kw["type"] = kind
            if meta.get("choices") and kw["help"] is not argparse.SUPPRESS:
                kw["help"] = f"{', '.join(meta['choices'])}: {kw['help']}"
        if f.name in required:
            kw["required"] = True
        parser.add_argument(_flag(f.name), **kw)
        out.append(f.name)
    return out


def given_flags(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The settings among ``names`` that were given on the command line."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def to_flags(obj: Any, *, only: Iterable[str] | None = None, skip: Iterable[str] = (),
             changed: bool = False) -> str:
    """The command-line flags that reproduce the settings of ``obj`` (``changed``: only
    those that differ from their defaults)."""
    skip = set(skip)
    parts: list[str] = []
    for f in fields(obj):
        if (only is not None and f.name not in only) or f.name in skip:
            continue
        value = getattr(obj, f.name)
        if value is None or (changed and f.default is not MISSING and value == f.default):
            continue
        if isinstance(value, bool):
            if not value and f.default is False:  # off by default: nothing to say
                continue
            parts.append(_flag(f.name) if value else "--no-" + f.name.replace("_", "-"))
        else:
            parts += [_flag(f.name), _show(value)]
    return shlex.join(parts)
