"""What the endpoint judges of a GraphQL document before Strawberry runs it: whether it defines
several operations (a cheap look, then a bounded parse), whether an operation never ran, and the
words for a document with no operation to run."""

from __future__ import annotations

import re
from typing import Final

from graphql import GraphQLError, OperationDefinitionNode, parse
from strawberry.exceptions import MissingQueryError
from strawberry.schema.exceptions import CannotGetOperationTypeError
from strawberry.types.execution import ExecutionResult, PreExecutionError

from inmail.schema.errors import ApiError
from inmail.schema.quoting import briefly


def never_ran(result: ExecutionResult) -> bool:
    """No data at all, and no error belongs to a field: the document did not parse or validate,
    the variables did not coerce, or the operation was refused before any resolver ran."""
    if isinstance(result, PreExecutionError):
        return True
    errors = result.errors or []
    return result.data is None and bool(errors) and all(error.path is None for error in errors)


# Every operation but the shorthand `{ ... }` (which must stand alone) begins with one of these.
_OPERATION_KEYWORD: Final = re.compile(r"\b(?:query|mutation|subscription)\b", re.ASCII)


def names_two_operation_keywords(query: str) -> bool:
    """Whether the text could define more than one operation (a cheap first look)."""
    keywords = _OPERATION_KEYWORD.finditer(query)
    return next(keywords, None) is not None and next(keywords, None) is not None


def defines_several_operations(query: str, max_tokens: int, max_length: int) -> bool:
    """Whether the document defines more than one operation, parsed within the token and
    length limits; one that does not parse is left to Strawberry to answer."""
    try:
        document = parse(
            query, no_location=True, max_tokens=max_tokens, max_source_length=max_length
        )
    except (GraphQLError, RecursionError):
        return False
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    return len(operations) > 1


MULTIPLE_OPERATIONS: Final = "Must provide operation name if query contains multiple operations."


def unknown_operation(name: str) -> str:
    """The refusal of an operationName the document does not hold, quoting it `briefly`: the
    name is the client's, as long as its body."""
    return f'Unknown operation named "{briefly(name)}".'


NO_OPERATION: Final = (
    "The document has no operation to run: it defines only fragments or types. Send a query, "
    "mutation or subscription."
)


def without_operation() -> ExecutionResult:
    """The answer to a document that defines no operation (only fragments, or type system
    definitions), which no operationName can pick: a validation error, as GraphQL's rules make
    it (an unused fragment, a definition that is not executable), answered as one."""
    return ExecutionResult(data=None, errors=[ApiError(NO_OPERATION, "GRAPHQL_VALIDATION_FAILED")])


def no_operation_to_run(error: GraphQLError) -> GraphQLError:
    """A websocket operation whose document has no operation to run, in words a client can act
    on (HTTP answers the same documents with a 400); any other error as it is."""
    original = error.original_error
    if isinstance(original, MissingQueryError):
        message = "The query is empty: send a GraphQL document with an operation."
    elif isinstance(original, CannotGetOperationTypeError):
        message = (
            unknown_operation(original.operation_name)
            if original.operation_name is not None
            else "The document has no operation to run, or several and no operationName to "
            "choose one."
        )
    else:
        return error
    return ApiError(message, "BAD_REQUEST")
