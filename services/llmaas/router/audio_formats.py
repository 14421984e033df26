"""The model's transcription (the TRANSCRIPTION tensor's JSON) in the response_format the client asked for, as OpenAI
writes them: json, text, srt, vtt, verbose_json (segments and/or words, by timestamp_granularities[])."""

from __future__ import annotations

import json
import math

# verbose_json names the language in full, as OpenAI does (Whisper's own names).
_LANGUAGE_NAMES = {"en": "english", "fr": "french", "de": "german", "es": "spanish", "it": "italian",
                   "pt": "portuguese", "nl": "dutch", "ja": "japanese", "zh": "chinese", "ru": "russian"}


def _timestamp(seconds: float, separator: str) -> str:
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{ms:03d}"


def srt(segments: list[dict]) -> str:
    return "".join(f"{i}\n{_timestamp(s['start'], ',')} --> {_timestamp(s['end'], ',')}\n{s['text'].strip()}\n\n"
                   for i, s in enumerate(segments, 1))


def vtt(segments: list[dict]) -> str:
    return "WEBVTT\n\n" + "".join(f"{_timestamp(s['start'], '.')} --> {_timestamp(s['end'], '.')}\n"
                                  f"{s['text'].strip()}\n\n" for s in segments)


def usage(duration: float) -> dict:
    """OpenAI's usage object for duration-billed models: whole seconds, rounded up."""
    return {"type": "duration", "seconds": math.ceil(duration)}


def render(result: dict, response_format: str, granularities: list[str], task: str) -> tuple[str, bytes]:
    """(content type, body)."""
    segments = result.get("segments", [])
    text = result.get("text", "")
    if response_format == "text":
        return "text/plain; charset=utf-8", (text + "\n").encode()
    if response_format == "srt":
        return "text/plain; charset=utf-8", srt(segments).encode()
    if response_format == "vtt":
        return "text/vtt; charset=utf-8", vtt(segments).encode()
    body: dict = {"text": text}
    if response_format == "verbose_json":
        language = result.get("language", "")
        body = {"task": task, "language": _LANGUAGE_NAMES.get(language, language),
                "duration": round(result.get("duration", 0.0), 2), "text": text}
        if "word" in granularities:
            body["words"] = [w for s in segments for w in s.get("words", [])]
        if not granularities or "segment" in granularities:
            body["segments"] = [{k: v for k, v in s.items() if k != "words"} for s in segments]
    body["usage"] = usage(result.get("duration", 0.0))
    return "application/json", json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
