"""Depth, alias and size limits of a document, measured with each fragment visited once, and
the bounds of its text (length and lines), checked before it is parsed.

A fragment spread twice is measured once and its measure used twice: a document of a few
hundred bytes whose fragments each spread the next twice would otherwise be expanded to
trillions of fields, by these limits and by the rules that check fields can be merged.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar, cast

from graphql import (
    ASTValidationRule,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSyntaxError,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    Source,
    ValidationRule,
    Visitor,
    visit,
)
from graphql.validation.validate import ValidationAbortedError
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

# Every measure saturates here: the numbers stay small however a document multiplies.
CEILING = 1 << 53

# The work of validating a document (see `validation_work`) allowed before any rule runs. A
# page of the web client is a few hundred units; the introspection query of GraphiQL a few
# thousand. A unit is about 2 microseconds of graphql-core's time at the most (measured on
# the documents that cost it most for their units), so 50,000 units validate within about a
# tenth of a second.
MAX_VALIDATION_WORK = 50_000

# Units of work per pair of sub-selections graphql-core compares, when it checks that two
# fields of one response name can be merged (about 8 microseconds measured a pair).
SUBSELECTION_PAIR_WORK = 4


def _add(a: int, b: int) -> int:
    return min(a + b, CEILING)


@dataclass(frozen=True, slots=True)
class Shape:
    """What a selection set asks for, with the fragments it spreads expanded."""

    depth: int = 0  # nesting of fields below this set (leaves count 0)
    aliases: int = 0  # aliased fields
    width: int = 0  # fields at this set's own level
    size: int = 0  # fields at every level

    def plus(self, other: Shape) -> Shape:
        return Shape(
            depth=max(self.depth, other.depth),
            aliases=_add(self.aliases, other.aliases),
            width=_add(self.width, other.width),
            size=_add(self.size, other.size),
        )


@dataclass(frozen=True, slots=True)
class Named:
    """The fields of one response name in a selection set, with the fragments it spreads
    expanded: how many, and of their sub-selections' overlaps (`DocumentShapes.overlap`), the
    sum of the square roots and the sum."""

    count: int = 0
    roots: float = 0.0
    overlaps: float = 0.0

    def plus(self, other: Named) -> Named:
        return Named(
            count=_add(self.count, other.count),
            roots=min(self.roots + other.roots, CEILING),
            overlaps=min(self.overlaps + other.overlaps, CEILING),
        )


@dataclass(frozen=True, slots=True)
class Measure:
    """What a selection set holds, its fragments expanded: its `Shape`, its fields by response
    name, and the fragments it spreads (each counted with those it spreads in turn)."""

    shape: Shape = Shape()
    named: Mapping[str, Named] = field(default_factory=dict)
    spreads: int = 0

    @property
    def overlap(self) -> float:
        """Comparisons made, at every level, when the set is compared with itself (see
        `DocumentShapes.pair_work`)."""
        total = float(self.spreads + 1) ** 2
        for fields in self.named.values():
            total += float(fields.count) ** 2 + fields.roots**2
        return min(total, CEILING)


class DocumentShapes:
    """Measures of a document's selection sets, in one pass over each; each fragment is
    measured once.

    A fragment spread inside itself (a cycle, which graphql-core's NoFragmentCycles rule
    reports) and a fragment that is not defined (reported by KnownFragmentNames) add nothing
    but the spread itself (which the rule that fields can be merged still compares).

    That rule compares the fields of one response name in a set pairwise, and for each pair
    their sub-selections: the fields of one name in the one against those of that name in the
    other, and so on down; and each fragment either spreads against the other's fields and
    against each of its fragments (s1 x s2 + s1 + s2 comparisons for s1 and s2 spreads, each
    made even for a fragment empty, undefined or in a cycle). A set's `overlap` bounds what
    comparing it with itself costs (comparisons at every level, the spreads counted as one more
    term, (s + 1) squared); two sub-selections A and B cost at most the square root of
    overlap(A) x overlap(B) (Cauchy-Schwarz, level by level), so the pairs of a set cost at most
    `pair_work`.
    """

    def __init__(self, document: DocumentNode) -> None:
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self._fragments: dict[str, Measure] = {}
        self._measuring: set[str] = set()
        self._sets: dict[int, Measure] = {}  # by id(): the document outlives this object

    def of(self, selection_set: SelectionSetNode | None) -> Shape:
        return self.measure(selection_set).shape

    def fragment(self, name: str) -> Shape:
        return self._fragment(name).shape

    def spreads(self, selection_set: SelectionSetNode | None) -> int:
        return self.measure(selection_set).spreads

    def pair_work(self, selection_set: SelectionSetNode) -> int:
        """What comparing the sub-selections of the set's pairs of fields of one name costs at
        most, in units of work."""
        total = 0.0
        for fields in self.measure(selection_set).named.values():
            if fields.count > 1:
                total += (fields.roots**2 - fields.overlaps) / 2
        return int(min(SUBSELECTION_PAIR_WORK * total, CEILING))

    def measure(self, selection_set: SelectionSetNode | None) -> Measure:
        if selection_set is None:
            return Measure()
        known = self._sets.get(id(selection_set))
        if known is None:
            known = self._sets[id(selection_set)] = self._measure(selection_set)
        return known

    def _measure(self, selection_set: SelectionSetNode) -> Measure:
        shape, named, spreads = Shape(), dict[str, Named](), 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                below = self.measure(selection.selection_set)
                shape = shape.plus(self._field(selection, below.shape))
                overlap = 0.0 if selection.selection_set is None else below.overlap
                key = (selection.alias or selection.name).value
                named[key] = named.get(key, Named()).plus(Named(1, math.sqrt(overlap), overlap))
                continue
            if isinstance(selection, FragmentSpreadNode):
                part = self._fragment(selection.name.value)
                spreads = _add(spreads, 1)
            elif isinstance(selection, InlineFragmentNode):
                part = self.measure(selection.selection_set)
            else:
                continue
            shape, spreads = shape.plus(part.shape), _add(spreads, part.spreads)
            for key, fields in part.named.items():
                named[key] = named[key].plus(fields) if key in named else fields
        return Measure(shape, named, spreads)

    @staticmethod
    def _field(field: FieldNode, below: Shape) -> Shape:
        # Introspection is served from the schema itself; its depth is not the service's.
        nested = field.selection_set is not None and not field.name.value.startswith("__")
        return Shape(
            depth=1 + below.depth if nested else 0,
            aliases=_add(below.aliases, 1 if field.alias else 0),
            width=1,
            size=_add(below.size, 1),
        )

    def _fragment(self, name: str) -> Measure:
        """The fragment's measure, worked out once; nothing for a fragment not defined, or met
        again while it is being measured (a cycle)."""
        known = self._fragments.get(name)
        if known is not None:
            return known
        definition = self.fragments.get(name)
        if definition is None or name in self._measuring:
            return Measure()
        self._measuring.add(name)
        try:
            known = self._fragments[name] = self.measure(definition.selection_set)
        finally:
            self._measuring.discard(name)
        return known


def validation_work(document: DocumentNode, shapes: DocumentShapes) -> int:
    """The work of validating a document, in fields compared or visited.

    Checking that the fields of a selection set can be merged compares them pairwise, with the
    fragments it spreads expanded, and the fragments themselves too: the square of its width and
    spreads; and for the pairs of one response name, their sub-selections
    (`DocumentShapes.pair_work`).
    Every other rule visits each field of each operation with its fragments expanded: its size.
    """
    work = 0
    stack: list[SelectionSetNode] = []
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            work = _add(work, shapes.of(definition.selection_set).size)
        if isinstance(definition, OperationDefinitionNode | FragmentDefinitionNode):
            stack.append(definition.selection_set)
    while stack:
        selection_set = stack.pop()
        # Its fields and the fragments it spreads, pairwise.
        width = _add(shapes.of(selection_set).width, shapes.spreads(selection_set))
        work = _add(work, min(width * width, CEILING))
        work = _add(work, shapes.pair_work(selection_set))
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode | InlineFragmentNode) and selection.selection_set:
                stack.append(selection.selection_set)
    return work


class QueryRefused(ValidationAbortedError):
    """A document over a limit: validation stops here, before any other rule does its work."""

    def __init__(self, message: str, code: str, **details: int) -> None:
        super().__init__(message, extensions={"code": code, **details})


def check_document(
    document: DocumentNode,
    *,
    max_depth: int,
    max_aliases: int,
    max_work: int = MAX_VALIDATION_WORK,
) -> None:
    """Raise QueryRefused for a document over the work budget, the depth or the alias limit."""
    shapes = DocumentShapes(document)
    try:
        work = validation_work(document, shapes)
    except RecursionError:
        raise QueryRefused(
            "The document nests its fragments too deeply to be validated.", "QUERY_TOO_LARGE"
        ) from None
    if work > max_work:
        raise QueryRefused(
            f"The document is too large to validate: comparing the fields of each selection "
            f"with one another (fragments expanded) would take more than the {max_work} units "
            "of work allowed. Select fewer fields side by side, or spread fewer fragments.",
            "QUERY_TOO_LARGE",
            work=work,
            maximum=max_work,
        )
    aliases = 0
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        shape = shapes.of(definition.selection_set)
        if shape.depth > max_depth:
            name = definition.name.value if definition.name else "anonymous"
            raise QueryRefused(
                f"'{name}' exceeds maximum operation depth of {max_depth} "
                f"(its depth is {shape.depth}).",
                "QUERY_TOO_DEEP",
                depth=shape.depth,
                maximum=max_depth,
            )
        aliases = _add(aliases, shape.aliases)
    if aliases > max_aliases:
        raise QueryRefused(
            f"{aliases} aliases found. Allowed: {max_aliases}.",
            "TOO_MANY_ALIASES",
            aliases=aliases,
            maximum=max_aliases,
        )


MAX_INT_DIGITS: Final = 20
"""The most digits an Int literal of a document may have (a 32-bit Int has ten)."""


class _LongIntLiterals(Visitor):
    """Python converts no integer of more than 4,300 digits (its error would name its own
    internals), and no Int of the schema has more than ten: a longer literal is refused before
    any rule, or the cost, reads it."""

    def enter_int_value(self, node: IntValueNode, *_args: object) -> None:
        if len(node.value.lstrip("-")) > MAX_INT_DIGITS:
            raise QueryRefused(
                f"An Int literal may have at most {MAX_INT_DIGITS} digits.",
                "GRAPHQL_VALIDATION_FAILED",
            )


def document_limits_rule(max_depth: int, max_aliases: int) -> type[ValidationRule]:
    """A validation rule that checks the limits when the document is entered.

    The rule raises QueryRefused, which graphql-core's validate() catches and reports as the
    document's error: the rules that walk the document never start on a document over a limit.
    Make the rule once per schema: the validation cache keys on the rule classes.
    """

    class DocumentLimits(ValidationRule):
        def enter_document(self, node: DocumentNode, *_args: object) -> None:
            check_document(node, max_depth=max_depth, max_aliases=max_aliases)
            visit(node, _LongIntLiterals())

    return DocumentLimits


# A line break as graphql-core reads one (`graphql.language.location`).
_LINE_BREAK: Final = re.compile(r"\r\n|[\n\r]")


def line_count(text: str) -> int:
    """The lines of `text` as graphql-core numbers them in an error's location: one more than
    its line breaks (`\\r\\n`, or a `\\n` or `\\r` alone), counted at C speed whatever its
    size."""
    return text.count("\n") + text.count("\r") - text.count("\r\n") + 1


def too_many_lines(text: str, max_lines: int) -> GraphQLSyntaxError:
    """The refusal of `text`, which has more than `max_lines` lines, located at the start of
    its first line past the bound (found by reading no further than that line)."""
    breaks = itertools.islice(_LINE_BREAK.finditer(text), max_lines - 1, None)
    past = next(breaks).end()
    return GraphQLSyntaxError(
        Source(text), past, f"Document contains more than {max_lines} lines. Parsing aborted."
    )


class DocumentTextLimits(SchemaExtension):
    """The bounds of a document's text, held before anything parses it, over HTTP and
    websockets alike: its length in code points and its lines.

    The token limit bounds neither: one comment or string can be a megabyte, and a document
    of half a million line breaks is a few tokens. Lexing a megabyte takes a tenth of a second
    or more; each error graphql-core reports is located by a loop over every line break before
    it (100 validation errors after 500,000 line breaks: seconds of CPU); and the parser's
    cache would keep every such document whole.

    The length is graphql-core's own `max_source_length`, given to whatever parses the document
    (Strawberry's parse, or `ParserCache`'s) through the parse options. The lines are counted in
    `on_parse`, so this extension must come before `ParserCache` in the schema's list: a
    document over either bound fails to parse (GRAPHQL_PARSE_FAILED, a syntax error naming the
    bound), is never cached, and no rule or field sees it.
    """

    def __init__(self, *, max_length: int, max_lines: int) -> None:
        super().__init__()
        self.max_length = max_length
        self.max_lines = max_lines

    def on_operation(self) -> Iterator[None]:
        # Strawberry's `ParseOptions` names only `max_tokens`; graphql-core's `parse` takes this.
        options = cast("dict[str, object]", self.execution_context.parse_options)
        options["max_source_length"] = self.max_length
        yield

    def on_parse(self) -> Iterator[None]:
        text = self.execution_context.query
        if text is not None and line_count(text) > self.max_lines:
            raise too_many_lines(text, self.max_lines)
        yield


__all__ = [
    "MAX_VALIDATION_WORK",
    "DocumentShapes",
    "DocumentTextLimits",
    "QueryRefused",
    "Shape",
    "check_document",
    "document_limits_rule",
    "line_count",
    "too_many_lines",
    "validation_work",
]


K = TypeVar("K")
V = TypeVar("V")


def text_digest(text: str) -> bytes:
    """What names a document's text in the caches of validation and cost, whatever its length
    (a 16-byte BLAKE2 digest, about a microsecond for a page's document)."""
    # surrogatepass: a text a client sent may hold a lone surrogate, which the parser refuses
    # in words of its own; a digest must not fail first.
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class Remembered(Generic[K, V]):
    """At most `size` values by key, the least recently used going first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> V:
        if key not in self._items and len(self._items) >= self._size:
            self._items.popitem(last=False)
        self._items[key] = value
        return value

    def __len__(self) -> int:
        return len(self._items)

    def values(self) -> Iterator[V]:
        return iter(self._items.values())


_TextAndRules = tuple[bytes, tuple[type[ASTValidationRule], ...]]
"""What a validation is remembered by: the digest of the document's text, and the rules."""


class ValidatedTexts(SchemaExtension):
    """Strawberry's `ValidationCache`, keyed by the document's text instead of the parsed
    document: hashing a document walks every node (20 us for a send's, 100 us for the member
    page's), a digest of its text costs about a microsecond. The same text always parses to the
    same document, so it validates the same. Pass it as a factory (`validated_texts`): the
    remembered results are the factory's, shared by its requests."""

    def __init__(self, *, known: Remembered[_TextAndRules, list[GraphQLError]]) -> None:
        super().__init__()
        self._known = known

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        document, rules = context.graphql_document, tuple(context.validation_rules)
        assert document is not None, "Strawberry validates a parsed document"
        key = None if context.query is None else (text_digest(context.query), rules)
        errors = None if key is None else self._known.get(key)
        if errors is None:
            errors = validate_document(context.schema._schema, document, rules)
            if key is not None:
                self._known.put(key, errors)
        context.pre_execution_errors = errors
        yield


VALIDATED_TEXTS: Final = 256
"""Document texts whose validation a `ValidatedTexts` factory remembers (least recently used
goes first)."""


def validated_texts() -> Callable[[], ValidatedTexts]:
    """A factory of `ValidatedTexts` extensions sharing what they remember."""
    return functools.partial(ValidatedTexts, known=Remembered(VALIDATED_TEXTS))
