"""Declarative request rules: what a route accepts, checked before its handler runs.

A route states its body as a :class:`Body` of field rules::

    CHAT = Body(
        model=Model(required=True),
        messages=Array(MESSAGE, required=True, min_items=1),
        temperature=Num(min=0, max=2),
        n=Int(min=1, max=128),
        stream=Bool(),
        tool_choice=OneOf(Str(enum=("none", "auto", "required")), NAMED_TOOL),
    )

The machinery (``_server``) parses the body once, calls :meth:`Body.validate` and hands the
first :class:`Violation` to the service's ``reject``, which writes the service's own error;
a :class:`Model` field is then checked against the service's models (``unknown_model``).

Conventions, so declarations stay short:

- An optional field may be ``null`` (the same as leaving it out); a required one may not.
  ``nullable=`` says otherwise.
- An object refuses fields it does not declare (``extra="forbid"``, the strict default);
  ``extra="allow"`` accepts and ignores them. Fields whose names clash with a keyword
  argument (``extra``, ``required``, ``nullable``) go in the positional dict.
- :class:`OneOf` picks the alternatives by JSON type, then takes the first that passes.
- :class:`Tagged` is a union told apart by one field (``role``, ``type``); each variant
  lists its other fields.
- ``Body(form=True, ...)`` reads multipart form fields: their text is converted to the
  declared scalar type first.

A value's path is only built when it fails (the failing branch is checked again with it),
so a small valid body costs a few microseconds.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

__all__ = [
    "AnyValue", "Array", "Body", "Bool", "File", "Int", "Map", "Model", "Num", "Obj", "OneOf",
    "Rule", "Str", "Tagged", "Upload", "Violation", "json_type",
]

Path = tuple[Any, ...]  # ("messages", 0, "role"); () is the body itself

#: What went wrong, in :attr:`Violation.kind`.
KINDS = ("json", "missing", "type", "enum", "below_min", "above_max", "too_short", "too_long",
         "unknown")


@dataclass(frozen=True)
class Upload:
    """A file part of a multipart form."""

    filename: str | None
    data: bytes
    content_type: str | None = None


_TYPE_NAMES: dict[type, str] = {
    str: "string", int: "integer", float: "number", bool: "boolean", list: "array",
    dict: "object", type(None): "null", Upload: "file",
}


def json_type(value: Any) -> str:
    """The JSON type name of a parsed value (``"integer"``, ``"null"``, ...)."""
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def dotted(path: Path) -> str:
    """``("messages", 0, "role")`` -> ``"messages[0].role"``."""
    out = ""
    for seg in path:
        out += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if out else seg)
    return out


@dataclass(frozen=True)
class Violation:
    """The first broken rule of a request.

    ``rule`` is the JSON type the rule wanted (``"integer"``, ``"string"``, ...).
    ``expected`` is the bound (``below_min``, ``above_max``, ``too_short``, ``too_long``),
    the allowed values (``enum``) or the accepted type names (``type``).
    ``got`` is the value (``enum``, bounds), its JSON type name (``type``) or its length.
    """

    path: Path
    kind: str
    rule: str = ""
    expected: Any = None
    got: Any = None

    @property
    def param(self) -> str | None:
        """The field as APIs name it (``messages[0].role``); ``None`` for the whole body."""
        return dotted(self.path) or None

    @property
    def message(self) -> str:
        """A neutral description; services write their own wording from the fields."""
        where = self.param or "body"
        if self.kind == "json":
            return "the body is not valid JSON"
        if self.kind == "missing":
            return f"{where}: field required"
        if self.kind == "unknown":
            return f"{where}: unknown field"
        if self.kind == "type":
            return f"{where}: expected {' or '.join(self.expected)}, got {self.got}"
        if self.kind == "enum":
            return f"{where}: {self.got!r} is not one of {', '.join(map(repr, self.expected))}"
        word = {"below_min": ">=", "above_max": "<=", "too_short": "length >=",
                "too_long": "length <="}[self.kind]
        return f"{where}: expected {word} {self.expected}, got {self.got}"


class Rule:
    """One value's rule. Subclasses set ``types`` (accepted Python types) and ``name``."""

    types: tuple[type, ...] = ()
    name = "value"

    def __init__(self, *, required: bool = False, nullable: bool | None = None) -> None:
        self.required = required
        self.nullable = (not required) if nullable is None else nullable

    def check(self, value: Any, path: Path) -> Violation | None:
        if type(value) not in self.types:
            return Violation(path, "type", self.name, (self.name,), json_type(value))
        return self._check(value, path)

    def _check(self, value: Any, path: Path) -> Violation | None:
        return None

    def from_form(self, text: Any) -> Any:
        """A multipart field's text as this rule's type (left alone when it does not parse)."""
        return text


def _bounds(rule: str, value: float, path: Path, low: float | None, high: float | None,
            kinds: tuple[str, str] = ("below_min", "above_max")) -> Violation | None:
    if low is not None and value < low:
        return Violation(path, kinds[0], rule, low, value)
    if high is not None and value > high:
        return Violation(path, kinds[1], rule, high, value)
    return None


_LENGTHS = ("too_short", "too_long")


class Str(Rule):
    types = (str,)
    name = "string"

    def __init__(self, *, enum: Iterable[str] | None = None, min_len: int | None = None,
                 max_len: int | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.enum = tuple(enum) if enum is not None else None
        self._enum = frozenset(self.enum) if self.enum is not None else None
        self.min_len, self.max_len = min_len, max_len

    def _check(self, value: str, path: Path) -> Violation | None:
        if self._enum is not None and value not in self._enum:
            return Violation(path, "enum", self.name, self.enum, value)
        if self.min_len is not None or self.max_len is not None:
            return _bounds(self.name, len(value), path, self.min_len, self.max_len, _LENGTHS)
        return None


class Model(Str):
    """A model id: a string the service then looks up among its models."""


class Int(Rule):
    types: tuple[type, ...] = (int,)  # ``type() in`` keeps booleans out
    name = "integer"

    def __init__(self, *, min: float | None = None, max: float | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.min, self.max = min, max

    def _check(self, value: int, path: Path) -> Violation | None:
        return _bounds(self.name, value, path, self.min, self.max)

    def from_form(self, text: Any) -> Any:
        try:
            return int(text)
        except (TypeError, ValueError):
            return text


class Num(Int):
    types = (int, float)
    name = "number"

    def from_form(self, text: Any) -> Any:
        try:
            value = float(text)
        except (TypeError, ValueError):
            return text
        return value if math.isfinite(value) else text


class Bool(Rule):
    types = (bool,)
    name = "boolean"

    def from_form(self, text: Any) -> Any:
        return {"true": True, "false": False}.get(str(text).lower(), text)


class File(Rule):
    types = (Upload,)
    name = "file"


class AnyValue(Rule):
    """Anything JSON can hold (free-form fields such as a tool's JSON-schema parameters)."""

    types = tuple(_TYPE_NAMES)
    name = "any"


class Array(Rule):
    types = (list,)
    name = "array"

    def __init__(self, items: Rule | None = None, *, min_items: int | None = None,
                 max_items: int | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.items, self.min_items, self.max_items = items, min_items, max_items

    def _check(self, value: list[Any], path: Path) -> Violation | None:
        if self.min_items is not None or self.max_items is not None:
            bad = _bounds(self.name, len(value), path, self.min_items, self.max_items, _LENGTHS)
            if bad:
                return bad
        items = self.items
        if items is not None:
            for i, item in enumerate(value):
                if items.check(item, path):  # the item's path is built only when it fails
                    return items.check(item, (*path, i))
        return None

    def from_form(self, text: Any) -> Any:
        if isinstance(text, list) and self.items is not None:
            return [self.items.from_form(t) for t in text]
        return text


class Map(Rule):
    """An object with free keys and one rule for every value (``logit_bias``, ``metadata``)."""

    types = (dict,)
    name = "object"

    def __init__(self, values: Rule, **kw: Any) -> None:
        super().__init__(**kw)
        self.values = values

    def _check(self, value: dict[str, Any], path: Path) -> Violation | None:
        for k, v in value.items():
            if self.values.check(v, path):
                return self.values.check(v, (*path, k))
        return None


class Obj(Rule):
    """An object with declared fields."""

    types = (dict,)
    name = "object"

    def __init__(self, fields: Mapping[str, Rule] | None = None, /, *, extra: str = "forbid",
                 required: bool = False, nullable: bool | None = None, **named: Rule) -> None:
        super().__init__(required=required, nullable=nullable)
        if extra not in ("forbid", "allow"):
            raise ValueError(f"extra must be 'forbid' or 'allow', not {extra!r}")
        self.fields: dict[str, Rule] = {**(fields or {}), **named}
        self.extra = extra
        self._required = tuple(k for k, r in self.fields.items() if r.required)

    def _check(self, value: dict[str, Any], path: Path) -> Violation | None:
        for name in self._required:
            if name not in value:
                return Violation((*path, name), "missing")
        fields, forbid = self.fields, self.extra == "forbid"
        for name, v in value.items():
            rule = fields.get(name)
            if rule is None:
                if forbid:
                    return Violation((*path, name), "unknown")
                continue
            if v is None and rule.nullable:
                continue
            if rule.check(v, path):
                return rule.check(v, (*path, name))
        return None


def _closer(a: Violation, b: Violation) -> bool:
    """Whether ``a`` came closer to passing than ``b``: deeper, or not a type mismatch there."""
    return (len(a.path), a.kind != "type") > (len(b.path), b.kind != "type")


class OneOf(Rule):
    """The first alternative that accepts the value's JSON type and passes; when none passes,
    the failure of the one that came closest."""

    def __init__(self, *options: Rule, **kw: Any) -> None:
        super().__init__(**kw)
        self.options = options
        self.types = tuple({t: None for o in options for t in o.types})
        self.name = " or ".join(dict.fromkeys(o.name for o in options))

    def check(self, value: Any, path: Path) -> Violation | None:
        best = None
        for option in self.options:
            if type(value) in option.types:
                bad = option.check(value, path)
                if bad is None:
                    return None
                if best is None or _closer(bad, best):
                    best = bad
        if best is None:
            names = tuple(dict.fromkeys(o.name for o in self.options))
            return Violation(path, "type", self.name, names, json_type(value))
        return best

    def from_form(self, text: Any) -> Any:
        for option in self.options:
            value = option.from_form(text)
            if value is not text:
                return value
        return text


class Tagged(Rule):
    """A union of objects told apart by the value of one field (``role``, ``type``)."""

    types = (dict,)
    name = "object"

    def __init__(self, tag: str, variants: Mapping[str, Obj], **kw: Any) -> None:
        super().__init__(**kw)
        self.tag = tag
        self.variants: dict[str, Obj] = {}
        for value, variant in variants.items():
            fields = {tag: Str(required=True), **variant.fields}
            self.variants[value] = Obj(fields, extra=variant.extra)
        self._names = tuple(self.variants)

    def _check(self, value: dict[str, Any], path: Path) -> Violation | None:
        tag = value.get(self.tag)
        variant = self.variants.get(tag) if type(tag) is str else None
        if variant is None:
            at = (*path, self.tag)
            if self.tag not in value:
                return Violation(at, "missing")
            if type(tag) is not str:
                return Violation(at, "type", "string", ("string",), json_type(tag))
            return Violation(at, "enum", "string", self._names, tag)
        return variant._check(value, path)


class Body(Obj):
    """A route's whole request body.

    ``form=True``: a multipart form (fields are text, files are :class:`Upload`).
    The first top-level :class:`Model` field names the model the service looks up.
    """

    def __init__(self, fields: Mapping[str, Rule] | None = None, /, *, form: bool = False,
                 extra: str = "forbid", **named: Rule) -> None:
        super().__init__({**(fields or {}), **named}, extra=extra)
        self.form = form
        self.model_key = next((k for k, r in self.fields.items() if isinstance(r, Model)), None)

    def validate(self, data: Any) -> Violation | None:
        """The first rule ``data`` breaks, or ``None``."""
        return self.check(data, ())

    def from_form_fields(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Form text converted to each declared field's type (unknown fields left alone)."""
        out = dict(fields)
        for name, value in fields.items():
            rule = self.fields.get(name)
            if rule is not None and not isinstance(value, Upload):
                out[name] = rule.from_form(value)
        return out


def parse_json(body: bytes) -> tuple[Any, Violation | None]:
    """A JSON body parsed, or the ``json`` violation."""
    try:
        return json.loads(body), None
    except ValueError:  # also UnicodeDecodeError
        return None, Violation((), "json")
