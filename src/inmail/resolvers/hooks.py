"""Schema extension hooks found once per extension class, not once per request.

For each request Strawberry makes its extensions anew and, for each of the four stages
(operation, parsing, validation, execution), looks at every extension to learn whether and
how it hooks that stage, then wraps each hook in a new context manager factory. With this
schema's nine extensions that is 36 inspections and some 20 wrappers per request, the same
every time. `HookTable` learns them once per extension class and stage; a request's runner
then only binds the hooks to that request's extension instances. What runs, in what order,
is what Strawberry runs.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

from strawberry.extensions import SchemaExtension
from strawberry.extensions.context import (
    ExecutingContextManager,
    ExtensionContextManagerBase,
    OperationContextManager,
    ParsingContextManager,
    ValidationContextManager,
    WrappedHook,
)
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.types import ExecutionContext

_Factory = Callable[
    [SchemaExtension],
    contextlib.AbstractContextManager[None] | contextlib.AbstractAsyncContextManager[None],
]
_Found = tuple[_Factory, bool] | None  # a factory taking the extension; is it async


def _found(kind: type[SchemaExtension], stage: str) -> _Found:
    """How `kind` hooks `stage`, as Strawberry reads it (`ExtensionContextManagerBase.get_hook`):
    a generator or async generator is the context manager's body; a plain function or
    coroutine function runs on entering."""
    hook = getattr(kind, stage)
    if hook is getattr(SchemaExtension, stage):
        return None
    if inspect.isgeneratorfunction(hook):
        return contextlib.contextmanager(hook), False
    if inspect.isasyncgenfunction(hook):
        return contextlib.asynccontextmanager(hook), True
    if not callable(hook):
        raise ValueError(f"Hook {stage} on {kind} must be callable, received {hook!r}")
    if inspect.iscoroutinefunction(hook):

        @contextlib.asynccontextmanager
        async def awaited(extension: SchemaExtension) -> AsyncIterator[None]:
            await hook(extension)
            yield

        return awaited, True

    @contextlib.contextmanager
    def called(extension: SchemaExtension) -> Iterator[None]:
        hook(extension)
        yield

    return called, False


class HookTable:
    """Each extension class's hook for each stage, learnt on first use."""

    def __init__(self) -> None:
        self._found: dict[tuple[type[SchemaExtension], str], _Found] = {}

    def hooks(self, stage: str, extensions: list[SchemaExtension]) -> list[WrappedHook]:
        bound = []
        for extension in extensions:
            key = (type(extension), stage)
            if key not in self._found:
                self._found[key] = _found(type(extension), stage)
            found = self._found[key]
            if found is not None:
                factory, is_async = found
                bound.append(
                    WrappedHook(extension, functools.partial(factory, extension), is_async)
                )
        return bound


class _Prepared(ExtensionContextManagerBase):
    """A stage's context manager given its hooks, instead of finding them (Strawberry's runs
    them as ever), that also leaves the hooks already entered when a later one fails to enter:
    Strawberry's would leave them open (a generator hook's `finally` then runs only when the
    collector closes it, elsewhere)."""

    def __init__(self, hooks: list[WrappedHook]) -> None:
        self.hooks = hooks

    def __enter__(self) -> None:
        try:
            super().__enter__()
        except BaseException as exc:
            self.exit_stack.__exit__(type(exc), exc, exc.__traceback__)
            raise

    async def __aenter__(self) -> None:
        try:
            await super().__aenter__()
        except BaseException as exc:
            await self.async_exit_stack.__aexit__(type(exc), exc, exc.__traceback__)
            raise


class _Operation(_Prepared, OperationContextManager):
    pass


class _Parsing(_Prepared, ParsingContextManager):
    pass


class _Validation(_Prepared, ValidationContextManager):
    pass


class _Executing(_Prepared, ExecutingContextManager):
    pass


Stage = TypeVar("Stage", bound=_Prepared)


class PreparedHooksRunner(SchemaExtensionsRunner):
    """Strawberry's runner, its stages' hooks taken from a `HookTable`."""

    def __init__(
        self,
        execution_context: ExecutionContext,
        extensions: list[SchemaExtension],
        table: HookTable,
    ) -> None:
        super().__init__(execution_context, extensions)
        self._table = table

    def _prepared(self, stage: type[Stage]) -> Stage:
        return stage(self._table.hooks(stage.HOOK_NAME, self.extensions))

    def operation(self) -> OperationContextManager:
        return self._prepared(_Operation)

    def parsing(self) -> ParsingContextManager:
        return self._prepared(_Parsing)

    def validation(self) -> ValidationContextManager:
        return self._prepared(_Validation)

    def executing(self) -> ExecutingContextManager:
        return self._prepared(_Executing)
