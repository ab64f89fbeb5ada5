"""Asks: propose where to measure next; list and abandon suggestions."""

from __future__ import annotations

from fastapi import APIRouter, Query, status
from fastapi.exceptions import RequestValidationError

from server.api.deps import ServiceDep
from server.api.schemas import ErrorPublic, SuggestionPublic, SuggestionRequest, SuggestionsPublic
from server.api.security import RESPONSES, AskDep, ReadDep
from server.service import suggestion_json
from server.store.base import SuggestionStatus

router = APIRouter(prefix="/api/v1/experiments/{experiment_id}/suggestions",
                   tags=["suggestions"],
                   responses={404: {"model": ErrorPublic}, 422: {"model": ErrorPublic},
                              **RESPONSES})


@router.post("", status_code=status.HTTP_201_CREATED, response_model=SuggestionsPublic,
             responses={409: {"model": ErrorPublic}})
async def suggest(experiment_id: str, service: ServiceDep, _: AskDep,
                  body: SuggestionRequest | None = None,
                  n: int | None = Query(None, ge=1, le=100,
                                        description="The same as the body's n (either)"),
                  ) -> SuggestionsPublic:
    """Propose ``n`` positions, ordered for short motor travel, stored as pending.

    Pending suggestions (from any client) are taken into account, so parallel asks never
    return the same places.
    """
    if body is not None and body.n is not None:
        if n is not None and n != body.n:
            raise RequestValidationError([{
                "loc": ("query", "n"), "type": "value_error",
                "msg": f"{n} differs from the body's n ({body.n}): give one"}])
        n = body.n
    recs = await service.suggest(experiment_id, n)
    return SuggestionsPublic.model_validate({"suggestions": [suggestion_json(s) for s in recs]})


@router.get("", response_model=SuggestionsPublic)
async def list_suggestions(experiment_id: str, service: ServiceDep, _: ReadDep,
                           status: SuggestionStatus | None = None) -> SuggestionsPublic:
    """Suggestions, oldest first; ``?status=pending`` for those awaiting a measurement."""
    await service.get_experiment(experiment_id)
    recs = await service.list_suggestions(experiment_id, status)
    return SuggestionsPublic.model_validate({"suggestions": [suggestion_json(s) for s in recs]})


@router.delete("/{suggestion_id}", response_model=SuggestionPublic)
async def abandon(experiment_id: str, suggestion_id: str, service: ServiceDep,
                  _: AskDep) -> SuggestionPublic:
    """Abandon a pending suggestion (it will not be measured); a no-op on a closed one."""
    return SuggestionPublic.model_validate(
        suggestion_json(await service.abandon(experiment_id, suggestion_id)))
