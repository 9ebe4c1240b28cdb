"""Schemathesis over every operation of a service's own schema, driven through its Python API
(pytest's schemathesis loader does not work with pytest 9), with every operation's failures
reported together."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, GenerationMode
from schemathesis.core.result import Ok

Case = schemathesis.Case[APIOperation[Any, Any, Any, Any]]


def fuzz(
    schema: schemathesis.BaseSchema,
    mode: GenerationMode,
    check: Callable[[Case], None],
    *,
    at_least: int,
    examples: int,
) -> None:
    """`check` each of `examples` generated requests per operation, valid (positive) or invalid
    (negative), the same requests on every run; fail with every operation's failure.

    The schema must have `at_least` operations (else a route was lost). An operation whose
    parameters are all unconstrained strings, or that has none, cannot be sent invalid data:
    that is allowed in the negative mode, for fewer than half of them.
    """
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()
        operations.append(result.ok())
    assert len(operations) >= at_least, "the schema lost operations"
    failures: list[str] = []
    unbreakable: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,  # the same requests on every run: no flaky failures
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Case) -> None:
            check(case)

        name = f"{operation.method.upper()} {operation.path}"
        try:
            run()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE, name
            unbreakable.append(name)
        except AssertionError as failure:
            failures.append(f"{name}: {failure}")
    assert not failures, "\n\n".join(failures)
    assert len(unbreakable) < len(operations) // 2, unbreakable
