"""OpenAI's audio upload (multipart/form-data) as the transcoder hands it over (google.api.HttpBody: the raw bytes and
their content type), parsed with python-multipart, and the audio decoded to what the model takes (16 kHz mono PCM,
float32) with PyAV, FFmpeg's libraries as the `av` wheel ships them.

Everything here runs before anything is reserved or reaches a model: a form that does not parse, a file that is not
audio in a supported container, or one that does not decode, is a 400 naming the parameter.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from llmaas.common.errors import invalid_request

SAMPLE_RATE = 16000
# Longer audio is refused (400): about 90 s of work for the CPU model, and it bounds what a small compressed file can
# decode to (a decompression bomb stops being decoded here).
MAX_AUDIO_SECONDS = 30 * 60
MAX_PARTS = 32
MAX_FIELD_BYTES = 64 * 1024
# OpenAI's list. FFmpeg's demuxer names for them: PyAV says which demuxer recognised the bytes (the file name's
# extension is not trusted).
SUPPORTED_FORMATS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
_DEMUXERS = {"wav", "mp3", "flac", "ogg", "mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm"}
RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
GRANULARITIES = ("segment", "word")


@dataclass
class AudioForm:
    file: bytes
    filename: str
    model: str = ""
    language: str = ""
    prompt: str = ""
    response_format: str = "json"
    temperature: float | None = None
    granularities: list[str] = field(default_factory=list)
    # "transcribe" or "translate": the endpoint's, or the reference's `task` field on /transcriptions.
    task: str = "transcribe"


def _form_parts(content_type: str, body: bytes) -> list[tuple[str, str, bytes]]:
    """(name, filename, value) of every part."""
    ctype, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise invalid_request("The request must be a multipart/form-data upload (a 'file' part and form fields).",
                              param="file", code="invalid_content_type")
    parts: list[tuple[str, str, bytes]] = []
    state: dict = {}

    def on_part_begin():
        if len(parts) >= MAX_PARTS:
            raise invalid_request(f"The form has too many parts: at most {MAX_PARTS}.", code="too_many_parts")
        state.update(headers={}, data=[], field=b"", value=b"")

    def on_header_field(data, start, end):
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["field"].lower()] = state["value"]
        state.update(field=b"", value=b"")

    def on_part_data(data, start, end):
        state["data"].append(memoryview(data)[start:end])  # a view: the part's bytes are copied once, by the join

    def on_part_end():
        _, disposition = parse_options_header(state["headers"].get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        filename = disposition.get(b"filename", b"").decode("utf-8", "replace")
        parts.append((name, filename, b"".join(state["data"])))

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_part_data": on_part_data, "on_part_end": on_part_end,
        "on_header_field": on_header_field, "on_header_value": on_header_value, "on_header_end": on_header_end})
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError:
        raise invalid_request("The multipart/form-data body could not be parsed.", param="file",
                              code="invalid_multipart") from None
    return parts


# The Files API's upload is the same multipart form (llmaas.router.batch.api).
form_parts = _form_parts


def _text(name: str, value: bytes) -> str:
    if len(value) > MAX_FIELD_BYTES:
        raise invalid_request(f"'{name}' is too long: at most {MAX_FIELD_BYTES} bytes.", param=name,
                              code="string_above_max_length")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid_request(f"'{name}' must be UTF-8 text.", param=name, code="invalid_value") from None


def parse_form(content_type: str, body: bytes, *, translation: bool) -> AudioForm:
    """The form's fields, checked (OpenAI's names). Unknown fields are ignored, as OpenAI does."""
    upload: tuple[str, bytes] | None = None
    fields: dict[str, str] = {}
    granularities: list[str] = []
    for name, filename, value in _form_parts(content_type, body):
        if name == "file":
            upload = (filename, value)
        elif name in ("timestamp_granularities[]", "timestamp_granularities"):
            granularities.append(_text("timestamp_granularities", value))
        elif name:
            fields[name] = _text(name, value)
    if upload is None or not upload[1]:
        raise invalid_request("Missing required parameter: 'file' (the audio file to transcribe).", param="file",
                              code="missing_required_parameter")
    form = AudioForm(file=upload[1], filename=upload[0], model=fields.get("model", "").strip(),
                     prompt=_prompt(fields), granularities=granularities, task=_task(fields, translation))
    if not form.model:
        raise invalid_request("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    if "language" in fields:
        if translation:
            raise invalid_request("'language' is not a parameter of translations (the output is English).",
                                  param="language", code="unsupported_parameter")
        form.language = fields["language"].strip().lower()
        if form.language and not (form.language.isascii() and form.language.isalpha() and len(form.language) in (2, 3)):
            raise invalid_request(f"Invalid 'language': '{form.language[:16]}' is not an ISO-639-1 code such as 'en'.",
                                  param="language", code="invalid_value")
    form.response_format = fields.get("response_format", "json").strip() or "json"
    if form.response_format not in RESPONSE_FORMATS:
        raise invalid_request(f"Invalid 'response_format': '{form.response_format[:32]}'. Supported values are: "
                              f"{', '.join(RESPONSE_FORMATS)}.", param="response_format", code="invalid_value")
    if "temperature" in fields:
        try:
            form.temperature = float(fields["temperature"])
        except ValueError:
            form.temperature = float("nan")
        if not 0 <= form.temperature <= 1:
            raise invalid_request("Invalid 'temperature': expected a number between 0 and 1.", param="temperature",
                                  code="invalid_value")
    if unknown := [g for g in granularities if g not in GRANULARITIES]:
        raise invalid_request(f"Invalid 'timestamp_granularities[]': '{unknown[0][:16]}'. Supported values are: "
                              "segment, word.", param="timestamp_granularities", code="invalid_value")
    if granularities and form.response_format != "verbose_json":
        raise invalid_request("'timestamp_granularities[]' needs response_format 'verbose_json'.",
                              param="timestamp_granularities", code="invalid_value")
    return form


def _prompt(fields: dict[str, str]) -> str:
    """OpenAI's `prompt`, or the reference's name for it, `initial_prompt` (both accepted; two different ones are
    ambiguous)."""
    prompt, initial = fields.get("prompt"), fields.get("initial_prompt")
    if prompt is not None and initial is not None and prompt != initial:
        raise invalid_request("'prompt' and 'initial_prompt' are the same parameter: give one.",
                              param="initial_prompt", code="invalid_value")
    return prompt if prompt is not None else initial or ""


def _task(fields: dict[str, str], translation: bool) -> str:
    """The reference's `task` (transcribe or translate) on /transcriptions; /translations only translates."""
    default = "translate" if translation else "transcribe"
    task = fields.get("task", default).strip() or default
    if task not in ("transcribe", "translate"):
        raise invalid_request(f"Invalid 'task': '{task[:32]}'. Supported values are: transcribe, translate.",
                              param="task", code="invalid_value")
    if translation and task != "translate":
        raise invalid_request("/v1/audio/translations only translates: use /v1/audio/transcriptions to transcribe.",
                              param="task", code="invalid_value")
    return task


def _unsupported(detail: str):
    return invalid_request(f"Invalid file format ({detail}). Supported formats: {', '.join(SUPPORTED_FORMATS)}.",
                           param="file", code="invalid_file_format")


def decode_audio(data: bytes) -> np.ndarray:
    """16 kHz mono float32 PCM. CPU-bound (run it in a thread). Refuses what is not audio in a supported container,
    what does not decode, silence of length zero, and audio over MAX_AUDIO_SECONDS."""
    import av  # FFmpeg's libraries: loaded on first use, not at the router's import

    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, OSError):
        raise _unsupported("the file is not audio, or not in a known format") from None
    with container:
        demuxers = set(container.format.name.split(","))
        if not demuxers & _DEMUXERS:
            raise _unsupported(f"'{container.format.name}' files are not accepted")
        if not container.streams.audio:
            raise _unsupported("the file has no audio track")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        chunks: list[np.ndarray] = []
        samples, limit = 0, MAX_AUDIO_SECONDS * SAMPLE_RATE
        try:
            for frame in container.decode(container.streams.audio[0]):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1)
                    chunks.append(chunk)
                    samples += chunk.size
                if samples > limit:
                    raise invalid_request(f"The audio is too long: at most {MAX_AUDIO_SECONDS // 60} minutes are "
                                          "accepted.", param="file", code="audio_too_long")
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
        except (av.FFmpegError, ValueError, OSError):
            raise invalid_request("The audio file is corrupt: it could not be decoded.", param="file",
                                  code="invalid_file") from None
    pcm = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    if pcm.size < SAMPLE_RATE // 10:
        raise invalid_request("The audio is empty or shorter than 0.1 s.", param="file", code="audio_too_short")
    return pcm
