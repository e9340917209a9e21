"""The activation predicates a simulated device evaluates: the simple NSPredicate forms Apple's DDM docs use.

`@status(<item>)` and `@property(<key>)` compared with literals, AND/OR/NOT, parentheses, TRUEPREDICATE and
FALSEPREDICATE. Anything else is a parse error; a status item the device cannot answer is an evaluation error.
"""

from __future__ import annotations

import operator as op
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(r"""\s*(?:
    (?P<status>@(?:status|property)\(\s*[^()\s]+\s*\))
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<number>-?\d+(?:\.\d+)?(?![\w.]))
  | (?P<op>==|=<|=>|<=|>=|!=|<>|=|<|>|&&|\|\||!|\(|\)|\{|\}|,)
  | (?P<word>[A-Za-z_][A-Za-z_0-9]*)
)""", re.VERBOSE)
_COMPARISONS = {"==": "==", "=": "==", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=", "=<": "<=", ">": ">",
                ">=": ">=", "=>": ">=", "BEGINSWITH": "BEGINSWITH", "ENDSWITH": "ENDSWITH", "CONTAINS": "CONTAINS",
                "IN": "IN"}
_LITERALS: dict[str, Any] = {"TRUE": True, "YES": True, "FALSE": False, "NO": False, "NULL": None, "NIL": None}
_ORDER: dict[str, Callable[[Any, Any], Any]] = {"<": op.lt, "<=": op.le, ">": op.gt, ">=": op.ge}
_VERSION = re.compile(r"\d+(?:\.\d+)+|\d+")


class PredicateError(Exception):
    """`parse` is True when the text is not a predicate we read, False when it could not be evaluated."""

    def __init__(self, reason: str, *, parse: bool) -> None:
        super().__init__(reason)
        self.reason, self.parse = reason, parse


@dataclass(frozen=True, slots=True)
class _Ref:
    source: str  # "status" or "property"
    name: str


Lookup = Callable[[str], Any]  # a status item's value; raises KeyError when the device has no such item
Node = tuple[Any, ...]


def _tokens(text: str) -> list[tuple[str, str]]:
    out, at = [], 0
    while at < len(text):
        if text[at:].strip() == "":
            break
        match = _TOKEN.match(text, at)
        if match is None or match.end() == at:
            raise PredicateError(f"cannot read the predicate at {text[at:]!r}", parse=True)
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        at = match.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens, self.at = _tokens(text), 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise PredicateError("the predicate ends too early", parse=True)
        self.at += 1
        return token

    def word(self, *names: str) -> bool:
        token = self.peek()
        if token is not None and ((token[0] == "word" and token[1].upper() in names) or token[1] in names):
            self.at += 1
            return True
        return False

    def parse(self) -> Node:
        node = self.disjunction()
        if self.peek() is not None:
            raise PredicateError(f"unexpected {self.peek()[1]!r} in the predicate", parse=True)  # type: ignore[index]
        return node

    def disjunction(self) -> Node:
        node = self.conjunction()
        while self.word("OR", "||"):
            node = ("or", node, self.conjunction())
        return node

    def conjunction(self) -> Node:
        node = self.negation()
        while self.word("AND", "&&"):
            node = ("and", node, self.negation())
        return node

    def negation(self) -> Node:
        if self.word("NOT", "!"):
            return ("not", self.negation())
        if self.word("("):
            node = self.disjunction()
            if not self.word(")"):
                raise PredicateError("a parenthesis is not closed", parse=True)
            return node
        if self.word("TRUEPREDICATE"):
            return ("const", True)
        if self.word("FALSEPREDICATE"):
            return ("const", False)
        left = self.operand()
        kind, text = self.take()
        operator = _COMPARISONS.get(text.upper() if kind == "word" else text)
        if operator is None:
            raise PredicateError(f"{text!r} is not a comparison this device reads", parse=True)
        return ("compare", operator, left, self.operand())

    def operand(self) -> Any:
        kind, text = self.take()
        if kind == "status":
            source, _, rest = text[1:].partition("(")
            return _Ref(source, rest[:-1].strip())
        if kind == "string":
            return re.sub(r"\\(.)", r"\1", text[1:-1])
        if kind == "number":
            return float(text) if "." in text else int(text)
        if kind == "word" and text.upper() in _LITERALS:
            return _LITERALS[text.upper()]
        if text == "{":
            items = [] if self.word("}") else [self.operand()]
            while items and not self.word("}"):
                if not self.word(","):
                    raise PredicateError("a list is not closed", parse=True)
                items.append(self.operand())
            return tuple(items)
        raise PredicateError(f"{text!r} is not a value this device reads", parse=True)


def parse(text: str) -> Node:
    """The predicate's tree; PredicateError(parse=True) when it is not one of the simple forms."""
    if not isinstance(text, str) or not text.strip():
        raise PredicateError("the predicate is empty", parse=True)
    return _Parser(text).parse()


def evaluate(text: str, status: Lookup, properties: Mapping[str, Any]) -> bool:
    """Evaluate a predicate against the device's status items and the management properties."""
    return _eval(parse(text), status, properties)


def _eval(node: Node, status: Lookup, properties: Mapping[str, Any]) -> bool:
    head = node[0]
    if head == "const":
        return bool(node[1])
    if head == "not":
        return not _eval(node[1], status, properties)
    if head in ("and", "or"):
        left = _eval(node[1], status, properties)
        if left is (head == "or"):
            return left
        return _eval(node[2], status, properties)
    _, operator, left, right = node
    return _compare(operator, _value(left, status, properties), _value(right, status, properties))


def _value(operand: Any, status: Lookup, properties: Mapping[str, Any]) -> Any:
    if not isinstance(operand, _Ref):
        return operand
    if operand.source == "property":
        return properties.get(operand.name)  # an unset property is nil, as NSPredicate's key paths give
    try:
        return status(operand.name)
    except KeyError:
        raise PredicateError(f"status item {operand.name} is not available on this device", parse=False) from None


def _comparable(left: Any, right: Any) -> tuple[Any, Any]:
    # Simplification (docs/ddm-device.md): two dotted version strings compare as versions, so "17.10" > "17.9".
    if isinstance(left, str) and isinstance(right, str) and _VERSION.fullmatch(left) and _VERSION.fullmatch(right):
        return tuple(int(part) for part in left.split(".")), tuple(int(part) for part in right.split("."))
    return left, right


def _compare(operator: str, left: Any, right: Any) -> bool:
    if operator == "IN":
        return left in right if isinstance(right, tuple | str) else False
    if operator in ("BEGINSWITH", "ENDSWITH", "CONTAINS"):
        if not isinstance(left, str) or not isinstance(right, str):
            return False
        return {"BEGINSWITH": left.startswith, "ENDSWITH": left.endswith, "CONTAINS": left.__contains__}[operator](
            right)
    a, b = _comparable(left, right)
    if operator in ("==", "!="):
        return (a == b) is (operator == "==")
    try:
        return bool(_ORDER[operator](a, b))
    except TypeError:
        return False  # nil or mixed types: the comparison is false, as NSPredicate's is
