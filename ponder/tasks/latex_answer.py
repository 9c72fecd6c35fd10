"""MATH-style final answers: ``\\boxed{}`` extraction, normalization and equivalence.

sympy's ``parse_latex`` needs antlr4 4.11 exactly (the installed 4.13 runtime fails) or
lark, so answers are translated by a small LaTeX-to-sympy converter that knows
fractions, roots, powers, ``\\pi``, ``\\cdot``/``\\times`` and a few functions. The
converted text is whitelisted (digits, operators, single-letter symbols and known
function names) before sympy parses it, and it is parsed with ``evaluate=False`` so
``9^{9^9}`` costs nothing; values are then compared numerically at 30 digits. Anything
that fails or runs past the time limit falls back to normalized string equality.
"""

from __future__ import annotations

import random
import re
import signal
import threading
from typing import Callable, TypeVar

_UNITS = ("cm", "km", "mm", "inches", "inch", "feet", "foot", "ft", "yards", "meters",
          "units", "unit", "sq", "square", "degrees", "degree", "dollars", "dollar", "cents",
          "hours", "hour", "minutes", "minute", "seconds", "second", "days", "day", "mph",
          "miles", "mile", "pounds", "pound", "grams", "kg", "liters", "percent")
# a unit word after a number, e.g. "5 cm" or "12 square feet" (a space is required, so
# an algebraic "2m" keeps its variable)
_UNIT_RE = re.compile(r"(?<=[\d}).])(?:\s+(?:" + "|".join(_UNITS) + r"))+(?:\^\{?\d\}?)?\s*$")
_TEXT_RE = re.compile(r"\\(?:text|textbf|textit|mbox|mathrm|mathbf|operatorname)\s*\{([^{}]*)\}")
_FUNCS = {"sqrt", "pi", "oo", "log", "sin", "cos", "tan", "exp"}
_SAFE_RE = re.compile(r"^[0-9A-Za-z+\-*/().,\s]*$")
_MAX_CHARS = 200  # a longer "answer" is not an answer; also bounds sympy's work
TIMEOUT_S = 2.0

T = TypeVar("T")


def last_boxed(text: str) -> str | None:
    """The contents of the last ``\\boxed{...}`` (or ``\\fbox{...}``), nested braces kept.

    ``"so \\boxed{\\dfrac{3}{4}}."`` gives ``"\\dfrac{3}{4}"``; ``\\boxed 5`` gives ``"5"``;
    None if there is no box or its braces never close.
    """
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    after = start + (6 if text.startswith("\\boxed", start) else 5)
    body = text[after:].lstrip()
    if body.startswith("{"):
        return _braced(text, text.index("{", after))
    if after < len(text) and text[after].isspace():  # "\boxed 5": one token
        token = body.split("$")[0].split()
        return token[0] if token else None
    return None


def _braced(text: str, open_at: int) -> str | None:
    depth = 0
    for k in range(open_at, len(text)):
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1:k]
    return None


def _unwrap_text(match: re.Match) -> str:
    return match.group(1)


def _fix_shorthand(s: str) -> str:
    # \frac12 -> \frac{1}{2}, \frac1b -> \frac{1}{b}, \sqrt2 -> \sqrt{2}
    s = re.sub(r"\\frac\s*([0-9a-zA-Z])\s*([0-9a-zA-Z])", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*\{([^{}]*)\}\s*([0-9a-zA-Z])", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*([0-9a-zA-Z])\s*\{", r"\\frac{\1}{", s)
    return re.sub(r"\\sqrt\s*([0-9a-zA-Z])", r"\\sqrt{\1}", s)


def normalize(answer: str | None) -> str | None:
    """Canonical text of an answer, so trivially different writings compare equal.

    Strips ``\\left``/``\\right``, spacing commands, ``$``, ``%``, degrees, units
    (``\\text{ cm}``, trailing ``cm``), trailing periods, ``x =`` prefixes, thousands
    separators and all spaces; ``dfrac``/``tfrac`` become ``frac``; ``\\frac12`` gets braces.
    """
    if answer is None:
        return None
    s = answer.strip().replace("\n", " ")
    for old, new in (("\\!", ""), ("\\,", ""), ("\\;", ""), ("\\:", ""), ("\\ ", " "), ("~", " "),
                     ("\\displaystyle", ""), ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"),
                     ("\\left", ""), ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("°", ""),
                     ("\\$", ""), ("$", ""), ("\\%", ""), ("%", "")):
        s = s.replace(old, new)
    s = re.sub(r"(?<=[\d}).])\s*\\(?:text|mbox|mathrm)\s*\{\s*[a-zA-Z ]+\}(?:\^\{?\d\}?)?\s*$", "", s)
    s = _TEXT_RE.sub(_unwrap_text, s)
    s = _UNIT_RE.sub("", s).strip()
    s = s.rstrip(". ")
    lhs = s.split("=")
    if len(lhs) == 2 and len(lhs[0].strip()) <= 2 and lhs[0].strip().isalpha():
        s = lhs[1]
    s = _fix_shorthand(s).replace(" ", "")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    s = re.sub(r"(?<![\d}])\.(?=\d)", "0.", s)
    return s


def _replace_command(s: str, name: str, build: Callable[[list[str]], str], num_args: int) -> str:
    """Replace ``\\name{a}{b}`` (innermost-safe, left to right) by ``build([a, b])``."""
    key = "\\" + name
    while (at := s.find(key + "{")) >= 0:
        args, pos = [], at + len(key)
        for _ in range(num_args):
            if pos >= len(s) or s[pos] != "{":
                raise ValueError(f"\\{name} needs {num_args} braced arguments")
            inner = _braced(s, pos)
            if inner is None:
                raise ValueError("unbalanced braces")
            args.append(inner)
            pos += len(inner) + 2
        s = s[:at] + build(args) + s[pos:]
    return s


def latex_to_sympy_text(s: str) -> str:
    """Translate normalized LaTeX into sympy syntax (``\\frac{1}{2}`` -> ``((1)/(2))``).

    Raises:
        ValueError: if a LaTeX command is left that the converter does not know.
    """
    s = re.sub(r"\\sqrt\[([^\]]*)\]\{", r"\\nroot{\1}{", s)
    s = _replace_command(s, "frac", lambda a: f"(({a[0]})/({a[1]}))", 2)
    s = _replace_command(s, "nroot", lambda a: f"(({a[1]})**(1/({a[0]})))", 2)
    s = _replace_command(s, "sqrt", lambda a: f"sqrt({a[0]})", 1)
    for old, new in (("\\cdot", "*"), ("\\times", "*"), ("\\div", "/"), ("\\pi", " pi "),
                     ("\\infty", " oo "), ("\\ln", " log "), ("\\log", " log "), ("\\sin", " sin "),
                     ("\\cos", " cos "), ("\\tan", " tan "), ("\\exp", " exp "),
                     ("^", "**"), ("{", "("), ("}", ")"), ("[", "("), ("]", ")")):
        s = s.replace(old, new)
    if "\\" in s:
        raise ValueError(f"unsupported LaTeX in {s!r}")
    return s


def to_sympy(answer: str):
    """A sympy expression for a normalized answer (unevaluated). Raises ValueError if unsafe."""
    from sympy import Symbol
    from sympy.parsing.sympy_parser import (convert_xor, implicit_multiplication_application,
                                            parse_expr, standard_transformations)
    if len(answer) > _MAX_CHARS:
        raise ValueError("answer too long")
    text = latex_to_sympy_text(answer)
    names = set(re.findall(r"[A-Za-z]+", text))
    if not _SAFE_RE.match(text) or any(len(n) > 1 and n not in _FUNCS for n in names):
        raise ValueError(f"refusing to parse {text!r}")
    local = {n: Symbol(n) for n in names if len(n) == 1}
    transformations = standard_transformations + (implicit_multiplication_application, convert_xor)
    return parse_expr(text, local_dict=local, transformations=transformations, evaluate=False)


def _with_timeout(fn: Callable[[], T], seconds: float) -> T:
    """Run ``fn`` under SIGALRM when that is possible (main thread, Unix); else just run it.

    Off the main thread the converter's size limit and ``evaluate=False`` are the guard.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        return fn()

    def _raise(signum, frame):
        raise TimeoutError("answer comparison timed out")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _numerically_equal(a, b) -> bool:
    from sympy import N, Rational, oo, zoo, nan
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    if a.free_symbols != b.free_symbols:
        return False
    rng = random.Random(0)
    points = [{s: Rational(rng.randint(1, 97), rng.randint(1, 13)) for s in symbols}
              for _ in range(3 if symbols else 1)]
    for point in points:
        va, vb = N(a.subs(point), 30), N(b.subs(point), 30)
        if any(v.has(oo, -oo, zoo, nan) for v in (va, vb)):
            if va != vb:
                return False
            continue
        if not abs(va - vb) <= 1e-9 * max(1, abs(va), abs(vb)):
            return False
    return True


def _parts(s: str) -> tuple[str, list[str]]:
    """Split a tuple/interval/list at top-level commas: ``("()", ["1", "2"])``."""
    brackets = ""
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]":
        brackets, s = s[0] + s[-1], s[1:-1]
    parts, depth, cur = [], 0, ""
    for ch in s:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return brackets, parts + [cur]


def _scalar_equiv(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return bool(_with_timeout(lambda: _numerically_equal(to_sympy(a), to_sympy(b)), TIMEOUT_S))
    except Exception:  # any parse or sympy failure: string equality already said no
        return False


def is_equiv(answer: str | None, reference: str | None) -> bool:
    """True if two final answers are mathematically the same.

    Normalized strings are compared first; then tuples/intervals part by part (brackets
    must match), and scalars through sympy at 30 digits (symbolic answers at three
    rational points). A parse failure or timeout means "not equal".
    """
    a, b = normalize(answer), normalize(reference)
    if a is None or b is None:
        return False
    if a == b:
        return True
    (ba, pa), (bb, pb) = _parts(a), _parts(b)
    if len(pa) > 1 or len(pb) > 1:
        if ba != bb or len(pa) != len(pb):
            return False
        if not ba:  # a bare list of solutions: order does not matter
            pa, pb = sorted(pa), sorted(pb)
            if any(not _scalar_equiv(x, y) for x, y in zip(pa, pb)):
                return _unordered_equiv(pa, pb)
            return True
        return all(_scalar_equiv(x, y) for x, y in zip(pa, pb))
    return _scalar_equiv(a, b)


def _unordered_equiv(pa: list[str], pb: list[str]) -> bool:
    remaining = list(pb)
    for x in pa:
        match = next((k for k, y in enumerate(remaining) if _scalar_equiv(x, y)), None)
        if match is None:
            return False
        remaining.pop(match)
    return True
