"""llmaas.guard.v1.GuardService: one verdict per request over every part of the conversation."""

from __future__ import annotations

from opentelemetry import trace

from llmaas.guard import rules
from llmaas.guard.v1 import guard_pb2, guard_pb2_grpc

BLOCK_THRESHOLD = 0.8


class GuardServicer(guard_pb2_grpc.GuardServiceServicer):
    def __init__(self, mode: int = guard_pb2.GUARD_MODE_ENFORCE, threshold: float = BLOCK_THRESHOLD) -> None:
        self._mode = mode
        self._threshold = threshold

    async def CheckPrompt(self, request, context):
        if self._mode == guard_pb2.GUARD_MODE_OFF:
            return guard_pb2.CheckPromptResponse(decision=guard_pb2.DECISION_ALLOW, mode=self._mode)
        findings = [f for part in request.parts for f in rules.scan(part.text)]
        score = max((f.score for f in findings), default=0.0)
        block = self._mode == guard_pb2.GUARD_MODE_ENFORCE and score >= self._threshold
        decision = guard_pb2.DECISION_BLOCK if block else guard_pb2.DECISION_ALLOW
        span = trace.get_current_span()
        span.set_attribute("llmaas.guard.decision", "block" if block else "allow")
        span.set_attribute("llmaas.guard.score", score)
        return guard_pb2.CheckPromptResponse(
            decision=decision, score=score, mode=self._mode,
            findings=[guard_pb2.Finding(layer=f.layer, reason=f.reason, score=f.score) for f in findings])
