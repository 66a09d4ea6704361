"""Declared parameters: each settings field says its flag, help and constraint once, and one check and one
command-line generator read them.

A settings dataclass declares its fields with :func:`param`, in the manner of scikit-learn's
``_parameter_constraints`` (and of sparsify, whose command line is generated from its config):

- the **constraint** the value must meet: :class:`Interval` (a number in a range), :class:`Options` (one of a
  few names), :class:`Boolean`, :class:`Text` (a non-empty text, or a single word) or :class:`Many` (a tuple
  of such values); ``optional=True`` also allows ``None``;
- the **flag** (``--n-concepts`` for ``n_concepts`` unless told; ``flag=None``: no flag, library only), a
  one-letter alias (``short="-k"``), the help line and, where the default value does not say it, what the
  help shows as the default (``shown``).

:func:`validate`, which every settings class calls from ``__post_init__``, checks every declared field and
raises one :class:`~mmconcepts.errors.MMConceptsError` line, ``name (--flag) must be ..., got ...``;
:func:`add_arguments` generates the argparse options (type, default from the dataclass, choices, help with
the default shown) and :func:`from_args` builds the settings back from the parsed arguments. A constraint is
also the argparse ``type`` of its flag, and equal constraints are equal types (``Interval(int, 1)`` is
:data:`positive_int` wherever it is declared).

Examples
--------
>>> import argparse
>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Toy:
...     n_concepts: int = param(20, help="number of concepts", constraint=Interval(int, 1), short="-k")
...     mode: str = param("fast", help="how to run", constraint=Options(("fast", "exact"), noun="mode"))
...     def __post_init__(self):
...         validate(self)
>>> parser = argparse.ArgumentParser(prog="toy")
>>> add_arguments(parser, Toy)
>>> from_args(Toy, parser.parse_args(["-k", "5"]))
Toy(n_concepts=5, mode='fast')
>>> print(parser.format_help().split("options:")[1].strip())  # doctest: +NORMALIZE_WHITESPACE
-h, --help show this help message and exit
-k N, --n-concepts N number of concepts (default 20)
--mode {fast,exact} how to run (default fast)
>>> Toy(n_concepts=0)
Traceback (most recent call last):
...
mmconcepts.errors.MMConceptsError: n_concepts (--n-concepts) must be an integer >= 1, got 0
"""

from __future__ import annotations

import argparse
import math
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Callable

from mmconcepts.errors import MMConceptsError

__all__ = ["Boolean", "Interval", "Many", "Options", "Param", "Text", "add_arguments", "declared",
           "default_of", "fraction", "from_args", "nonnegative_float", "nonnegative_int", "param", "positive_int",
           "settings_from", "validate"]


def _either(values) -> str:
    """``"a, b or c"``."""
    names = [str(v) for v in values]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


class Constraint:
    """What a value must be: :meth:`accepts` it, :meth:`describe` it in words, :meth:`parse` it from the
    command line (a constraint is the argparse ``type`` of its flag)."""

    def accepts(self, value) -> bool:
        raise NotImplementedError

    def describe(self, plural: bool = False, optional: bool = False) -> str:
        raise NotImplementedError

    def parse(self, text: str):
        return text

    def __call__(self, text: str):
        return self.parse(text)

    def error(self, label: str, value, optional: bool = False) -> str:
        """The one-line message of a refused ``value`` of the setting ``label``."""
        return f"{label} must be {self.describe(optional=optional)}, got {value!r}"


@dataclass(frozen=True)
class Interval(Constraint):
    """Numbers of ``kind`` (``int`` or ``float``: finite, an int accepted) between ``low`` and ``high``
    (``None``: unbounded); ``closed`` says which ends belong: ``"both"``, ``"left"``, ``"right"`` or
    ``"neither"``.

    Examples
    --------
    >>> Interval(float, 0, 1, closed="left").describe()
    'a number in [0, 1)'
    >>> Interval(int, 0)("-1")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be an integer >= 0, got -1
    """

    kind: type
    low: float | None = None
    high: float | None = None
    closed: str = "both"

    def accepts(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if self.kind is int else (int, float)) \
                or not math.isfinite(value):
            return False
        low_in, high_in = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.low is not None and (value < self.low or (value == self.low and not low_in)):
            return False
        return self.high is None or value < self.high or (value == self.high and high_in)

    def describe(self, plural: bool = False, optional: bool = False) -> str:
        noun = ("integer" if self.kind is int else "number") + ("s" if plural else "")
        a = "" if plural else "an " if self.kind is int else "a "
        show = str if self.kind is int else (lambda v: f"{v:g}")
        low_in, high_in = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.low is not None and self.high is not None:
            text = f"{a}{noun} in {'[(' [not low_in]}{show(self.low)}, {show(self.high)}{'])'[not high_in]}"
        elif self.low is not None:
            text = f"{a}{noun} {'>=' if low_in else '>'} {show(self.low)}"
        elif self.high is not None:
            text = f"{a}{noun} {'<=' if high_in else '<'} {show(self.high)}"
        else:
            text = f"{a}{'' if self.kind is int else 'finite '}{noun}"
        return text + (" or None" if optional else "")

    def parse(self, text: str):
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text!r}") from None
        if not self.accepts(value):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {value if self.kind is int else text}")
        return value


@dataclass(frozen=True)
class Options(Constraint):
    """One of ``values``; with a ``noun`` the message reads ``unknown <noun> 'x': choose a, b or c``."""

    values: tuple
    noun: str | None = None

    def accepts(self, value) -> bool:
        return value in self.values

    def describe(self, plural: bool = False, optional: bool = False) -> str:
        return f"{'values among' if plural else 'one of'} {_either([*self.values, *(['None'] * optional)])}"

    def error(self, label: str, value, optional: bool = False) -> str:
        if self.noun is None:
            return super().error(label, value, optional)
        return f"unknown {self.noun} {value!r}: choose {_either(self.values)}" + (" (or None)" if optional else "")

    def parse(self, text: str):
        if text not in self.values:
            raise argparse.ArgumentTypeError(self.error("the value", text))
        return text


@dataclass(frozen=True)
class Boolean(Constraint):
    """``True`` or ``False`` (a flag: ``--x`` when the default is off, ``--x / --no-x`` otherwise)."""

    def accepts(self, value) -> bool:
        return isinstance(value, bool)

    def describe(self, plural: bool = False, optional: bool = False) -> str:
        return "true, false or None" if optional else "true or false"


@dataclass(frozen=True)
class Text(Constraint):
    """A non-empty text; with ``word=True``, a single word (no white space)."""

    word: bool = False

    def accepts(self, value) -> bool:
        return isinstance(value, str) and bool(value.strip()) and (not self.word or len(value.split()) == 1)

    def describe(self, plural: bool = False, optional: bool = False) -> str:
        text = ("single word" if self.word else "non-empty text") + ("s" if plural else "")
        return ("" if plural else "a ") + text + (" or None" if optional else "")


@dataclass(frozen=True)
class Many(Constraint):
    """A tuple of values that each meet ``item`` (a list or one string is made a tuple), ``distinct`` unless
    told, empty only when ``empty``; comma-separated on the command line (``--seeds 0,1,2``).

    Examples
    --------
    >>> Many(Interval(int, 0))("0,1, 2")
    (0, 1, 2)
    >>> Many(Interval(int, 0)).error("seeds", (0, 0))
    'seeds must be distinct integers >= 0, got (0, 0)'
    """

    item: Constraint
    distinct: bool = True
    empty: bool = False

    @staticmethod
    def normalise(value):
        """One string as a 1-tuple, a list as a tuple; anything else as it is."""
        return (value,) if isinstance(value, str) else tuple(value) if isinstance(value, list) else value

    def accepts(self, value) -> bool:
        if not isinstance(value, tuple) or not (value or self.empty):
            return False
        return all(self.item.accepts(v) for v in value) and (not self.distinct or len(set(value)) == len(value))

    def describe(self, plural: bool = False, optional: bool = False) -> str:
        return ("distinct " if self.distinct else "") + self.item.describe(plural=True) + (
            " or None" if optional else "")

    def error(self, label: str, value, optional: bool = False) -> str:
        bad = [v for v in value if not self.item.accepts(v)] if isinstance(value, tuple) else []
        if bad and isinstance(self.item, Options) and self.item.noun is not None:
            return self.item.error(label, bad[0])
        return super().error(label, value, optional)

    def parse(self, text: str) -> tuple:
        return tuple(self.item.parse(part.strip()) for part in text.split(",") if part.strip())


#: argparse types of the common counts and shares (a constraint is a type; these are the shared ones).
positive_int = Interval(int, 1)  # a count where zero means nothing (--limit, --batch-size, -k)
nonnegative_int = Interval(int, 0)  # a count or seed that may be zero (--seed, --num-workers)
nonnegative_float = Interval(float, 0)  # a weight, rate or tolerance (--l1, --tol, --lr)
fraction = Interval(float, 0, 1)  # a share (--min-ratio)


@dataclass(frozen=True)
class Param:
    """What :func:`param` declares of a settings field (kept in the field's ``metadata["param"]``).

    Attributes
    ----------
    help : the help line (the default is appended to it).
    constraint : what the value must be (``None``: checked by the class itself, or not at all).
    flag : ``True``: ``--`` and the field's name with dashes; a string: that flag; ``None``: no flag.
    short : a one-letter alias (``"-k"``).
    optional : ``None`` is allowed too.
    shown : the default as the help says it, where the value does not (a ``None`` default).
    metavar : the value's name in the help.
    parse : the argparse type where the constraint does not give it (an :class:`MMConceptsError` it raises
        becomes argparse's one-line error).
    flag_default : what argparse starts from, where not the field's default (an ``append`` action needs a
        list); ``None``: the field's default.
    extra : further ``add_argument`` keywords as ``(name, value)`` pairs (``nargs``, ``const``, ``action``).
    """

    help: str
    constraint: Constraint | None = None
    flag: str | bool | None = True
    short: str | None = None
    optional: bool = False
    shown: str | None = None
    metavar: str | None = None
    parse: Callable | None = None
    flag_default: Any = None
    extra: tuple = ()


def param(default: Any = MISSING, *, help: str, default_factory: Any = MISSING, constraint: Constraint | None = None,
          flag: str | bool | None = True, short: str | None = None, optional: bool = False, shown: str | None = None,
          metavar: str | None = None, parse: Callable | None = None, flag_default: Any = None,
          **argparse_kwargs) -> Any:
    """A dataclass field declared with its flag, help and constraint (see :class:`Param`); ``default`` as
    :func:`dataclasses.field`'s, none for a required setting; ``argparse_kwargs``: further keywords of its
    ``add_argument``."""
    declared = Param(help=help, constraint=constraint, flag=flag, short=short, optional=optional, shown=shown,
                     metavar=metavar, parse=parse, flag_default=flag_default, extra=tuple(argparse_kwargs.items()))
    return field(default=default, default_factory=default_factory, metadata={"param": declared})


def declared(cls) -> list[tuple[Field, Param]]:
    """The fields of a settings class (or instance) declared with :func:`param`, in order."""
    return [(f, f.metadata["param"]) for f in fields(cls) if "param" in f.metadata]


def _flag(f: Field, p: Param) -> str | None:
    return "--" + f.name.replace("_", "-") if p.flag is True else p.flag or None


def _label(f: Field, p: Param) -> str:
    flag = _flag(f, p)
    return f"{f.name} ({flag})" if flag else f.name


def validate(settings) -> None:
    """Check every declared field of ``settings`` against its constraint (lists and strings of a
    :class:`Many` field become tuples); the first refused value raises one :class:`MMConceptsError` line."""
    for f, p in declared(settings):
        value = getattr(settings, f.name)
        if p.constraint is None or (value is None and p.optional):
            continue
        if isinstance(p.constraint, Many):
            value = Many.normalise(value)
            object.__setattr__(settings, f.name, value)
        if not p.constraint.accepts(value):
            raise MMConceptsError(p.constraint.error(_label(f, p), value, p.optional))


def default_of(cls, name: str):
    """The dataclass default of field ``name`` of ``cls`` (``MISSING`` for a required one)."""
    return _default(next(f for f in fields(cls) if f.name == name))


def _default(f: Field):
    return f.default_factory() if f.default_factory is not MISSING else f.default


def _default_text(value) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    if isinstance(value, str) and len(value.split()) > 1:
        return repr(value)
    return "on" if value is True else "off" if value is False else str(value)


def _reading(read: Callable) -> Callable:
    """An argparse type calling ``read``, its :class:`MMConceptsError` as argparse's one-line error."""
    def parse(text: str):
        try:
            return read(text)
        except MMConceptsError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def _argument(f: Field, p: Param, shown: str | None) -> dict:
    """The ``add_argument`` keywords of one declared field."""
    default = _default(f)
    required = default is MISSING
    kwargs: dict[str, Any] = {"dest": f.name, **({"required": True} if required else {"default": default})}
    c = p.constraint
    if isinstance(c, Boolean):
        kwargs["action"] = "store_true" if default is False else argparse.BooleanOptionalAction
    elif isinstance(c, Options):
        kwargs["choices"] = c.values
    elif p.parse is not None:
        kwargs["type"] = _reading(p.parse)
    elif isinstance(c, (Interval, Many)):
        kwargs["type"] = c
    if not isinstance(c, Boolean) and (p.metavar or isinstance(c, Many) or (isinstance(c, Interval) and c.kind is int)):
        kwargs["metavar"] = p.metavar or ("N" if isinstance(c, Interval) else "N,M,..."
                                          if isinstance(c.item, Interval) else "A,B,...")
    text = shown or p.shown
    shown_text = f" (default: {text})" if text else "" if required or default is None \
        else f" (default {_default_text(default)})"
    kwargs["help"] = (p.help + shown_text).replace("%", "%%")
    if p.flag_default is not None:
        kwargs["default"] = p.flag_default
    kwargs.update(dict(p.extra))
    return kwargs


def add_arguments(parser, cls, *, exclude=(), shown: dict[str, str] | None = None) -> None:
    """Add an option for every declared field of ``cls`` that has a flag, to ``parser`` (or an argument
    group): its type (the constraint), default (the dataclass's), choices and help with the default shown.

    Parameters
    ----------
    parser : argparse.ArgumentParser or argument group
    cls : a settings dataclass declared with :func:`param`
    exclude : field names to leave to the command (it adds them itself)
    shown : ``{field: text}``, the default as this command's help shows it (e.g. "the feature store's")
    """
    for f, p in declared(cls):
        flag = _flag(f, p)
        if flag is None or f.name in exclude:
            continue
        parser.add_argument(*([p.short] if p.short else []), flag, **_argument(f, p, (shown or {}).get(f.name)))


def from_args(cls, args: argparse.Namespace, **values):
    """The ``cls`` settings of parsed arguments: every declared flag's value, then ``values`` (a field the
    command reads otherwise, or left out of its parser)."""
    for f, p in declared(cls):
        if f.name not in values and _flag(f, p) is not None and hasattr(args, f.name):
            values[f.name] = getattr(args, f.name)
    return cls(**values)


def settings_from(cls, settings, fields: dict, what: str):
    """``settings``, or ``cls(**fields)`` when it is ``None`` (a function taking its settings either way);
    both given is refused."""
    if settings is None:
        return cls(**fields)
    if fields:
        raise MMConceptsError(f"give the {what} settings either as settings= or as keywords, not both")
    return settings
