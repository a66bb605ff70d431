"""Option values: one parser per kind of value, for every stage (the lowest floor: it imports nothing
of ours but the errors).

Options arrive as strings from the command line (``--eval-count 8``, ``-O key=value``) or typed from
a recipe or the Python API (TOML lists, booleans, numbers); both mean the same, and each parser
returns the one canonical value (``"yes"``, ``"true"`` and ``True`` are all ``True``), so two
spellings of one setting give one build key. A value that does not parse, or lies outside its
range, raises :class:`~xcit_export.errors.OptionError` (a usage error: the CLI exits 2) naming the
option, the value and what it must be.

Device-side rules apply (Python 3.8, numpy at most: the device bundle packs this module).
"""

from __future__ import annotations

import re
from typing import Any, Iterable, List, Optional, Sequence, Tuple

from .errors import OptionError

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")

Size = Tuple[int, int]


def as_list(value: Any) -> List[str]:
    """``"a,b"`` or ``["a", "b"]`` -> ``["a", "b"]`` (blanks dropped); None or "" -> []."""
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def as_bool(value: Any, name: str = "option") -> bool:
    """true/false, 1/0, yes/no, on/off (any case) or a bool; anything else is an error."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise OptionError(f"option {name}={value!r} is not a boolean; use true or false")


def _range_text(minimum: Any, maximum: Any) -> str:
    if maximum is None:
        return f">= {minimum}"
    if minimum is None:
        return f"<= {maximum}"
    return f"between {minimum} and {maximum}"


def as_int(value: Any, name: str = "option", minimum: Optional[int] = 1, maximum: Optional[int] = None) -> Optional[int]:
    """A whole number within [minimum, maximum]; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise OptionError(f"option {name}={value!r} is not a whole number")
    try:
        out = int(str(value).strip()) if not isinstance(value, (int, float)) else int(value)
    except (TypeError, ValueError):
        raise OptionError(f"option {name}={value!r} is not a whole number") from None
    if (minimum is not None and out < minimum) or (maximum is not None and out > maximum):
        raise OptionError(f"option {name}={out} is out of range: it must be {_range_text(minimum, maximum)}")
    return out


def as_float(value: Any, name: str = "option", minimum: Optional[float] = None,
             maximum: Optional[float] = None, above: Optional[float] = None) -> Optional[float]:
    """A finite number within [minimum, maximum] (and, with ``above``, strictly above it); None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise OptionError(f"option {name}={value!r} is not a number")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise OptionError(f"option {name}={value!r} is not a number") from None
    if out != out or out in (float("inf"), float("-inf")):
        raise OptionError(f"option {name}={value!r} is not a finite number")
    if above is not None and not out > above:
        raise OptionError(f"option {name}={out:g} is out of range: it must be above {above:g}")
    if (minimum is not None and out < minimum) or (maximum is not None and out > maximum):
        raise OptionError(f"option {name}={out:g} is out of range: it must be {_range_text(minimum, maximum)}")
    return out


def as_fraction(value: Any, name: str = "option") -> Optional[float]:
    """A fraction between 0 and 1 (an agreement, a cosine); None stays None."""
    out = as_float(value, name)
    if out is not None and not 0.0 <= out <= 1.0:
        raise OptionError(f"{name}={value!r} must be a fraction between 0 and 1 (0.97 = 97%)")
    return out


def as_drop(value: Any, name: str = "max_drop") -> Optional[float]:
    """A top-1 drop budget as a fraction of the evaluation set (0.01 = 1 percentage point): the unit
    of every target's ``max_drop``, a recipe's ``max_top1_drop`` and ``--max-top1-drop``.

    A value of 1 or more is refused, never reread: it is most likely meant in percentage points
    (``max_top1_drop = 1`` would otherwise allow a 100-point drop, i.e. anything)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise OptionError(f"{name}={value!r} is not a number: give the top-1 drop as a fraction (0.01 = 1 point)")
    try:
        drop = float(value)
    except (TypeError, ValueError):
        raise OptionError(f"{name}={value!r} is not a number: give the top-1 drop as a fraction "
                          f"(0.01 = 1 point)") from None
    if drop != drop or drop < 0 or drop > 100:
        raise OptionError(f"{name}={value} is out of range: it is a top-1 drop as a fraction between 0 and "
                          f"1 (0.01 = 1 point)")
    if drop >= 1:
        raise OptionError(f"{name}={value} is read as a fraction ({100 * drop:g} points); for {drop:g} "
                          f"point{'s' if drop != 1 else ''} pass {drop / 100:g}")
    return drop


def as_choice(value: Any, name: str, choices: Sequence[str], lower: bool = True) -> str:
    """One of ``choices`` (compared case-insensitively when ``lower``)."""
    text = str(value).strip()
    if lower:
        text = text.lower()
    if text not in choices:
        raise OptionError(f"option {name}={value!r} is not one of {', '.join(choices)}")
    return text


def parse_size(text: Any, what: str = "size") -> Size:
    """``"384"`` or 384 -> (384, 384); ``"512x768"`` -> (512, 768) (height x width); ``[h, w]`` as well."""
    if isinstance(text, bool):
        raise OptionError(f"{what} {text!r} is not a size; use 256, 256x320 or (256, 320)")
    if isinstance(text, int):
        dims = [text]
    elif isinstance(text, (list, tuple)):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in text):
            raise OptionError(f"{what} {list(text)!r} is not [height, width]")
        dims = list(text)
    else:
        parts = str(text).strip().lower().replace(",", "x").split("x")
        try:
            dims = [int(p) for p in parts]
        except ValueError:
            raise OptionError(f"{what} '{text}' is not a size; use 256 or 256x320 (height x width)") from None
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) <= 0:
        raise OptionError(f"{what} '{text}' is not a size; use 256 or 256x320 (height x width)")
    return dims[0], dims[1]


def parse_sizes(value: Any, what: str = "--eval-sizes") -> Tuple[Size, ...]:
    """A comma-separated string (CLI) or a list of ints / "HxW" strings / [h, w] pairs (recipe)."""
    if isinstance(value, str):
        items: Iterable[Any] = [v for v in value.split(",") if v.strip()]
    else:
        items = list(value)
    sizes: List[Size] = []
    for item in items:
        size = parse_size(item, what)
        if size not in sizes:
            sizes.append(size)
    if not sizes:
        raise OptionError(f"{what} lists no size; give e.g. 224,384,512x768")
    return tuple(sizes)


# Resource names Ray reserves; a device kind may not be one of them.
RAY_RESERVED = {"CPU", "GPU", "TPU", "memory", "object_store_memory"}
RAY_RESERVED_PREFIXES = ("node:", "accelerator_type:")
_KIND_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def device_kind(kind: Any) -> str:
    """A device kind is a plain resource name: ``jetson-orin``, ``intel-cpu-vnni``, ``cpu-avx2``."""
    if not isinstance(kind, str) or not _KIND_RE.match(kind):
        raise OptionError(f"device kind {kind!r} is not a name; use letters, digits, '-', '_' or '.', "
                          f"e.g. \"jetson-orin\"")
    if kind in RAY_RESERVED or kind.startswith(RAY_RESERVED_PREFIXES):
        raise OptionError(f"device kind '{kind}' is a resource Ray reserves; name the device, e.g. "
                          f"\"nvidia-rtx\" rather than \"GPU\"")
    return kind
