"""Test audio made reproducibly: Debian's espeak-ng speaks a sentence to WAV (deploy/setup.sh installs it), PyAV
re-encodes it into the other upload formats; and the word error rate of a transcript."""

from __future__ import annotations

import re
import shutil
import subprocess
import wave
from pathlib import Path

import av
import pytest

SENTENCE = "Please send the quarterly report to the finance team before the meeting on Friday morning."
# Container: (file suffix, PyAV format, audio codec).
FORMATS = {"wav": ("wav", "wav", "pcm_s16le"), "flac": ("flac", "flac", "flac"), "mp3": ("mp3", "mp3", "libmp3lame"),
           "ogg": ("ogg", "ogg", "libopus"), "m4a": ("m4a", "ipod", "aac"), "webm": ("webm", "webm", "libopus")}


def speak(text: str, path: Path, *, words_per_minute: int = 150, pad_seconds: float = 0.0) -> Path:
    """espeak-ng's English voice, 22.05 kHz mono 16-bit WAV. `pad_seconds`: silence appended (a longer clip)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (deploy/setup.sh installs it)")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", str(words_per_minute), "-w", str(path), text], check=True)
    if pad_seconds:
        with wave.open(str(path), "rb") as w:
            params, frames = w.getparams(), w.readframes(w.getnframes())
        with wave.open(str(path), "wb") as w:
            w.setparams(params)
            w.writeframes(frames + bytes(int(params.framerate * pad_seconds) * params.sampwidth * params.nchannels))
    return path


def encode(source: Path, target: Path, fmt: str) -> Path:
    """`source` re-encoded as `fmt` (a key of FORMATS)."""
    _, container_format, codec = FORMATS[fmt]
    with av.open(str(source)) as inp, av.open(str(target), "w", format=container_format) as out:
        rate = 48000 if codec == "libopus" else inp.streams.audio[0].rate
        stream = out.add_stream(codec, rate=rate, layout="mono")
        resampler = av.AudioResampler(format=stream.format.name if stream.format else "s16", layout="mono", rate=rate)
        frames = [f for frame in inp.decode(audio=0) for f in resampler.resample(frame)]
        frames += resampler.resample(None)
        for frame in frames:
            frame.pts = None
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return target


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(1, len(ref))
