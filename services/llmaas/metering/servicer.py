"""llmaas.metering.v1.MeteringService."""

from __future__ import annotations

import grpc

from llmaas.common.errors import ApiError, invalid_request
from llmaas.metering.ledger import Ledger, UnknownReservation
from llmaas.metering.v1 import metering_pb2, metering_pb2_grpc

OUTCOMES = {"completed", "failed", "cancelled"}


class MeteringServicer(metering_pb2_grpc.MeteringServiceServicer):
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    async def Reserve(self, request, context):
        if not request.request_id or not request.tenant_id:
            raise invalid_request("request_id and tenant_id are required", param="request_id")
        granted = self._ledger.reserve(request.request_id, request.tenant_id, request.key_id, request.model,
                                       request.max_input_tokens, request.max_output_tokens)
        return metering_pb2.ReserveResponse(granted=granted)

    async def Settle(self, request, context):
        if request.outcome not in OUTCOMES:
            raise invalid_request(f"outcome must be one of {sorted(OUTCOMES)}", param="outcome")
        try:
            recorded = self._ledger.settle(request.request_id, request.prompt_tokens, request.completion_tokens,
                                           request.outcome)
        except UnknownReservation:
            raise ApiError(grpc.StatusCode.NOT_FOUND, "No reservation for this request id",
                           param="request_id", code="reservation_not_found") from None
        return metering_pb2.SettleResponse(recorded=recorded)

    async def GetUsage(self, request, context):
        t = self._ledger.totals(request.tenant_id, request.key_id)
        return metering_pb2.GetUsageResponse(
            requests=t.requests, prompt_tokens=t.prompt_tokens, completion_tokens=t.completion_tokens)
