"""The OCR path's checks and accounting (llmaas.router.ocr) and the Markdown layout the OCR model applies
(llmaas.ocr.layout); tests/e2e/test_ocr.py reads real pages through the stack."""

from __future__ import annotations

import asyncio
import base64
import io

import pytest
from llmaas.common.errors import HTTP_STATUS_HEADER, ApiError
from llmaas.ocr.layout import to_markdown
from llmaas.router import images, ocr
from PIL import Image


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(out, "PNG")
    return out.getvalue()


def uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


@pytest.mark.parametrize(("size", "tokens"), [((512, 300), 64), ((640, 640), 100), ((1024, 700), 256),
                                              ((900, 1280), 400), ((1281, 20), 800)])
def test_vision_tokens_follow_the_references_resolution_modes(size, tokens):
    assert images._page(uri(png(*size)), "p").tokens == tokens


@pytest.mark.parametrize(("url", "code"), [
    ("https://example.com/a.png", "unsupported_image_url"), ("file:///etc/passwd", "invalid_image_url"),
    ("data:image/png,rawbytes", "invalid_image_url"), ("data:image/png;base64,!!!", "invalid_image"),
    (uri(b"not an image"), "invalid_image"),
])
def test_what_is_not_an_inline_image_is_a_400_naming_the_part(url, code):
    with pytest.raises(ApiError) as e:
        images._page(url, "messages[0].content")
    assert e.value.code == code and e.value.param == "messages[0].content" and not e.value.headers


def test_too_large_is_a_413_by_bytes_or_by_pixels(monkeypatch):
    with pytest.raises(ApiError) as e:
        images._page(uri(b"\0" * (images.MAX_IMAGE_BYTES + 10)), "p")
    assert e.value.code == "image_too_large" and (HTTP_STATUS_HEADER, "413") in e.value.headers
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 100 * 100)
    with pytest.raises(ApiError) as e:
        images._page(uri(png(101, 100)), "p")
    assert e.value.code == "image_too_large" and "101x100" in e.value.message


def test_the_output_is_cut_at_max_tokens():
    text = "one two three four five six"
    assert ocr.cut(text, 100) == (text, 6, "stop")
    cut, tokens, finish = ocr.cut(text, 2)
    assert (cut, tokens, finish) == ("one two", 2, "length")


def box(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def test_layout_reads_rows_top_to_bottom_left_to_right_with_headings_and_paragraphs():
    lines = [
        {"text": "second half", "box": box(300, 200, 500, 230)},
        {"text": "Title", "box": box(40, 20, 400, 80)},  # twice as tall as the body text
        {"text": "first half", "box": box(40, 202, 250, 232)},
        {"text": "next line", "box": box(40, 240, 250, 270)},
        {"text": "after a gap", "box": box(40, 400, 250, 430)},
        {"text": "   ", "box": box(40, 500, 250, 530)},
    ]
    assert to_markdown(lines) == "# Title\n\nfirst half  second half\nnext line\n\nafter a gap"
    assert to_markdown([]) == ""


def test_a_vision_model_with_tools_refuses_images_in_the_same_request():
    from types import SimpleNamespace

    from google.protobuf import json_format
    from llmaas.router.params import parse_chat_request
    from llmaas.router.pipeline import ChatPipeline
    from llmaas.router.v1 import router_pb2

    request = json_format.ParseDict({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": uri(png(10, 10))}}]}],
        "tools": [{"type": "function", "function": {"name": "f"}}]}, router_pb2.CreateChatCompletionRequest())
    model = SimpleNamespace(id="m", type="chat", capabilities=("vision", "tools"), reasoning=None,
                            HasField=lambda name: False)
    with pytest.raises(ApiError) as e:
        ChatPipeline._check_capabilities(parse_chat_request(request), model)
    assert e.value.code == "unsupported_content"


def test_a_truncated_image_is_the_clients_400_not_the_models_failure():
    data = png(300, 200)
    with pytest.raises(ApiError) as e:
        images._page(uri(data[: len(data) // 2]), "p")
    assert e.value.code == "invalid_image"
    assert "data=" not in repr(images._page(uri(data), "p"))  # image bytes never in a repr (logs)


def test_images_only_in_user_messages():
    from google.protobuf import json_format
    from llmaas.router.params import parse_chat_request
    from llmaas.router.v1 import router_pb2

    image = {"type": "image_url", "image_url": {"url": uri(png(10, 10))}}
    request = json_format.ParseDict({"model": "m", "messages": [{"role": "system", "content": [image]},
                                                                {"role": "user", "content": "hi"}]},
                                    router_pb2.CreateChatCompletionRequest())
    with pytest.raises(ApiError) as e:
        parse_chat_request(request)
    assert e.value.param == "messages[0].content"


def jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(out, "JPEG")
    return out.getvalue()


def low_pages(*datas: bytes, low: bool = True) -> list:
    from llmaas.router.params import ChatParams, ImagePart, Message

    message = Message("user", "read", has_image=True, images=tuple(ImagePart(uri(d), low=low) for d in datas))
    params = ChatParams(model="m", messages=(message,), stream=False, include_usage=False, max_tokens=None,
                        max_tokens_param="max_tokens", prompt_bytes=4, temperature=None, top_p=None, top_k=None,
                        presence_penalty=None, frequency_penalty=None, seed=None, stop=(), user="",
                        wants_tools=False)
    return images.read_pages(params)


def downscaled(pages) -> tuple:
    return asyncio.run(images.downscaled(tuple(pages)))


@pytest.mark.parametrize(("data", "fmt"), [(png(1600, 1000), "PNG"), (jpeg(700, 2000), "JPEG")])
def test_low_detail_reads_and_bills_a_512_px_copy(data, fmt):
    (full,), (marked,) = low_pages(data, low=False), low_pages(data)
    assert full.data == data and full.tokens > 64 and not full.low
    # Read, the page is billed at the copy's size already; the copy itself is made once the request is granted.
    assert marked.low and marked.data == data and marked.tokens == 64
    (low,) = downscaled([marked])
    assert max(low.width, low.height) == images.LOW_DETAIL_SIDE and low.tokens == 64 and not low.low
    assert abs(low.width / low.height - full.width / full.height) < 0.01  # the aspect kept
    with Image.open(io.BytesIO(low.data)) as image:
        assert image.format == fmt and image.size == (low.width, low.height)
    (small,) = low_pages(png(300, 200))  # already small: sent as it is
    assert not small.low and downscaled([small])[0] is small


def encoded(image: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kw)
    return out.getvalue()


@pytest.mark.parametrize(("image", "fmt", "mode"), [
    (Image.new("CMYK", (900, 600), (0, 50, 100, 0)), "JPEG", "RGB"),
    (Image.new("CMYK", (900, 600)), "TIFF", "RGB"),
    (Image.new("1", (900, 600), 1), "TIFF", "RGB"),
    (Image.new("LA", (900, 600), (128, 200)), "PNG", "LA"),
    (Image.new("RGBA", (900, 600), (1, 2, 3, 100)), "WEBP", "RGBA"),
    (Image.new("I;16", (900, 600), 300), "PNG", "RGB"),
    (Image.new("RGB", (900, 600)).convert("P", palette=Image.Palette.ADAPTIVE), "PNG", "RGB"),
    (Image.new("F", (900, 600), 0.5), "TIFF", "RGB"),
])
def test_low_detail_copies_every_mode_it_accepts(image, fmt, mode):
    (low,) = downscaled(low_pages(encoded(image, fmt)))
    with Image.open(io.BytesIO(low.data)) as copy:
        assert copy.size == (512, 341) and copy.mode == mode
        assert copy.format == ("JPEG" if fmt == "JPEG" else "PNG")


def test_low_detail_keeps_the_orientation_the_model_would_see():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    (low,) = downscaled(low_pages(encoded(Image.new("RGB", (1000, 600)), "JPEG", exif=exif.tobytes())))
    assert (low.width, low.height) == (307, 512)


def test_a_truncated_low_detail_image_is_the_clients_400():
    data = jpeg(1200, 900)
    pages = low_pages(data[: len(data) * 2 // 3])  # a JPEG's structure check passes; its pixels are missing
    with pytest.raises(ApiError) as e:
        downscaled(pages)
    assert e.value.code == "invalid_image" and e.value.status.name == "INVALID_ARGUMENT"


def test_low_detail_bounds_what_decodes_whole(monkeypatch):
    monkeypatch.setattr(images, "LOW_DETAIL_MAX_PIXELS", 1000 * 1000)
    with pytest.raises(ApiError) as e:
        low_pages(png(1001, 1000))
    assert e.value.code == "image_too_large" and (HTTP_STATUS_HEADER, "413") in e.value.headers
    assert low_pages(jpeg(2000, 1000))[0].low  # a JPEG decodes at a fraction of its size
    assert low_pages(png(1001, 1000), low=False)  # at full resolution the model decodes it


def test_a_phones_multi_picture_jpeg_is_a_jpeg():
    out = io.BytesIO()
    Image.new("RGB", (800, 600), "red").save(out, "MPO", save_all=True, append_images=[Image.new("RGB", (800, 600))])
    page = images._page(uri(out.getvalue(), "image/jpeg"), "p")
    assert (page.format, page.width, page.height) == ("JPEG", 800, 600)
    (low,) = downscaled(low_pages(out.getvalue()))
    assert low.format == "JPEG" and (low.width, low.height) == (512, 384)
