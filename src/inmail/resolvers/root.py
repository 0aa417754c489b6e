"""The schema, assembled in one place, with its limits and error masking."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, Final, Protocol, cast

import strawberry
from graphql import (
    ASTValidationRule,
    Executor,
    GraphQLError,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLLeafType,
    GraphQLObjectType,
    GraphQLResolveInfoHelpers,
    GraphQLSchema,
    GraphQLSyntaxError,
    Undefined,
    get_nullable_type,
    is_leaf_type,
    is_non_null_type,
)
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql.execution.collect_fields import FieldDetailsList, GroupedFieldSet
from graphql.execution.incremental.incremental_executor import DeliveryGroupMap
from graphql.pyutils import AwaitableOrValue, Path, gather_with_cancel
from starlette.websockets import WebSocket
from strawberry.exceptions import MissingQueryError
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaskErrors,
    MaxTokensLimiter,
    ParserCache,
    SchemaExtension,
)
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.schema.exceptions import CannotGetOperationTypeError
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import CustomGraphQLEnumType, GraphQLCoreConverter
from strawberry.types import ExecutionContext
from strawberry.types.execution import PreExecutionError
from strawberry.types.field import StrawberryField
from strawberry.types.graphql import OperationType
from strawberry.types.scalar import ScalarDefinition

from inmail.disclosure import HideSuggestions, guess_within_budget_everywhere
from inmail.heap import weakly_bound
from inmail.observability import OperationLabels, OperationMetrics
from inmail.resolvers.context import DatabaseDeadline, MemberMustExist, MutationsMarked
from inmail.resolvers.cost import CostHolders, CostLimits, query_cost
from inmail.resolvers.hooks import HookTable, PreparedHooksRunner
from inmail.resolvers.limits import (
    DocumentTextLimits,
    document_limits_rule,
    validated_texts,
)
from inmail.resolvers.mutation import Mutation, ProductionMutation
from inmail.resolvers.query import Query
from inmail.resolvers.subscription import Subscription
from inmail.resolvers.variables_guard import VariablesGuard
from inmail.schema.errors import ApiError
from inmail.schema.quoting import quote_client_values_briefly, quote_enum_names_briefly
from inmail.schema.scalars import DateTime
from inmail.services.unit_of_work import WriteWindowClosed, unanswered
from inmail.settings import Settings

log = logging.getLogger("inmail.graphql")


def is_unexpected(error: GraphQLError) -> bool:
    """A failure nobody raised on purpose: a bug, masked.

    Errors GraphQL itself reports (syntax, validation, a variable of the wrong type, whose
    original error is the scalar's ValueError) are the client's to read; so are ApiErrors, and
    a document with no operation to run (an empty query, no operation, an unknown
    operationName), which a websocket operation reports as an error rather than raises.
    """
    original = error.original_error
    if original is None or isinstance(
        original, ApiError | GraphQLError | MissingQueryError | CannotGetOperationTypeError
    ):
        return False
    return error.path is not None or not isinstance(original, ValueError)


class SubscriptionsOverWebsockets(SchemaExtension):
    """A subscription sent over HTTP is refused before it runs: it is served on websockets."""

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        if context.operation_type is OperationType.SUBSCRIPTION and not isinstance(
            getattr(context.context, "request", None), WebSocket
        ):
            context.result = GraphQLExecutionResult(
                data=None,
                errors=[
                    ApiError(
                        "Subscriptions are served over websockets on /graphql "
                        "(graphql-transport-ws or graphql-ws), not over HTTP.",
                        "BAD_REQUEST",
                    )
                ],
            )
        yield


MASKED_MESSAGE: Final = "Unexpected error."
UNANSWERED_MESSAGE: Final = (
    "The database did not answer in time: try again later. A write may or may not have taken "
    "effect: read before sending it again, or send it again under the same idempotency key "
    "(which never acts twice)."
)
UNANSWERED_CODE: Final = "SERVICE_UNAVAILABLE"


LATE_MESSAGE: Final = (
    "The token expired before the operation could write: nothing of it was written. Sign in "
    "again and retry (under the same idempotency key, a write is still made at most once)."
)


def too_late_to_write(error: GraphQLError) -> bool:
    """An operation on a websocket whose token expired before it could commit (rolled back)."""
    return isinstance(error.original_error, WriteWindowClosed)


def database_unanswered(error: GraphQLError) -> bool:
    """The failure of a database out of reach or slower than the request's deadline."""
    return error.original_error is not None and unanswered(error.original_error)


def masked(error: GraphQLError) -> GraphQLError:
    """What the client sees of a failure nobody raised on purpose: nothing of its detail; for a
    database that did not answer, a code saying that the same request may succeed later."""
    if too_late_to_write(error):
        return GraphQLError(
            LATE_MESSAGE, nodes=error.nodes, path=error.path, extensions={"code": "UNAUTHENTICATED"}
        )
    if database_unanswered(error):
        return GraphQLError(
            UNANSWERED_MESSAGE,
            nodes=error.nodes,
            path=error.path,
            extensions={"code": UNANSWERED_CODE},
        )
    return GraphQLError(
        MASKED_MESSAGE,
        nodes=error.nodes,
        path=error.path,
        extensions={"code": "INTERNAL_SERVER_ERROR"},
    )


class MaskUnexpectedErrors(MaskErrors):
    """Strawberry's MaskErrors, telling a result with errors by its `errors` attribute rather
    than by a runtime-checked Protocol (an `isinstance` that costs more than the rest of the
    extension, on every operation); a database that did not answer is said so (`masked`)."""

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        return masked(error)

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        processed = super()._process_errors(errors)
        for error in processed:
            if not (error.extensions or {}).get("code"):
                error.extensions = {**(error.extensions or {}), "code": _code_of(error)}
        return processed

    def _process_result(self, result: object) -> None:
        errors = getattr(result, "errors", None)
        if errors:
            cast(_WithErrors, result).errors = self._process_errors(errors)


# graphql-core's words for variables whose values do not coerce (its validation rules speak of
# variables too: "is never used", "is not defined", "used in position expecting").
_VARIABLES_REFUSED: Final = re.compile(
    r"Variable '\$\w+' (?:has invalid value|got invalid value|of required type .* was not "
    r"provided|of non-null type .* must not be null)|Variable values are nested too deeply"
)


def _code_of(error: GraphQLError) -> str:
    """The code of an error raised without one: GraphQL's own refusals (a syntax error, a
    document that does not validate, variables that do not coerce), or a field that failed
    outside the service's code (a masked failure has its code from `masked`)."""
    if isinstance(error, GraphQLSyntaxError):
        return "GRAPHQL_PARSE_FAILED"
    if error.path is None and _VARIABLES_REFUSED.match(error.message):
        return "BAD_USER_INPUT"
    if error.path is None:
        return "GRAPHQL_VALIDATION_FAILED"
    return "INTERNAL_SERVER_ERROR"


class _WithErrors(Protocol):
    errors: list[GraphQLError] | None


LOGGED_TRACEBACKS: Final = 3
"""Unexpected errors of one operation logged with their traceback; the rest are counted in one
line. A bug met on every item of a list would otherwise log a traceback per item: thousands
of lines for one request."""


def _is_one_of(type_: object, _info: object) -> bool | None:
    """`__Type.isOneOf` as the specification has it: whether an input object takes exactly one
    of its fields, and null for every other kind. Strawberry's read the type's extensions, which
    a list or non-null wrapper does not have: it failed on each one (thousands of errors, each
    logged, for one introspection query)."""
    if not isinstance(type_, GraphQLInputObjectType):
        return None
    definition = type_.extensions.get("strawberry-definition")
    return bool(getattr(definition, "is_one_of", False))


class InMailSchema(strawberry.Schema):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._hooks = HookTable()
        introspected = self._schema.type_map["__Type"]
        assert isinstance(introspected, GraphQLObjectType)
        introspected.fields["isOneOf"].resolve = _is_one_of
        quote_enum_names_briefly(self._schema)

    def create_extensions_runner(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension]
    ) -> SchemaExtensionsRunner:
        return PreparedHooksRunner(execution_context, extensions, self._hooks)

    async def _prepare_operation_async(
        self, context: ExecutionContext, extensions_runner: SchemaExtensionsRunner
    ) -> PreExecutionError | None:
        """Strawberry's, with a document refused by a parsing hook (ParserCache's syntax error,
        MaxTokensLimiter's count, DocumentTextLimits' length and lines) answered as one that
        failed to parse.

        Those hooks raise before Strawberry's own `try` around parsing: over HTTP an outer
        handler still made the error the answer, but over websockets it escaped the operation's
        task (a logged traceback, and no error message to the client).
        """
        try:
            return await super()._prepare_operation_async(context, extensions_runner)
        except GraphQLError as error:
            context.pre_execution_errors = [error]
            return PreExecutionError(data=None, errors=[error])

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        unexpected = 0
        for error in errors:
            if not is_unexpected(error):
                continue
            if too_late_to_write(error):
                log.info("a write came after its token's expiry, at %s: rolled back", error.path)
            elif database_unanswered(error):
                log.warning(
                    "the database did not answer in time, at %s: %s",
                    error.path,
                    error.original_error,
                )
            else:
                unexpected += 1
                if unexpected <= LOGGED_TRACEBACKS:
                    log.error("unexpected error in %s", error.path, exc_info=error.original_error)
        if unexpected > LOGGED_TRACEBACKS:
            log.error(
                "%d more unexpected errors in the same operation (tracebacks of the first %d "
                "above)",
                unexpected - LOGGED_TRACEBACKS,
                LOGGED_TRACEBACKS,
            )


def limit_rules(settings: Settings) -> list[type[ASTValidationRule]]:
    """The depth, alias and size limits, as one rule class made once per schema.

    A rule class made per request would be a new validation cache key every time, so that the
    cache never hit.
    """
    return [document_limits_rule(settings.max_query_depth, settings.max_aliases)]


PARSED_DOCUMENTS: Final = 256
"""Document texts whose parse `ParserCache` remembers (Strawberry's cache, one per size, shared
by every schema of the process); each is at most `INMAIL_MAX_QUERY_LENGTH` long."""


def build_schema(
    settings: Settings,
    *,
    mutation: type | None = None,
    subscription: type | None = Subscription,
) -> strawberry.Schema:
    """The schema the settings call for: in production without advanceClock (SPEC 7)."""
    if mutation is None:
        mutation = ProductionMutation if settings.is_production else Mutation
    quote_client_values_briefly()
    guess_within_budget_everywhere()
    extensions: list[Callable[[], SchemaExtension] | type[SchemaExtension]] = [
        functools.partial(OperationMetrics, labels=OperationLabels()),
        # Before the document is parsed and its variables coerced: variables of more values
        # than any operation takes are refused unread.
        VariablesGuard,
        functools.partial(MaxTokensLimiter, max_token_count=settings.max_tokens),
        # Before ParserCache: a text over its length or lines is never parsed, nor cached.
        functools.partial(
            DocumentTextLimits,
            max_length=settings.max_query_length,
            max_lines=settings.max_query_lines,
        ),
        functools.partial(AddValidationRules, limit_rules(settings)),
        functools.partial(ParserCache, maxsize=PARSED_DOCUMENTS),
        validated_texts(),
        functools.partial(MaskUnexpectedErrors, should_mask_error=is_unexpected),
        query_cost(
            CostLimits(maximum=settings.max_query_cost, max_page_size=settings.max_page_size),
            CostHolders(settings.ws_max_cost_per_member),
            CostHolders(settings.ws_max_subscriptions_per_member),
            CostHolders(settings.max_cost_in_flight_per_member),
        ),
        SubscriptionsOverWebsockets,
        MutationsMarked,
        DatabaseDeadline,
        MemberMustExist,
    ]
    if not settings.introspection:
        extensions.append(DisableIntrospection)
    if not settings.suggestions:
        extensions.append(HideSuggestions)
    scalar_overrides: dict[object, ScalarDefinition] = {datetime: DateTime}
    schema = InMailSchema(
        query=Query,
        mutation=mutation,
        subscription=subscription,
        extensions=extensions,
        scalar_overrides=scalar_overrides,
        execution_context_class=PlainLeavesExecutionContext,
    )
    read_plain_fields_directly(schema._schema)
    call_simple_resolvers_directly(schema)
    return schema


def read_plain_fields_directly(schema: GraphQLSchema) -> None:
    """Fields that only show an attribute of their object (no resolver, no field extension)
    read it with one `getattr`, instead of through Strawberry's general resolver path.

    A page of 100 conversations resolves some 1,500 such fields; what they answer is the same.
    A field whose Strawberry definition is not recognised keeps Strawberry's resolver.
    """
    for _, graphql_field, definition in _strawberry_fields(schema):
        if definition.is_basic_field:
            leaf = get_nullable_type(graphql_field.type)
            graphql_field.resolve = AttributeReader(
                definition.python_name,
                leaf if is_leaf_type(leaf) else None,
                is_non_null_type(graphql_field.type),
            )


def output_coercion(leaf: GraphQLLeafType) -> Callable[[Any], Any]:
    """The leaf type's `coerce_output_value`; for an enum of Strawberry's, the same answers with
    each member's name looked up at once (Strawberry's compares the member's value with each of
    the enum's values in turn, on every value shown). Anything but a member it names takes the
    type's own path, which answers or refuses it as before."""
    coerce = leaf.coerce_output_value
    if not isinstance(leaf, CustomGraphQLEnumType):
        return coerce
    wrapped: type[Any] = leaf.wrapped_cls
    names: dict[object, str] = {}
    for member in wrapped:
        for name, value in leaf.values.items():
            if member.value == value.value:  # Strawberry's test, and its first match
                names[member] = name
                break

    def coerce_member(output_value: Any) -> Any:
        # An enum with members has no subclasses: `type(...) is` is Strawberry's isinstance.
        if type(output_value) is wrapped:
            name = names.get(output_value)
            if name is not None:
                return name
        return coerce(output_value)

    return coerce_member


class AttributeReader:
    """The resolver of a field that shows an attribute of its object. For a scalar or enum
    (`leaf`), `PlainLeavesExecutionContext` reads the attribute without calling it."""

    __slots__ = ("coerce", "name", "non_null")

    def __init__(self, name: str, leaf: GraphQLLeafType | None, non_null: bool) -> None:
        self.name = name
        self.non_null = non_null
        # How the leaf's values are coerced for output (`output_coercion`); None: no leaf.
        self.coerce = None if leaf is None else output_coercion(leaf)

    def __call__(self, source: object, _info: object) -> object:
        return getattr(source, self.name)


class PlainLeavesExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's execution, with a short way for a scalar or enum field that shows an
    attribute of its object (an `AttributeReader`'s `leaf`): the attribute read and coerced as
    graphql-core would, in the loop over its object's fields, without the path, resolve info,
    resolver call and value completion that graphql-core builds for every field.

    Most of a member page's fields are such fields. Whatever is not plainly a value
    (a missing attribute, null where the type forbids it, a value the type refuses, middleware)
    takes graphql-core's path, which answers or reports it as it always has.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Strawberry hands every execution a middleware manager, empty unless an extension
        # resolves fields; with middleware, every field goes through it.
        manager = self.middleware_manager
        self._plain_leaves = manager is None or not manager.middlewares
        # graphql-core gives resolvers helpers bound to the execution, which holds them: a
        # cycle that kept each request's execution, context, loaders and records alive until
        # the garbage collector found them. Bound weakly, all of it goes when the request ends.
        self.async_helpers = GraphQLResolveInfoHelpers(
            gather=weakly_bound(self.gather_async_work), track=weakly_bound(self.track_async_work)
        )
        # Per selection of this execution: how each of its fields is answered.
        self._selections: dict[int, tuple[GroupedFieldSet, GraphQLObjectType, _Selection]] = {}

    def build_per_event_executor(self, payload: object) -> Executor[DeliveryGroupMap]:
        """Each event of a subscription collects its fields afresh: its selections are its own,
        not added to the subscription's for as long as the socket lives."""
        executor = super().build_per_event_executor(payload)
        if isinstance(executor, PlainLeavesExecutionContext):
            executor._selections = {}
        return executor

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: object,
        path: Path | None,
        grouped_field_set: GroupedFieldSet,
        position_context: DeliveryGroupMap | None,
    ) -> AwaitableOrValue[dict[str, Any]]:
        """graphql-core's, with each plain leaf (most of a lot's, a ledger entry's or a
        conversation's fields) answered in place, without a path, a call or an awaitable check
        of its own. A leaf that is not plainly a value, and every other field, is executed as
        graphql-core does."""
        selection = self._selection_of(parent_type, grouped_field_set)
        if not selection:
            return super().execute_fields(
                parent_type, source_value, path, grouped_field_set, position_context
            )
        results: dict[str, Any] = {}
        is_awaitable = self.is_awaitable
        awaitable_fields: list[str] = []
        try:
            for response_name, field_details_list, plain in selection:
                if plain is not None:
                    value = _plain_value(plain, source_value)
                    if value is not _NOT_PLAIN:
                        results[response_name] = value
                        continue
                result = super().execute_field(
                    parent_type,
                    source_value,
                    field_details_list,
                    Path(path, response_name, parent_type.name),
                    position_context,
                )
                if result is not Undefined:
                    results[response_name] = result
                    if is_awaitable(result):
                        awaitable_fields.append(response_name)
        except Exception:
            if awaitable_fields:  # settled still, as they may fail too
                self.settle_in_background([results[name] for name in awaitable_fields])
            raise
        if not awaitable_fields:
            return results
        return _awaited(results, awaitable_fields)

    def _selection_of(
        self, parent_type: GraphQLObjectType, grouped_field_set: GroupedFieldSet
    ) -> _Selection:
        """The selection's fields, each with its reader when it is a plain leaf
        of `parent_type`; empty when none is (or middleware must see every field). Worked out
        once per selection: the objects of a list share theirs."""
        if not self._plain_leaves:
            return ()
        known = self._selections.get(id(grouped_field_set))
        if known is not None and known[0] is grouped_field_set and known[1] is parent_type:
            return known[2]
        fields: list[tuple[str, FieldDetailsList, AttributeReader | None]] = []
        for response_name, field_details_list in grouped_field_set.items():
            field = parent_type.fields.get(field_details_list[0].node.name.value)
            reader = None if field is None else field.resolve
            plain = None
            if type(reader) is AttributeReader and reader.coerce is not None:
                plain = reader
            fields.append((response_name, field_details_list, plain))
        selection = tuple(fields) if any(plain for *_, plain in fields) else ()
        # The selection is kept with its answer, so that its id names it for the execution.
        self._selections[id(grouped_field_set)] = (grouped_field_set, parent_type, selection)
        return selection


_NOT_PLAIN: Final = object()

_Selection = tuple[tuple[str, FieldDetailsList, AttributeReader | None], ...]


async def _awaited(results: dict[str, Any], awaitable_fields: list[str]) -> dict[str, Any]:
    """The object's results with its awaitable fields awaited (as graphql-core does)."""
    if len(awaitable_fields) == 1:
        name = awaitable_fields[0]
        results[name] = await results[name]
        return results
    awaited = await gather_with_cancel(*(results[name] for name in awaitable_fields))
    results.update(zip(awaitable_fields, awaited, strict=True))
    return results


def _plain_value(reader: AttributeReader, source: object) -> object:
    """The field's value as graphql-core would complete it, or `_NOT_PLAIN` when anything
    about it is not plain (graphql-core's path then reports it)."""
    try:
        value = getattr(source, reader.name)
        if value is None:
            return _NOT_PLAIN if reader.non_null else None
        assert reader.coerce is not None, "a plain leaf's reader coerces"
        coerced = reader.coerce(value)
    except Exception:
        return _NOT_PLAIN
    return _NOT_PLAIN if coerced is None or coerced is Undefined else coerced


def _strawberry_fields(
    schema: GraphQLSchema,
) -> Iterator[tuple[GraphQLObjectType, GraphQLField, StrawberryField]]:
    """Each field of the schema's own object types (introspection's left out), with the
    Strawberry definition it was built from; a field without one is not listed."""
    for named in schema.type_map.values():
        if not isinstance(named, GraphQLObjectType) or named.name.startswith("__"):
            continue
        for graphql_field in named.fields.values():
            definition = graphql_field.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
            if isinstance(definition, StrawberryField):
                yield named, graphql_field, definition


def call_simple_resolvers_directly(schema: strawberry.Schema) -> None:
    """Fields of the API's object types whose resolver takes only its object (and `info`), with
    no arguments and no field extension, call it directly with Strawberry's `Info`, instead of
    through Strawberry's general path (argument conversion, the extension chain, an extra
    coroutine around an async resolver).

    A page of 100 conversations calls some 500 such resolvers (sender, recipient, messages,
    each message's author). What they are given and what they answer is the same. The roots
    (Query, Mutation, Subscription) keep Strawberry's path, and so does every field when the
    schema has exception handlers (this one has none).
    """
    if getattr(schema.schema_converter, "_exception_handler_specs", None):
        return
    core = schema._schema
    roots = {core.query_type, core.mutation_type, core.subscription_type}
    info_class = schema.config.info_class
    for named, graphql_field, definition in _strawberry_fields(core):
        resolver = definition.base_resolver
        if (
            named in roots
            or resolver is None
            or definition.extensions
            or definition.arguments
            or graphql_field.args
            or resolver.self_parameter is None
            or resolver.root_parameter is not None
            or resolver.parent_parameter is not None
        ):
            continue
        func = resolver.wrapped_func
        if not callable(func):  # a staticmethod or classmethod: Strawberry's path
            continue
        info = resolver.info_parameter
        graphql_field.resolve = _direct_call(
            func,
            None if info is None else info.name,
            functools.partial(info_class, _field=definition),
        )


def _direct_call(
    func: Callable[..., object], info_name: str | None, make_info: Callable[..., object]
) -> Callable[[object, object], object]:
    if info_name is None:

        def call(source: object, _info: object) -> object:
            return func(source)

        return call

    def call_with_info(source: object, info: object) -> object:
        return func(source, **{info_name: make_info(_raw_info=info)})

    return call_with_info
