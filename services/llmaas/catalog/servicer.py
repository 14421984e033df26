"""llmaas.catalog.v1.CatalogService: /v1/models and model resolution for the router.

A retired model (end of support or removed, and not served) answers model_retired naming its recommended migration.
If the caller's tenant opted in (ResolveModelRequest.serve_successor, from its signed identity), the model of its
migration chain that is served answers instead (`serving_successor`), and the response says which model it stands in
for (`substituted_for`) so that the router can tell the client.
"""

from __future__ import annotations

import datetime as dt

import grpc

from llmaas.catalog import lifecycle
from llmaas.catalog.entries import Catalog, ModelEntry
from llmaas.catalog.reload import CatalogSource
from llmaas.catalog.served import ServedModels, Snapshot
from llmaas.catalog.status import ServingHistory
from llmaas.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from llmaas.catalog.watch import Revisions
from llmaas.common.errors import ApiError, invalid_request, model_unavailable
from llmaas.common.identity import Identity, identity_from_metadata, metadata_dict

OWNED_BY = "llmaas"


def model_not_found(name: str) -> ApiError:
    return ApiError(grpc.StatusCode.NOT_FOUND, f"The model '{name}' does not exist or you do not have access to it.",
                    param="model", code="model_not_found")


def is_retired(entry: ModelEntry, today: dt.date) -> bool:
    return lifecycle.phase(entry, today) in (lifecycle.END_OF_SUPPORT, lifecycle.REMOVED)


# A crashed model is reloaded within a few seconds (llmaas.catalog.served).
RETRY_AFTER_SECONDS = 3


def model_retired(entry: ModelEntry, catalog: Catalog, today: dt.date, *,
                  opted_in: bool = False) -> ApiError | None:
    """The error for a model that is not served because its life is over, naming what to migrate to. `opted_in`:
    the caller asked to be served by the successor, and no model of the migration chain is served here."""
    if not is_retired(entry, today):
        return None
    st = lifecycle.status(entry, catalog, today)
    when = f" on {st.sunset.isoformat()}" if st.sunset else ""
    advice = f" Please migrate to '{st.successor}'." if st.successor else ""
    if opted_in and st.successor:
        advice += " No model of its migration chain is served here to answer in its place."
    return ApiError(grpc.StatusCode.NOT_FOUND, f"The model '{entry.id}' was retired{when}.{advice}",
                    param="model", code="model_retired")


def serving_successor(entry: ModelEntry, catalog: Catalog, served: Snapshot) -> ModelEntry | None:
    """The model that answers in place of a retired `entry` for a tenant that opted in: the recommended successor
    (the end of the migration chain) when it is served, else the served model closest to it along the chain
    (A -> B -> C with C not deployed here gives B), else None."""
    for candidate in reversed(lifecycle.migration_chain(entry, catalog)):
        if served.served(candidate):
            return candidate
    return None


def _iso(day: dt.date | None) -> str:
    return day.isoformat() if day else ""


def _lifecycle_message(entry: ModelEntry, catalog: Catalog, today: dt.date) -> catalog_pb2.ModelLifecycle:
    st = lifecycle.status(entry, catalog, today)
    return catalog_pb2.ModelLifecycle(
        phase=st.phase, production_date=_iso(entry.production_date), end_of_support=_iso(st.end_of_support),
        notice_start=_iso(st.notice_start), sunset=_iso(st.sunset), lts=st.lts, successor=st.successor or "")


def _model_message(entry: ModelEntry, catalog: Catalog, today: dt.date) -> catalog_pb2.Model:
    return catalog_pb2.Model(
        id=entry.id,
        object="model",
        created=entry.created,
        owned_by=OWNED_BY,
        root=entry.id,
        aliases=list(entry.aliases),
        max_model_len=entry.max_model_len,
        permission=[catalog_pb2.ModelPermission(
            id=f"modelperm-{entry.id}-{entry.created}", object="model_permission",
            allow_sampling=True, allow_view=True, allow_fine_tuning=False)],
        type=entry.type,
        capabilities=list(entry.capabilities),
        lifecycle=_lifecycle_message(entry, catalog, today),
    )


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer, catalog_pb2_grpc.CatalogInternalServiceServicer):
    def __init__(self, source: CatalogSource, served: ServedModels, internal_secret: str,
                 revisions: Revisions | None = None, history: ServingHistory | None = None) -> None:
        self._source = source
        self._history = history if history is not None else ServingHistory()
        self._served = served
        self._secret = internal_secret
        self._revisions = revisions if revisions is not None else Revisions()

    def _caller(self, context) -> Identity | None:
        """The key behind a /v1/models request (signed by ext_authz). None for internal gRPC callers, who see all;
        a header that does not verify was forged."""
        return identity_from_metadata(metadata_dict(context), self._secret)

    @staticmethod
    def _visible(entry: ModelEntry, caller: Identity | None) -> bool:
        return caller is None or caller.may_use(entry.id, *entry.aliases)

    async def _served_entry(self, catalog: Catalog, name: str) -> ModelEntry:
        entry, _, _ = await self._resolve(catalog, name, serve_successor=False)
        return entry

    async def _resolve(self, catalog: Catalog, name: str, *,
                       serve_successor: bool) -> tuple[ModelEntry, ModelEntry | None, tuple[str, ...]]:
        """The served model that answers for `name`, the retired model it stands in for (None: itself), and the
        replicas that serve it now."""
        entry = catalog.lookup(name)
        if entry is None:
            raise model_not_found(name)
        served = await self._served.snapshot()
        if replicas := served.replicas(entry):
            return entry, None, replicas
        today = dt.date.today()
        if serve_successor and is_retired(entry, today):
            successor = serving_successor(entry, catalog, served)
            if successor is not None:
                return successor, entry, served.replicas(successor)
        if served.down(entry):
            raise model_unavailable(entry.id, RETRY_AFTER_SECONDS, param="model")
        raise model_retired(entry, catalog, today, opted_in=serve_successor) or model_not_found(name)

    async def ListModels(self, request, context):
        served = await self._served.snapshot()
        catalog, today, caller = self._source.current, dt.date.today(), self._caller(context)
        data = [_model_message(m, catalog, today) for m in catalog.models
                if served.served(m) and self._visible(m, caller)]
        return catalog_pb2.ListModelsResponse(object="list", data=data)

    async def GetModel(self, request, context):
        catalog, caller = self._source.current, self._caller(context)
        entry = await self._served_entry(catalog, request.model)
        if not self._visible(entry, caller):
            raise model_not_found(request.model)
        return _model_message(entry, catalog, dt.date.today())

    async def ListLifecycle(self, request, context):
        try:
            day = dt.date.fromisoformat(request.date) if request.date else dt.date.today()
        except ValueError:
            raise invalid_request("Invalid 'date': expected YYYY-MM-DD.", param="date", code="invalid_value") from None
        catalog, served = self._source.current, await self._served.snapshot()
        return catalog_pb2.ListLifecycleResponse(object="list", date=day.isoformat(), data=[
            catalog_pb2.ModelLifecycleEntry(
                id=m.id, editor=m.editor, type=m.type, served=served.served(m),
                lifecycle=_lifecycle_message(m, catalog, day))
            for m in catalog.models])

    async def ResolveModel(self, request, context):
        catalog = self._source.current  # one catalogue for the whole call, even if a reload lands meanwhile
        entry, retired, replicas = await self._resolve(catalog, request.model,
                                                       serve_successor=request.serve_successor)
        today = dt.date.today()
        status = lifecycle.status(entry, catalog, today)
        headers = lifecycle.deprecation_headers(entry, today)
        return catalog_pb2.ResolveModelResponse(
            phase=status.phase, deprecation=headers.get("Deprecation", ""), sunset=headers.get("Sunset", ""),
            successor=status.successor or "",
            id=entry.id, triton_model=entry.triton_model, pool=entry.pool, chat_template=entry.chat_template,
            max_model_len=entry.max_model_len, default_max_tokens=entry.default_max_tokens, type=entry.type,
            capabilities=list(entry.capabilities), bos_token=entry.bos_token, eos_token=entry.eos_token,
            substituted_for=retired.id if retired else "", aliases=list(entry.aliases),
            kwh_per_million_tokens=entry.kwh_per_million_tokens, endpoints=replicas,
            reasoning=_reasoning_message(entry.reasoning))

    async def ReportReplicaFailure(self, request, context):
        accepted = self._served.report(request.replica, request.triton_model)
        return catalog_pb2.ReportReplicaFailureResponse(accepted=accepted)

    async def GetServingStatus(self, request, context):
        return self._history.status(self._source.current, await self._served.snapshot(), self._served.incidents())

    async def WatchCatalog(self, request, context):
        async for revision in self._revisions.stream():
            yield catalog_pb2.CatalogRevision(revision=revision, instance=self._revisions.instance,
                                              heartbeat_seconds=max(1, round(self._revisions.heartbeat)))


def _reasoning_message(reasoning) -> catalog_pb2.ReasoningFormat | None:
    if reasoning is None:
        return None
    return catalog_pb2.ReasoningFormat(start=reasoning.start, end=reasoning.end, efforts=list(reasoning.efforts))
