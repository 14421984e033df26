"""Speech to text: Whisper tiny.en (faster-whisper in Triton, CPU) on a ~30 s spoken clip, through the whole stack
(Envoy, auth, catalog, metering, router: multipart upload, decoding, reservation, settlement) and straight to Triton
(ModelInfer with the already-decoded PCM), interleaved (A B B A). Prints the real-time factor (processing time / audio
duration) of each path, the gateway's added latency (median of the per-round differences, on the 30 s clip and on a
5.6 s sentence, where the model's own variance hides less of it) and what decoding the upload costs the router.

    .venv/bin/python -m bench.transcription [--rounds 3] [--short-rounds 10]

Starts its own stack (like the e2e tests); the clip is spoken by espeak-ng (tests/support/audio.py).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from llmaas.catalog.entries import load_catalog
from llmaas.common.triton_client import triton_channel
from llmaas.router.audio import infer_request, read_transcription
from llmaas.router.audio_upload import SAMPLE_RATE, decode_audio
from llmaas.stack.paths import DEFAULT_CATALOG
from tritonclient.grpc import service_pb2_grpc

from tests.support.audio import SENTENCE, encode, speak, word_error_rate
from tests.support.stack import running_stack

MODEL = "whisper:tiny.en"
PARAGRAPH = (SENTENCE + " The budget review starts at nine, and the slides are in the shared folder. "
             "Remember to bring the signed contracts and the updated sales figures for the northern region. ")
OPTIONS = b'{"task": "transcribe", "language": "en", "prompt": null, "temperature": null, "word_timestamps": false}'


async def run(stack: dict, rounds: int, short_rounds: int, workdir: Path) -> None:
    clip = speak(PARAGRAPH * 2, workdir / "clip.wav", words_per_minute=165)
    wav = clip.read_bytes()
    mp3 = encode(clip, workdir / "clip.mp3", "mp3").read_bytes()
    t0 = time.perf_counter()
    pcm = decode_audio(wav)
    decode_wav = time.perf_counter() - t0
    t0 = time.perf_counter()
    decode_audio(mp3)
    decode_mp3 = time.perf_counter() - t0
    seconds = pcm.size / SAMPLE_RATE
    entry = load_catalog([DEFAULT_CATALOG]).lookup(MODEL)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(triton_channel(stack["triton_grpc"]))

    async def direct() -> tuple[float, str]:
        t = time.perf_counter()
        response = await stub.ModelInfer(infer_request(entry.triton_model, "bench", pcm, OPTIONS), timeout=300)
        return time.perf_counter() - t, read_transcription(response)["text"]

    async with httpx.AsyncClient(base_url=stack["base_url"], timeout=300,
                                 headers={"Authorization": f"Bearer {stack['api_key']}"}) as http:
        async def measure(data: bytes, samples, n: int) -> tuple[dict[str, list[float]], str]:
            async def direct() -> tuple[float, str]:
                t = time.perf_counter()
                response = await stub.ModelInfer(infer_request(entry.triton_model, "bench", samples, OPTIONS),
                                                 timeout=300)
                return time.perf_counter() - t, read_transcription(response)["text"]

            async def gateway() -> tuple[float, str]:
                t = time.perf_counter()
                r = await http.post("/audio/transcriptions", files={"file": ("clip.wav", data)},
                                    data={"model": MODEL, "language": "en"})
                r.raise_for_status()
                return time.perf_counter() - t, r.json()["text"]

            await direct()  # warm-up (the first inference on a length allocates the model's buffers)
            times: dict[str, list[float]] = {"direct": [], "gateway": []}
            text = ""
            for i in range(n):
                for send in ((direct, gateway) if i % 2 == 0 else (gateway, direct)):
                    elapsed, text = await send()
                    times["direct" if send is direct else "gateway"].append(elapsed)
            return times, text

        times, text = await measure(wav, pcm, rounds)
        short = speak(SENTENCE, workdir / "short.wav").read_bytes()
        short_times, _ = await measure(short, decode_audio(short), short_rounds)
    print(f"clip: {seconds:.1f} s of espeak-ng speech ({len(wav) / 1e6:.2f} MB WAV, {len(mp3) / 1e6:.2f} MB MP3); "
          f"{rounds} rounds per path; WER of the last transcript {word_error_rate(PARAGRAPH * 2, text):.3f}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:8s} median {median:6.2f} s  (min {min(values):.2f}, max {max(values):.2f})  "
              f"real-time factor {median / seconds:.3f}")
    for label, series in ((f"{seconds:.0f} s clip", times), (f"5.6 s sentence, {short_rounds} rounds", short_times)):
        added = sorted(g - d for g, d in zip(series["gateway"], series["direct"], strict=True))
        print(f"  gateway added latency ({label}): median {statistics.median(added) * 1000:.0f} ms "
              f"(range {added[0] * 1000:.0f} .. {added[-1] * 1000:.0f} ms; direct median "
              f"{statistics.median(series['direct']) * 1000:.0f} ms)")
    print(f"  router's decoding of the upload (in its thread): WAV {decode_wav * 1000:.0f} ms, "
          f"MP3 {decode_mp3 * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--short-rounds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_stack(Path(tmp) / "data") as stack:
        asyncio.run(run(stack, args.rounds, args.short_rounds, Path(tmp)))


if __name__ == "__main__":
    main()
