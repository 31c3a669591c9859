"""SigmaHQ rules: loaded with pySigma, evaluated natively on each audit event.

pySigma parses a rule and resolves its condition (``1 of selection_*``,
``all of them``, modifiers) into a tree of AND/OR/NOT over field/value
expressions; this module compiles that tree into Python predicates over a flat
*field view* of the event. Matching follows Sigma: strings compare
case-insensitively, wildcards ``*``/``?`` apply, a list field matches when any
element does. Both Data Center shapes are one view: ``auditType.*`` (audit
files) and ``type.*`` (REST) are the same fields, so a rule written for either
matches both.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import re2
import structlog
import yaml
from sigma.collection import SigmaCollection
from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.exceptions import SigmaError, SigmaRegularExpressionError
from sigma.rule import SigmaRule
from sigma.types import (
    CompareOperators,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SpecialChars,
)

from collector.actions import classify_dc
from collector.model import AuditEvent, Severity
from detections.alerting import RISK_BY_SEVERITY
from detections.rules.base import ANY_ACTION, RuleMeta

logger = structlog.get_logger(__name__)

BUILTIN_DIR = Path(__file__).parent / "sigma_rules"
Predicate = Callable[["EventFields"], bool]

_LEVEL: dict[str, Severity] = {
    "informational": "info",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "critical": "critical",
}
_TECHNIQUE = re.compile(r"^t\d{4}(\.\d{3})?$")
_PRODUCTS = frozenset({"bitbucket", "atlassian"})
_ACTION_FIELD = "type.action"

# Cloud events carry no DC display names; these normalized actions are the
# same event a DC rule describes, so Cloud events get the DC (category, action).
# TODO: extend once collector/normalize/cloud.py settles its vocabulary, matters
# when Cloud-only organisations rely on the SigmaHQ Bitbucket rules.
_CLOUD_ALIASES: dict[str, tuple[str, str]] = {
    "auth.login_failed": ("Authentication", "User login failed"),
    "access.unauthorized": ("Security", "Unauthorized access to a resource"),
    "export.full_started": ("Data pipeline", "Full data export triggered"),
}


class SigmaLoadError(ValueError):
    """A Sigma file could not be loaded; ``path`` names it."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class SigmaNotSupportedError(SigmaLoadError):
    """A rule uses a Sigma feature this evaluator does not implement."""


@dataclass(frozen=True, slots=True)
class SigmaDetection:
    """One compiled Sigma rule: metadata, predicate, and routing hints.

    ``actions`` holds the lowercased DC display names the rule requires, when
    its condition pins ``type.action``; None means it must see every event.
    """

    meta: RuleMeta
    predicate: Predicate
    actions: frozenset[str] | None
    path: Path

    def matches(self, view: EventFields) -> bool:
        """True when the event's field view satisfies the rule."""
        return self.predicate(view)


def load_sigma(
    dirs: Iterable[Path],
) -> tuple[list[SigmaDetection], list[SigmaLoadError]]:
    """Every rule under ``dirs`` (``*.yml``/``*.yaml``), plus the files that failed.

    A failing file is logged with its path and skipped; the rest still load.
    A rule id seen before (the same file in two directories) is loaded once.
    """
    loaded: dict[str, SigmaDetection] = {}
    errors: list[SigmaLoadError] = []
    for path in _rule_files(dirs):
        try:
            rules = load_sigma_file(path)
        except SigmaLoadError as exc:
            logger.error("sigma.load_failed", path=str(path), reason=exc.reason)
            errors.append(exc)
            continue
        for rule in rules:
            if rule.meta.id in loaded:
                # The same rule in two directories (bundle and config) runs once.
                logger.info("sigma.duplicate_skipped", path=str(path), id=rule.meta.id)
                continue
            loaded[rule.meta.id] = rule
    return list(loaded.values()), errors


def load_sigma_file(path: Path) -> list[SigmaDetection]:
    """The rules of one file; raises ``SigmaLoadError`` naming the file."""
    try:
        collection = SigmaCollection.from_yaml(path.read_text(encoding="utf-8"))
    except (OSError, SigmaError, ValueError, yaml.YAMLError) as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise SigmaLoadError(path, reason) from exc

    rules = []
    for rule in collection.rules:
        if not isinstance(rule, SigmaRule):
            raise SigmaNotSupportedError(path, "correlation rules are not supported")
        rules.append(compile_rule(rule, path))
    return rules


def compile_rule(rule: SigmaRule, path: Path) -> SigmaDetection:
    """Turn a parsed rule into a ``SigmaDetection``."""
    product = (rule.logsource.product or "").lower()
    if product and product not in _PRODUCTS:
        raise SigmaNotSupportedError(path, f"logsource product {product!r}")
    if rule.id is None:
        raise SigmaLoadError(path, "the rule has no id")

    try:
        trees = [cond.parse() for cond in rule.detection.parsed_condition]
        predicates = [_compile(tree, path) for tree in trees]
    except SigmaError as exc:
        raise SigmaLoadError(path, f"{type(exc).__name__}: {exc}") from exc

    predicate = predicates[0] if len(predicates) == 1 else _any_of(predicates)
    actions = _required_actions(trees[0]) if len(trees) == 1 else None
    return SigmaDetection(_meta(rule, actions), predicate, actions, path)


class EventFields:
    """The event as flat dotted field names -> string values, resolved lazily.

    Rules touch two or three fields, so each is looked up on first use and
    cached; only keyword searches flatten the whole record. ``type.*`` reads
    the REST ``type`` block or the file ``auditType`` block; ``attributes.<n>``
    reads extraAttributes by name; ``bbaudit.*`` reads the normalized fields.
    """

    __slots__ = ("_cache", "_event")

    def __init__(self, event: AuditEvent) -> None:
        self._event = event
        self._cache: dict[str, tuple[str, ...]] = {}

    def get(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        """The values of a field (``default`` when it has none)."""
        found = self._cache.get(name)
        if found is None:
            found = self._cache[name] = self._resolve(name)
        return found or default

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self.get(name))

    def values(self) -> Iterable[tuple[str, ...]]:
        """Every field's values (keyword search)."""
        flat: dict[str, list[str]] = {}
        _flatten(self._event.raw, "", flat)
        yield from (tuple(v) for v in flat.values())
        yield tuple(self._event.attributes.values())

    def _resolve(self, name: str) -> tuple[str, ...]:
        event = self._event
        head, _, rest = name.partition(".")
        if head == "bbaudit":
            value = getattr(event, rest, None)
            return (value,) if isinstance(value, str) else ()
        if head == "attributes":
            attribute = event.attributes.get(rest)
            return (attribute,) if attribute else ()
        if head == "type":
            return self._type_field(rest)

        out: list[str] = []
        _collect(event.raw.get(head), rest, out)
        return tuple(out)

    def _type_field(self, rest: str) -> tuple[str, ...]:
        event = self._event
        block = event.raw.get("type")
        if not isinstance(block, Mapping):
            block = event.raw.get("auditType")
        if isinstance(block, Mapping):
            out: list[str] = []
            _collect(block, rest, out)
            return tuple(out)
        alias = _CLOUD_ALIASES.get(event.action) if event.platform == "cloud" else None
        if alias is None or rest not in ("category", "action"):
            return ()
        return (alias[0] if rest == "category" else alias[1],)


def field_view(event: AuditEvent) -> EventFields:
    """The lazy field view of ``event`` that Sigma predicates read."""
    return EventFields(event)


def routing_key(event: AuditEvent) -> str:
    """The lowercased DC display name that routes the event to Sigma rules."""
    if event.platform == "cloud":
        alias = _CLOUD_ALIASES.get(event.action)
        return alias[1].lower() if alias else ""
    return (event.raw_action or "").lower()


def _rule_files(dirs: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for directory in dirs:
        if directory.is_file():
            files.append(directory)
            continue
        found = [*directory.rglob("*.yml"), *directory.rglob("*.yaml")]
        if not directory.is_dir():
            logger.error("sigma.dir_missing", path=str(directory))
        files.extend(sorted(found))
    return files


def _consumes(actions: frozenset[str] | None) -> frozenset[str]:
    """The normalized actions behind the DC display names a rule pins."""
    if actions is None:
        return frozenset({ANY_ACTION})
    return frozenset(classify_dc(None, name).action for name in actions)


def _meta(rule: SigmaRule, actions: frozenset[str] | None) -> RuleMeta:
    severity = _LEVEL.get(rule.level.name.lower() if rule.level else "", "medium")
    techniques = tuple(
        tag.name.upper()
        for tag in rule.tags
        if tag.namespace == "attack" and _TECHNIQUE.match(tag.name)
    )
    limits = "; ".join(str(fp) for fp in rule.falsepositives or ())
    definition = getattr(rule.logsource, "definition", None)
    return RuleMeta(
        id=str(rule.id),
        name=rule.title,
        description=(rule.description or rule.title).strip(),
        severity=severity,
        risk_score=RISK_BY_SEVERITY[severity],
        techniques=techniques,
        consumes=_consumes(actions),
        limitations=" ".join(p for p in (definition, limits) if p) or "none stated",
        runbook=f"See the SigmaHQ rule {rule.title!r} and its references.",
        author=rule.author,
        references=tuple(str(r) for r in rule.references or ()),
    )


def _field(name: str) -> str:
    if name.startswith("auditType."):
        return "type." + name.removeprefix("auditType.")
    return name


def _compile(node: Any, path: Path) -> Predicate:
    if isinstance(node, ConditionAND):
        parts = [_compile(arg, path) for arg in node.args]
        return lambda view: all(part(view) for part in parts)
    if isinstance(node, ConditionOR):
        parts = [_compile(arg, path) for arg in node.args]
        return _any_of(parts)
    if isinstance(node, ConditionNOT):
        inner = _compile(node.args[0], path)
        return lambda view: not inner(view)
    if isinstance(node, ConditionFieldEqualsValueExpression):
        return _field_predicate(_field(node.field), node.value, path)
    if isinstance(node, ConditionValueExpression):
        return _keyword_predicate(node.value, path)
    raise SigmaNotSupportedError(path, f"condition node {type(node).__name__}")


def _any_of(parts: list[Predicate]) -> Predicate:
    return lambda view: any(part(view) for part in parts)


def _field_predicate(name: str, value: Any, path: Path) -> Predicate:
    if isinstance(value, SigmaExists):
        wanted = value.exists
        return lambda view: (name in view) == wanted
    if isinstance(value, SigmaNull):
        return lambda view: not any(view.get(name, ()))
    if isinstance(value, SigmaFieldReference):
        other = _field(value.field)
        return lambda view: bool(set(view.get(name, ())) & set(view.get(other, ())))

    test = _value_test(value, path)
    return lambda view: any(test(item) for item in view.get(name, ()))


def _keyword_predicate(value: Any, path: Path) -> Predicate:
    if isinstance(value, SigmaString) and not value.contains_special():
        text = _plain(value).lower()
        test: Callable[[str], bool] = lambda item: text in item.lower()  # noqa: E731
    else:
        test = _value_test(value, path)
    return lambda view: any(test(i) for values in view.values() for i in values)


def _value_test(value: Any, path: Path) -> Callable[[str], bool]:
    if isinstance(value, SigmaCasedString):
        return _string_test(value, cased=True)
    if isinstance(value, SigmaString):
        return _string_test(value, cased=False)
    if isinstance(value, SigmaBool):
        text = "true" if value.boolean else "false"
        return lambda item: item.lower() == text
    if isinstance(value, SigmaNumber):
        return _number_test(value.number, None)
    if isinstance(value, SigmaCompareExpression):
        return _number_test(value.number.number, value.op)
    if isinstance(value, SigmaRegularExpression):
        return _regex_test(value)
    if isinstance(value, SigmaCIDRExpression):
        return _cidr_test(value)
    raise SigmaNotSupportedError(path, f"value type {type(value).__name__}")


def _string_test(value: SigmaString, *, cased: bool) -> Callable[[str], bool]:
    parts = value.s
    plain = [p for p in parts if isinstance(p, str)]
    text = "".join(plain) if cased else "".join(plain).lower()
    fold: Callable[[str], str] = str if cased else str.lower  # type: ignore[assignment]
    shape = tuple(isinstance(p, str) for p in parts)
    star = SpecialChars.WILDCARD_MULTI

    if all(shape):
        return lambda item: fold(item) == text
    if shape == (False, True, False) and parts[0] == star == parts[2]:
        return lambda item: text in fold(item)
    if shape == (True, False) and parts[1] == star:
        return lambda item: fold(item).startswith(text)
    if shape == (False, True) and parts[0] == star:
        return lambda item: fold(item).endswith(text)

    pattern = re.compile(_glob(parts), re.DOTALL | (0 if cased else re.IGNORECASE))
    return lambda item: pattern.fullmatch(item) is not None


def _plain(value: SigmaString) -> str:
    return "".join(p for p in value.s if isinstance(p, str))


def _glob(parts: Iterable[Any]) -> str:
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(re.escape(part))
        else:
            out.append(".*" if part == SpecialChars.WILDCARD_MULTI else ".")
    return "".join(out)


def _number_test(number: float, op: Any) -> Callable[[str], bool]:
    compare: dict[Any, Callable[[float], bool]] = {
        None: lambda x: x == number,
        CompareOperators.LT: lambda x: x < number,
        CompareOperators.LTE: lambda x: x <= number,
        CompareOperators.GT: lambda x: x > number,
        CompareOperators.GTE: lambda x: x >= number,
        CompareOperators.NEQ: lambda x: x != number,
    }
    check = compare[op]

    def test(item: str) -> bool:
        try:
            return check(float(item))
        except ValueError:
            return False

    return test


def _regex_test(value: SigmaRegularExpression) -> Callable[[str], bool]:
    """A ``|re`` test run by RE2: linear time in the input, whatever the rule.

    Rules from ``sigma_dirs`` are configuration, but a backtracking pattern
    such as ``(a+)+$`` would stall the event loop on one long value. RE2 has
    no backreferences or lookaround; a rule that needs them is refused at
    load time, with its path, instead of being run by a backtracking engine.
    """
    options = re2.Options()
    options.log_errors = False  # the load error is reported once, by us
    options.case_sensitive = SigmaRegularExpressionFlag.IGNORECASE not in value.flags
    options.dot_nl = SigmaRegularExpressionFlag.DOTALL in value.flags
    source = str(value.regexp)
    if SigmaRegularExpressionFlag.MULTILINE in value.flags:
        source = "(?m)" + source
    try:
        pattern = re2.compile(source, options)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise SigmaRegularExpressionError(
            f"regular expression {source[:80]!r} is not supported by RE2 "
            f"(no backreferences or lookaround): {detail}"
        ) from None
    return lambda item: pattern.search(item) is not None


def _cidr_test(value: SigmaCIDRExpression) -> Callable[[str], bool]:
    network = value.network

    def test(item: str) -> bool:
        try:
            return ipaddress.ip_address(item) in network
        except ValueError:
            return False

    return test


def _required_actions(node: Any) -> frozenset[str] | None:
    if isinstance(node, ConditionFieldEqualsValueExpression):
        value = node.value
        plain = isinstance(value, SigmaString) and not value.contains_special()
        if _field(node.field) == _ACTION_FIELD and plain:
            assert isinstance(value, SigmaString)
            return frozenset({_plain(value).lower()})
        return None
    if isinstance(node, ConditionOR):
        found = [_required_actions(arg) for arg in node.args]
        if any(f is None for f in found):
            return None
        return frozenset().union(*(f for f in found if f is not None))
    if isinstance(node, ConditionAND):
        for arg in node.args:
            found_one = _required_actions(arg)
            if found_one is not None:
                return found_one
    return None


def _collect(value: Any, path: str, out: list[str]) -> None:
    """Append the scalar values at dotted ``path`` under ``value`` (lists fan out)."""
    if isinstance(value, list):
        for inner in value:
            _collect(inner, path, out)
    elif isinstance(value, Mapping):
        if path:
            head, _, rest = path.partition(".")
            _collect(value.get(head), rest, out)
    elif value is not None and not path:
        out.append(
            ("true" if value else "false") if isinstance(value, bool) else str(value)
        )


def _flatten(value: Any, prefix: str, view: dict[str, list[str]]) -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            name = "type" if not prefix and key == "auditType" else str(key)
            _flatten(inner, f"{prefix}.{name}" if prefix else name, view)
    elif isinstance(value, list):
        for inner in value:
            _flatten(inner, prefix, view)
    elif value is not None and prefix:
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        view.setdefault(prefix, []).append(text)
