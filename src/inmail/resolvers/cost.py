"""An operation's cost: the most objects it can return, computed before it runs, and the
database round trips it asks for.

Every object in the answer counts one (scalars are free: they come with their object). A list
counts its cap times what each item costs; a connection's `edges` and `nodes` count its `first`
(or the default page) times what each node costs. A field that reads the database on its own,
for each object it is asked of, counts ROUND_TRIP more (a connection's page, its `totalCount`,
its `hasPreviousPage`): under a list each is a round trip per item, which DataLoaders cannot
batch. Fragments are costed once per page size.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLEnumType,
    GraphQLError,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    GraphQLUnionType,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    NullValueNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    get_operation_ast,
    is_composite_type,
    value_from_ast_untyped,
)
from graphql.type.introspection import SchemaMetaFieldDef, TypeMetaFieldDef
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from inmail.domain.access import DEFAULT_PAGE_SIZE
from inmail.domain.plans import PlanType
from inmail.resolvers.context import Context
from inmail.resolvers.limits import CEILING, MAX_INT_DIGITS, Remembered, text_digest
from inmail.services.reads import MAX_NODE_IDS

PAGE: Final = "page"
"""A connection's list: as long as the `first` of the field that returned the connection."""

Cap = int | Literal["page"]
Caps = dict[str, Cap]

# The longest each list field of the schema can be. tests/unit/test_query_cost.py checks that
# every list field of the schema is here: a new one cannot be forgotten.
LIST_CAPS: Mapping[str, Cap] = {
    "Query.plans": len(PlanType),
    "Query.nodes": MAX_NODE_IDS,  # one object (or null) per id; more ids are refused
    "Conversation.messages": 100,  # the latest 100 (SPEC section 4)
    "ConversationConnection.edges": PAGE,
    "ConversationConnection.nodes": PAGE,
    "CreditLotConnection.edges": PAGE,
    "CreditLotConnection.nodes": PAGE,
    "LedgerEntryConnection.edges": PAGE,
    "LedgerEntryConnection.nodes": PAGE,
    "MessageConnection.edges": PAGE,
    "MessageConnection.nodes": PAGE,
    "PurchaseConnection.edges": PAGE,
    "PurchaseConnection.nodes": PAGE,
    # A mutation fails for one reason: its payload's errors hold at most one.
    "AdvanceClockPayload.errors": 1,
    "CancelSubscriptionPayload.errors": 1,
    "ChangePlanPayload.errors": 1,
    "ConnectMembersPayload.errors": 1,
    "CreateMemberPayload.errors": 1,
    "PurchaseInMailCreditsPayload.errors": 1,
    "RespondToInMailPayload.errors": 1,
    "SendInMailPayload.errors": 1,
    "SendMessagePayload.errors": 1,
    "UpdatePaymentMethodPayload.errors": 1,
    # Notifications (SPEC 5a).
    "NotificationConnection.edges": PAGE,
    "NotificationConnection.nodes": PAGE,
    "MarkNotificationsReadPayload.errors": 1,
}


ROUND_TRIP: Final = 30
"""What a field that makes a database round trip of its own costs: about the process's CPU for
thirty objects (a read costs some 0.3 ms of it, an object some 10 us; `python -m
benchmarks.breakdown` shows both). Without it, aliases of `totalCount` under `nodes(ids:)`
would cost a few objects each while making thousands of reads."""


def reads_on_its_own(parent: GraphQLNamedType, field: str, returns: GraphQLNamedType) -> bool:
    """Whether a field makes its own database round trip for each object it is asked of: a
    connection (its page), a connection's `totalCount`, and a page's `hasPreviousPage`."""
    if parent.name.endswith("Connection"):
        return field == "totalCount"
    if parent.name == "PageInfo":
        return field == "hasPreviousPage"
    return returns.name.endswith("Connection")


# Lists exactly as long as a list argument of their field: counted as that many when the
# request says how many (a literal list or a variable), never more than their cap.
LIST_LENGTHS: Mapping[str, str] = {"Query.nodes": "ids"}


def introspection_caps(schema: GraphQLSchema, about: GraphQLNamedType | None = None) -> Caps:
    """The list fields of introspection: of one type's `__Type`, or the most of any type's."""
    types = [about] if about is not None else list(schema.type_map.values())
    objects = [t for t in types if isinstance(t, GraphQLObjectType | GraphQLInterfaceType)]
    inputs = [t for t in types if isinstance(t, GraphQLInputObjectType)]
    enums = [t for t in types if isinstance(t, GraphQLEnumType)]
    abstract = [t for t in types if isinstance(t, GraphQLInterfaceType | GraphQLUnionType)]
    caps: Caps = {
        "__Type.fields": max((len(t.fields) for t in objects), default=0),
        "__Type.inputFields": max((len(t.fields) for t in inputs), default=0),
        "__Type.interfaces": max((len(t.interfaces) for t in objects), default=0),
        "__Type.possibleTypes": max(
            (len(schema.get_possible_types(t)) for t in abstract), default=0
        ),
        "__Type.enumValues": max((len(t.values) for t in enums), default=0),
    }
    if about is None:
        caps |= {
            "__Schema.types": len(types),
            "__Schema.directives": len(schema.directives),
            "__Field.args": max(
                (len(f.args) for t in objects for f in t.fields.values()), default=0
            ),
            "__Directive.args": max((len(d.args) for d in schema.directives), default=0),
            "__Directive.locations": 0,  # enum values: free
        }
    return caps


@dataclass(frozen=True, slots=True)
class CostLimits:
    maximum: int
    max_page_size: int
    default_page_size: int = DEFAULT_PAGE_SIZE


class CostModel:
    """The caps of one schema's lists, made once per schema."""

    def __init__(self, schema: GraphQLSchema, limits: CostLimits) -> None:
        self.schema = schema
        self.limits = limits
        self.caps: Caps = {**LIST_CAPS, **introspection_caps(schema)}
        # `__schema { types { ... } }` lists each type once: each is costed with its own caps.
        self.types = list(schema.type_map.values())
        self.type_caps = {
            t.name: {**self.caps, **introspection_caps(schema, t)} for t in self.types
        }
        self._known: Remembered[tuple[bytes, str | None], _Known] = Remembered(KNOWN_DOCUMENTS)

    def cost(
        self,
        document: DocumentNode,
        operation_name: str | None = None,
        variables: Mapping[str, object] | None = None,
        *,
        text: str | None = None,
    ) -> int:
        """The cost of the operation the request names (0 when none can be chosen).

        Given the document's `text`, the cost is remembered per text (by its BLAKE2 digest: the
        text itself may be long) and operation, for the values of the variables the costing
        read. Which those are depends on the document alone, and only a list's length or an
        integer's value counts.
        """
        variables = _with_defaults(document, operation_name, variables or {})
        if text is None:
            return self._walk(_Costing(self, document, variables), document, operation_name)
        key = (text_digest(text), operation_name)
        known = self._known.get(key)
        if known is not None:
            shapes = tuple(_shape(variables.get(n)) for n in known.reads)
            cost = known.costs.get(shapes)
            if cost is not None:
                return cost
        costing = _Costing(self, document, variables)
        cost = self._walk(costing, document, operation_name)
        if known is None:
            known = self._known.put(key, _Known(tuple(sorted(costing.read)), {}))
            shapes = tuple(_shape(variables.get(n)) for n in known.reads)
        if len(known.costs) >= KNOWN_SHAPES:
            known.costs.clear()
        known.costs[shapes] = cost
        return cost

    def _walk(self, costing: _Costing, document: DocumentNode, operation_name: str | None) -> int:
        operation = get_operation_ast(document, operation_name)
        if operation is None:
            return 0
        root = self.schema.get_root_type(operation.operation)
        if root is None:
            return 0
        return costing.of(operation.selection_set, root, _Where(None, self.caps))


def _with_defaults(
    document: DocumentNode, operation_name: str | None, variables: Mapping[str, object]
) -> Mapping[str, object]:
    """The variables the operation will run with: one the request leaves out takes the default
    its definition declares (`query($n: Int = 100)`), as execution will give it. A value sent,
    null included, is kept."""
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return variables
    defaults = {
        definition.variable.name.value: value_from_ast_untyped(definition.default_value)
        for definition in operation.variable_definitions or ()
        if definition.default_value is not None and definition.variable.name.value not in variables
    }
    return {**variables, **defaults} if defaults else variables


KNOWN_DOCUMENTS: Final = 256
"""Document texts whose costs a model remembers (as many as the parser cache keeps)."""
KNOWN_SHAPES: Final = 64
"""Costs remembered per text, one per set of variable values that matter."""


@dataclass(slots=True)
class _Known:
    reads: tuple[str, ...]  # the variables the document's costing reads
    costs: dict[tuple[object, ...], int]


def _shape(value: object) -> object:
    """What of a variable's value the costing reads: a list's length, an integer."""
    if isinstance(value, list):
        return ("list", len(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return ("int", value)
    return None if value is None else ("other",)


@dataclass(frozen=True, slots=True)
class _Where:
    page: int | None  # the `first` of the connection being costed
    caps: Caps  # the list caps that apply (a type's own, under `__schema { types }`)


class _Costing:
    def __init__(
        self, model: CostModel, document: DocumentNode, variables: Mapping[str, object]
    ) -> None:
        self.model = model
        self.variables = variables
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        # Selection sets already costed, by (set, parent type, page, caps): a fragment spread
        # again is costed once; and under `__schema { types }` each of the schema's types is
        # costed with its own caps, which end at its own lists, so each selection below them is
        # costed once, not once per type.
        self.costed_sets: dict[tuple[int, str | None, int | None, int], int] = {}
        self.costing: set[str] = set()
        self.read: set[str] = set()  # the variables read

    def _variable(self, name: str) -> object:
        self.read.add(name)
        return self.variables.get(name)

    def of(
        self, selection_set: SelectionSetNode | None, parent: GraphQLNamedType | None, where: _Where
    ) -> int:
        if selection_set is None:
            return 0
        key = (
            id(selection_set),
            None if parent is None else parent.name,
            where.page,
            id(where.caps),
        )
        known = self.costed_sets.get(key)
        if known is None:
            known = self.costed_sets[key] = self._of(selection_set, parent, where)
        return known

    def _of(
        self, selection_set: SelectionSetNode, parent: GraphQLNamedType | None, where: _Where
    ) -> int:
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += self.field(selection, parent, where)
            elif isinstance(selection, FragmentSpreadNode):
                total += self.fragment(selection.name.value, where)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                on = self.model.schema.get_type(condition.name.value) if condition else parent
                total += self.of(selection.selection_set, on or parent, where)
            total = min(total, CEILING)
        return total

    def fragment(self, name: str, where: _Where) -> int:
        """The fragment's cost where it is spread (its selection set is costed once per place
        alike, by `of`); 0 for one not defined, or spread inside itself."""
        definition = self.fragments.get(name)
        if definition is None or name in self.costing:
            return 0
        self.costing.add(name)
        on = self.model.schema.get_type(definition.type_condition.name.value)
        cost = self.of(definition.selection_set, on, where)
        self.costing.discard(name)
        return cost

    def field(self, node: FieldNode, parent: GraphQLNamedType | None, where: _Where) -> int:
        definition = self._definition(node.name.value, parent)
        if definition is None:
            return 0
        assert parent is not None, "only a type defines fields"
        named = get_named_type(definition.type)
        trip = ROUND_TRIP if reads_on_its_own(parent, node.name.value, named) else 0
        if not is_composite_type(named):
            return trip
        key = f"{parent.name}.{node.name.value}"
        if key == "__Schema.types":
            model = self.model
            total = len(model.types)
            for t in model.types:
                own = _Where(where.page, model.type_caps[t.name])
                total = min(total + self.of(node.selection_set, named, own), CEILING)
            return total
        inner = where
        if "first" in definition.args:
            inner = _Where(self._first(node, definition), where.caps)
        elif where.caps is not self.model.caps:  # a type's own caps end at its own lists
            inner = _Where(where.page, self.model.caps)
        each = min(1 + trip + self.of(node.selection_set, named, inner), CEILING)
        return min(self._multiplier(definition.type, key, where, node) * each, CEILING)

    def _definition(self, name: str, parent: GraphQLNamedType | None) -> GraphQLField | None:
        if name == "__schema" and parent is self.model.schema.query_type:
            return SchemaMetaFieldDef
        if name == "__type" and parent is self.model.schema.query_type:
            return TypeMetaFieldDef
        if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            found: GraphQLField | None = parent.fields.get(name)
            return found
        return None

    def _multiplier(
        self, field_type: GraphQLOutputType, key: str, where: _Where, node: FieldNode
    ) -> int:
        multiplier = 1
        while True:
            if isinstance(field_type, GraphQLNonNull):
                field_type = field_type.of_type
            elif isinstance(field_type, GraphQLList):
                cap = self._cap(key, where)
                argument = LIST_LENGTHS.get(key)
                length = None if argument is None else self._length(node, argument)
                multiplier *= cap if length is None else min(length, cap)
                field_type = field_type.of_type
            else:
                return min(multiplier, CEILING)

    def _length(self, node: FieldNode, name: str) -> int | None:
        """How many items a list argument holds, when the request says; None when not."""
        for argument in node.arguments or ():
            if argument.name.value != name:
                continue
            literal = argument.value
            if isinstance(literal, VariableNode):
                value = self._variable(literal.name.value)
                return len(value) if isinstance(value, list) else None
            if isinstance(literal, ListValueNode):
                return len(literal.values)
            return 1  # a single value stands for a list of one
        return None

    def _cap(self, key: str, where: _Where) -> int:
        limits = self.model.limits
        cap = where.caps.get(key, limits.max_page_size)  # unknown: a page, at most
        if cap == PAGE:
            return limits.max_page_size if where.page is None else where.page
        assert isinstance(cap, int)
        return cap

    def _first(self, node: FieldNode, definition: GraphQLField) -> int:
        limits = self.model.limits
        value: object = definition.args["first"].default_value
        for argument in node.arguments or ():
            if argument.name.value != "first":
                continue
            literal = argument.value
            if isinstance(literal, VariableNode):
                value = self._variable(literal.name.value)
            elif isinstance(literal, IntValueNode) and len(literal.value) <= MAX_INT_DIGITS:
                value = int(literal.value)
            elif isinstance(literal, NullValueNode):
                value = None
            else:
                value = limits.max_page_size
        if value is None:
            return min(limits.default_page_size, limits.max_page_size)
        if isinstance(value, bool) or not isinstance(value, int):
            return limits.max_page_size
        return max(0, min(value, limits.max_page_size))


class QueryTooCostly(GraphQLError):
    def __init__(self, requested: int, maximum: int) -> None:
        super().__init__(
            f"This operation costs {requested}, over the limit of {maximum} (an object counts "
            f"1, a connection, totalCount or hasPreviousPage {ROUND_TRIP} more for each object "
            "it is asked of): ask for smaller pages (first) or fewer nested connections.",
            extensions={
                "code": "QUERY_TOO_COSTLY",
                "requestedQueryCost": requested,
                "maximumAvailable": maximum,
            },
        )


def _over_held(requested: int, held: int, maximum: int, code: str) -> dict[str, object]:
    """The extensions of an operation refused for what its member holds already."""
    return {
        "code": code,
        "requestedQueryCost": requested,
        "heldQueryCost": held,
        "maximumHeld": maximum,
    }


class HeldTooCostly(GraphQLError):
    def __init__(self, requested: int, held: int, maximum: int) -> None:
        super().__init__(
            f"This operation costs {requested}; with what your live subscriptions and operations "
            f"in flight on websockets cost ({held}) it would pass the {maximum} one member may "
            "hold at once: end some subscriptions (complete), or ask for less in each.",
            extensions=_over_held(requested, held, maximum, "QUERY_TOO_COSTLY"),
        )


IN_FLIGHT_CODE: Final = "SERVICE_UNAVAILABLE"
"""The code of a request refused for what its member's requests in flight cost: try again."""


class InFlightTooCostly(GraphQLError):
    def __init__(self, requested: int, held: int, maximum: int) -> None:
        super().__init__(
            f"This operation costs {requested}; with what your requests in flight cost ({held}) "
            f"it would pass the {maximum} one member may have in flight at once: wait for their "
            "answers, then ask again.",
            extensions={
                **_over_held(requested, held, maximum, IN_FLIGHT_CODE),
                "retryAfterSeconds": 1,
            },
        )


class TooManySubscriptions(GraphQLError):
    def __init__(self, held: int, maximum: int) -> None:
        super().__init__(
            f"You hold {held} live subscriptions on websockets, the most one member may: end "
            "some (complete) before you subscribe again.",
            extensions={
                "code": "TOO_MANY_SUBSCRIPTIONS",
                "heldSubscriptions": held,
                "maximumSubscriptions": maximum,
            },
        )


class CostHolders:
    """What each member's operations of one kind cost together in this process, at most `limit`
    each: on websockets their live subscriptions and their queries and mutations in flight
    (or the number of their subscriptions), over HTTP their queries and mutations in flight.

    A subscription's selection runs again for every event it receives, so without a bound one
    event (a message a member may send sixty times a minute) would run every subscription a
    member's sockets hold, each up to the maximum cost: hundreds of the costliest queries for
    one request. Held to `limit`, an event costs what one operation may cost."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[str, int] = {}

    def held_by(self, holder: str) -> int:
        return self._held.get(holder, 0)

    def take(self, holder: str, cost: int, *, one_always: bool = False) -> bool:
        """Count `cost` as `holder`'s, unless it would take them past the limit (with
        `one_always`, only when they hold something already: one alone is always taken)."""
        held = self._held.get(holder, 0)
        if held + cost > self.limit and not (one_always and held == 0):
            return False
        self._held[holder] = held + cost
        return True

    def release(self, holder: str, cost: int) -> None:
        left = self._held.get(holder, 0) - cost
        if left > 0:
            self._held[holder] = left
        else:
            self._held.pop(holder, None)


class QueryCost(SchemaExtension):
    """Refuses an operation over the maximum cost before any resolver runs; reports the cost.

    A member's operations are held to what they cost together besides: on websockets to
    `holders` (a subscription holds its cost for as long as it lives, a query or mutation while
    it runs), over HTTP to `in_flight` (a query or mutation while it runs). One token sending
    the costliest requests side by side would otherwise take a process's database and CPU
    from every other member: 50 at once held others' reads up for 16 s.

    Every response carries `extensions.cost`: the requested cost and the maximum. Pass it to
    the schema as a factory (see `query_cost`), never as an instance.
    """

    def __init__(
        self,
        *,
        model: Callable[[GraphQLSchema], CostModel],
        holders: CostHolders | None = None,
        subscriptions: CostHolders | None = None,
        in_flight: CostHolders | None = None,
    ) -> None:
        self._model = model
        self._holders = holders
        self._in_flight = in_flight
        # Each member's live subscriptions, counted (one unit each): however little each costs,
        # every event runs them all, and each run has a cost of its own that no selection shows
        # (its execution, its reads).
        self._subscriptions = subscriptions
        self._requested: int | None = None
        self._held: tuple[CostHolders, str, int] | None = None
        self._subscribed: str | None = None

    def _cost(self) -> int:
        if self._requested is None:
            context = self.execution_context
            document = context.graphql_document
            self._requested = (
                0
                if document is None
                else self._model(context.schema._schema).cost(
                    document, context.operation_name, context.variables, text=context.query
                )
            )
        return self._requested

    def on_execute(self) -> Iterator[None]:
        maximum = self._model(self.execution_context.schema._schema).limits.maximum
        requested = self._cost()
        if requested > maximum:
            # Raised, not set as the result: subscriptions ignore a result set here.
            raise QueryTooCostly(requested, maximum)
        self._hold(requested)
        yield

    def on_operation(self) -> Iterator[None]:
        # The operation ends here however it ends: a subscription completed or its socket gone.
        try:
            yield
        finally:
            if self._held is not None:
                holders, holder, cost = self._held
                holders.release(holder, cost)
                self._held = None
            if self._subscribed is not None and self._subscriptions is not None:
                self._subscriptions.release(self._subscribed, 1)
                self._subscribed = None

    def _hold(self, requested: int) -> None:
        context = self.execution_context.context
        if not isinstance(context, Context):
            return
        viewer = context.credentials.checked
        if viewer is None or viewer.is_admin or viewer.member_id is None:
            return
        holder = viewer.member_id
        if not context.credentials.websocket:
            if self._in_flight is not None:
                # One request alone always runs (the cost limit bounds it), whatever the budget.
                if not self._in_flight.take(holder, requested, one_always=True):
                    held = self._in_flight.held_by(holder)
                    raise InFlightTooCostly(requested, held, self._in_flight.limit)
                self._held = (self._in_flight, holder, requested)
            return
        if self._holders is None:
            return
        counted = self._subscriptions
        if (
            counted is not None
            and self.execution_context.operation_type is OperationType.SUBSCRIPTION
        ):
            if not counted.take(holder, 1):
                raise TooManySubscriptions(counted.held_by(holder), counted.limit)
            self._subscribed = holder
        if not self._holders.take(holder, requested):
            raise HeldTooCostly(requested, self._holders.held_by(holder), self._holders.limit)
        self._held = (self._holders, holder, requested)

    def get_results(self) -> dict[str, dict[str, int]]:
        context = self.execution_context
        model = self._model(context.schema._schema)
        try:
            requested = self._cost()
        except RecursionError:  # a document nested too deeply, refused by validation
            requested = 0
        return {"cost": {"requestedQueryCost": requested, "maximumAvailable": model.limits.maximum}}


def query_cost(
    limits: CostLimits,
    holders: CostHolders | None = None,
    subscriptions: CostHolders | None = None,
    in_flight: CostHolders | None = None,
) -> Callable[[], QueryCost]:
    """A factory of QueryCost extensions sharing one CostModel per schema, `holders`,
    `subscriptions` and `in_flight`."""

    made: list[CostModel] = []

    def model(schema: GraphQLSchema) -> CostModel:
        if not made or made[0].schema is not schema:
            made[:] = [CostModel(schema, limits)]
        return made[0]

    return functools.partial(
        QueryCost,
        model=model,
        holders=holders,
        subscriptions=subscriptions,
        in_flight=in_flight,
    )
