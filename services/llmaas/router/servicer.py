"""llmaas.router.v1.RouterService: the REST surface (HttpBody, JSON or SSE) and its typed gRPC twins."""

from __future__ import annotations

from contextlib import aclosing

import grpc
from google.api import httpbody_pb2

from llmaas.common.errors import ApiError
from llmaas.common.identity import IDENTITY_HEADER
from llmaas.router import completions
from llmaas.router import openai_json as oj
from llmaas.router.audio import AudioPipeline
from llmaas.router.batch.api import BatchApi
from llmaas.router.embeddings import GRPC_EMBEDDINGS, REST_EMBEDDINGS, EmbeddingService
from llmaas.router.pipeline import ChatPipeline
from llmaas.router.read_ahead import ReadAhead
from llmaas.router.rerank import GRPC_RERANK, REST_RERANK, RerankService
from llmaas.router.status import StatusPage
from llmaas.router.v1 import router_pb2_grpc

GRPC_UNARY = "grpc llmaas.router.v1.RouterService/CreateChatCompletion"
GRPC_STREAM = "grpc llmaas.router.v1.RouterService/StreamChatCompletion"


class RouterServicer(router_pb2_grpc.RouterServiceServicer):
    def __init__(self, pipeline: ChatPipeline, status: StatusPage | None = None, batches: BatchApi | None = None,
                 embeddings: EmbeddingService | None = None) -> None:
        self._pipeline = pipeline
        self._status = status
        self._audio = AudioPipeline(pipeline)
        self._embeddings = embeddings or EmbeddingService(pipeline)
        self._rerank = RerankService(pipeline)
        self._batches = batches

    async def ChatCompletionsHttp(self, request, context):
        run = await self._pipeline.prepare(request, context)
        try:
            if not run.params.stream:
                body = oj.completion_of(run, await self._pipeline.collect(run))
                await context.send_initial_metadata(run.headers)
                yield httpbody_pb2.HttpBody(content_type="application/json", data=oj.json_body(body))
            elif run.choices:
                async with aclosing(self._pipeline.run_choices(run)) as merged:
                    async for body in self._http_choice_bodies(run, merged, context):
                        yield body
            else:
                async with aclosing(self._pipeline.run(run)) as deltas:
                    async for body in self._http_bodies(run, deltas, context):
                        yield body
        finally:
            self._pipeline.finish(run)

    async def _http_bodies(self, run, deltas, context):
        """A single choice's stream."""
        # Read ahead of the client: what the model produced while the last message was being written goes out in the
        # next one (llmaas.router.read_ahead). Wait for the model's first output before sending anything, so that an
        # early backend error keeps its status.
        ahead = ReadAhead(deltas)
        try:
            batch = await ahead.batch()
            await context.send_initial_metadata(run.headers)
            content_type = "text/event-stream"
            data = oj.sse(oj.chunk(run, {"role": "assistant", "content": "", "refusal": None}))
            try:
                while True:
                    final = next((i for i, d in enumerate(batch) if d.final), None)
                    if final is not None:
                        batch = batch[:final + 1]
                    if run.output is None:
                        data += b"".join(oj.sse(oj.chunk(run, {"content": d.text})) for d in batch if d.text)
                    else:
                        data += b"".join(oj.shaped_chunks(run, run.output.deltas(d)) for d in batch)
                    if final is not None:
                        break
                    if data:
                        yield httpbody_pb2.HttpBody(content_type=content_type, data=data)
                        content_type, data = "", b""
                    batch = await ahead.batch()
            except ApiError as err:
                # The status line is sent: the error goes in-band (the SDK raises it), and the stream still ends
                # properly.
                yield httpbody_pb2.HttpBody(content_type=content_type, data=data + oj.sse_error(err) + oj.DONE_EVENT)
                return
            # The end in one message: the finish reason, the usage when asked for, [DONE].
            if run.output is not None:
                data += oj.shaped_chunks(run, run.output.end())
            data += oj.sse(oj.final_chunk(run))
            if run.params.include_usage:
                data += oj.sse(oj.usage_chunk(run))
            yield httpbody_pb2.HttpBody(content_type=content_type, data=data + oj.DONE_EVENT)
        finally:
            await ahead.close()

    async def _http_choice_bodies(self, run, merged, context):
        """A stream of several choices (n > 1): each delta as its choice's events, as it comes (OpenAI's `index` tells
        them apart; each choice's finish chunk when it ends), then the request's usage and [DONE]."""
        first = await anext(merged, None)  # before any byte: an early backend error keeps its status
        await context.send_initial_metadata(run.headers)
        data = b"".join(oj.sse(oj.chunk(run, {"role": "assistant", "content": "", "refusal": None}, index=i))
                        for i in range(len(run.choices)))
        item = first
        try:
            while item is not None:
                index, delta = item
                data += oj.choice_events(run.choices[index], index, delta)
                if data:
                    yield httpbody_pb2.HttpBody(content_type="text/event-stream", data=data)
                    data = b""
                item = await anext(merged, None)
        except ApiError as err:
            yield httpbody_pb2.HttpBody(content_type="text/event-stream",
                                        data=data + oj.sse_error(err) + oj.DONE_EVENT)
            return
        if run.params.include_usage:
            data += oj.sse(oj.usage_chunk(run))
        yield httpbody_pb2.HttpBody(content_type="text/event-stream", data=data + oj.DONE_EVENT)

    async def CompletionsHttp(self, request, context):
        run = await self._pipeline.prepare(request, context, endpoint=completions.REST_COMPLETIONS,
                                           parse=completions.parse_completion_request)
        try:
            if not run.params.stream:
                body = completions.completion(run, await self._pipeline.collect(run), oj.system_fingerprint(run))
                await context.send_initial_metadata(run.headers)
                yield httpbody_pb2.HttpBody(content_type="application/json", data=oj.json_body(body))
                return
            events = completions.CompletionStream(run, oj.system_fingerprint(run))
            source = self._pipeline.run_choices(run) if run.choices else _first_choice(self._pipeline.run(run))
            first = True
            async with aclosing(source) as indexed:
                try:
                    async for index, delta in indexed:
                        data = events.delta(index, delta)
                        if first:  # after the first output: an early backend error keeps its status
                            await context.send_initial_metadata(run.headers)
                            data, first = events.start() + data, False
                        if data:
                            yield httpbody_pb2.HttpBody(content_type="text/event-stream", data=data)
                except ApiError as err:
                    if first:
                        raise
                    yield httpbody_pb2.HttpBody(content_type="text/event-stream",
                                                data=oj.sse_error(err) + oj.DONE_EVENT)
                    return
            yield httpbody_pb2.HttpBody(content_type="text/event-stream", data=events.end() + oj.DONE_EVENT)
        finally:
            self._pipeline.finish(run)

    async def CreateChatCompletion(self, request, context):
        run = await self._pipeline.prepare(request, context, stream=False, endpoint=GRPC_UNARY)
        try:
            per_choice = await self._pipeline.collect(run)
        finally:
            self._pipeline.finish(run)
        await context.send_initial_metadata(run.headers)
        if run.output is not None or run.choices:
            return oj.typed_shaped_completion(run, per_choice)
        return oj.typed_completion(run, "".join(d.text for d in per_choice[0]))

    async def StreamChatCompletion(self, request, context):
        run = await self._pipeline.prepare(request, context, stream=True, endpoint=GRPC_STREAM)
        # From here on the reservation is settled whatever happens, even if the caller leaves at the first chunk.
        try:
            await context.send_initial_metadata(run.headers)
            if run.choices:
                for index in range(len(run.choices)):
                    yield oj.typed_chunk(run, role="assistant", content="", index=index)
                async with aclosing(self._pipeline.run_choices(run)) as merged:
                    async for index, delta in merged:
                        for typed in oj.typed_events(oj.choice_events(run.choices[index], index, delta)):
                            yield typed
                if run.params.include_usage:
                    yield oj.typed_chunk(run, with_usage=True)
                return
            yield oj.typed_chunk(run, role="assistant", content="")
            async with aclosing(self._pipeline.run(run)) as deltas:
                async for delta in deltas:
                    if run.output is not None:
                        for typed in oj.typed_shaped_chunks(run, run.output.deltas(delta)):
                            yield typed
                    elif delta.text:
                        yield oj.typed_chunk(run, content=delta.text)
            if run.output is not None:
                for typed in oj.typed_shaped_chunks(run, run.output.end()):
                    yield typed
                yield oj.typed_final_chunk(run)
            else:
                yield oj.typed_chunk(run, finish_reason=run.finish_reason or "stop")
            if run.params.include_usage:
                yield oj.typed_chunk(run, with_usage=True)
        finally:
            self._pipeline.finish(run)

    async def CreateTranscriptionHttp(self, request, context):
        return await self._audio.handle(request, context, task="transcribe")

    async def CreateTranslationHttp(self, request, context):
        return await self._audio.handle(request, context, task="translate")

    async def EmbeddingsHttp(self, request, context):
        endpoint = REST_EMBEDDINGS if _through_envoy(context) else GRPC_EMBEDDINGS
        return httpbody_pb2.HttpBody(content_type="application/json",
                                     data=await self._embeddings.create_json(request, context, endpoint))

    async def CreateEmbedding(self, request, context):
        endpoint = REST_EMBEDDINGS if _through_envoy(context) else GRPC_EMBEDDINGS
        return await self._embeddings.create(request, context, endpoint)

    async def RerankV1(self, request, context):
        return await self._rerank.rerank(request, context, "1", (REST_RERANK if _through_envoy(context)
                                                                 else GRPC_RERANK)["1"])

    async def RerankV2(self, request, context):
        return await self._rerank.rerank(request, context, "2", (REST_RERANK if _through_envoy(context)
                                                                 else GRPC_RERANK)["2"])

    # The Files and Batch API (llmaas.router.batch).
    def _batch_api(self) -> BatchApi:
        if self._batches is None:
            raise ApiError(grpc.StatusCode.UNIMPLEMENTED, "Files and batches are not enabled on this router.",
                           code="not_enabled")
        return self._batches

    async def CreateFileHttp(self, request, context):
        api = self._batch_api()
        return await api.call(context, REST_FILES, lambda caller: api.create_file(caller, request))

    async def ListFilesHttp(self, request, context):
        api = self._batch_api()
        return await api.call(context, "GET /v1/files", lambda caller: api.list_files(caller, request))

    async def RetrieveFileHttp(self, request, context):
        api = self._batch_api()
        return await api.call(context, "GET /v1/files/{id}", lambda caller: api.retrieve_file(caller, request))

    async def FileContentHttp(self, request, context):
        api = self._batch_api()
        chunks = await api.call(context, "GET /v1/files/{id}/content",
                                lambda caller: api.file_content(caller, request))
        for chunk in chunks:
            yield chunk

    async def DeleteFileHttp(self, request, context):
        api = self._batch_api()
        return await api.call(context, "DELETE /v1/files/{id}", lambda caller: api.delete_file(caller, request))

    async def CreateBatchHttp(self, request, context):
        api = self._batch_api()
        return await api.call(context, "POST /v1/batches", lambda caller: api.create_batch(caller, request))

    async def ListBatchesHttp(self, request, context):
        api = self._batch_api()
        return await api.call(context, "GET /v1/batches", lambda caller: api.list_batches(caller, request))

    async def RetrieveBatchHttp(self, request, context):
        api = self._batch_api()
        return await api.call(context, "GET /v1/batches/{id}", lambda caller: api.retrieve_batch(caller, request))

    async def CancelBatchHttp(self, request, context):
        api = self._batch_api()
        return await api.call(context, "POST /v1/batches/{id}/cancel",
                              lambda caller: api.cancel_batch(caller, request))

    async def GetStatus(self, request, context):
        if self._status is None:
            raise ApiError(grpc.StatusCode.UNIMPLEMENTED, "This router serves no status.", code="not_implemented")
        return await self._status.get()


REST_FILES = "POST /v1/files"


async def _first_choice(deltas):
    """A single choice's deltas as (index, delta) pairs, as run_choices gives a request's several."""
    async with aclosing(deltas):
        async for delta in deltas:
            yield 0, delta


def _through_envoy(context) -> bool:
    """Behind Envoy the identity header ext_authz signed is there (REST); a direct gRPC caller has its key instead."""
    return any(k == IDENTITY_HEADER for k, _ in (context.invocation_metadata() or ()))
