"""Request parsing by hand, so every malformed request gets a 400 that names the offending field.

Accepted ``POST /v1/embeddings`` bodies (field names as OpenAI, vLLM and Infinity use them):

    {"model", "input": "text" | ["text", ...]}                         OpenAI: text embeddings
    {"model", "messages": [{"role": "user", "content": [parts]}]}      vLLM: one multimodal item
    {"model", "input": [[parts], {"messages": [...]}, {"role": "user", "content": ...}, "text", ...]}
                                                                        a batch of multimodal items
    {"model", "modality": "image", "input": ["data:image/png;base64,...", ...]}    Infinity: images
    parts: {"type": "text", "text": ...} and {"type": "image_url", "image_url": {"url": ...}}
    options: "encoding_format": "float" | "base64", "user", "instruction" (e5v extension),
             "dimensions" (only the model's own size; E5-V vectors cannot be shortened)

An item with an image and text is a composed query, an image alone uses the image prompt, text alone the
text prompt. Several text parts in one item are joined with a newline; more than one image is refused.
Unknown top-level fields are ignored (clients send vendor fields), as vLLM does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..items import kind_of
from .errors import APIError
from .limits import Limits, check_items, check_text

ENCODING_FORMATS = ("float", "base64")
MODALITIES = ("text", "image")


@dataclass(frozen=True)
class RawItem:
    """One input before images are fetched/decoded; ``image`` is a data URI or an http(s) URL."""

    param: str  # where it came from, e.g. "input[2]" (used in error messages)
    text: str | None = None
    image: str | None = None

    @property
    def kind(self) -> str:
        return kind_of(self.image is not None, self.text is not None)


@dataclass(frozen=True)
class EmbeddingRequest:
    model: str | None
    items: list[RawItem]
    encoding_format: str
    instruction: str | None


def _bad(message: str, param: str | None = None, code: str = "invalid_request") -> APIError:
    return APIError(400, message, code, param)


def parse_embedding_request(body: Any, limits: Limits, dim: int) -> EmbeddingRequest:
    if not isinstance(body, dict):
        raise _bad(f"the request body must be a JSON object, not {type(body).__name__}")
    model = _optional_str(body, "model")
    _optional_str(body, "user")
    instruction = _optional_str(body, "instruction")
    if instruction is not None and not instruction.strip():
        raise _bad("instruction must not be empty", "instruction")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ENCODING_FORMATS:
        raise _bad(f"encoding_format must be one of {list(ENCODING_FORMATS)}, got {encoding!r}", "encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and dimensions != dim:
        raise _bad(f"dimensions={dimensions!r} is not supported: E5-V embeddings have {dim} dimensions and "
                   "were not trained to be shortened (not Matryoshka); omit 'dimensions'", "dimensions",
                   "unsupported_dimensions")
    modality = body.get("modality") or "text"
    if modality not in MODALITIES:
        raise _bad(f"modality must be one of {list(MODALITIES)}, got {modality!r}", "modality")
    has_input, has_messages = body.get("input") is not None, body.get("messages") is not None
    if has_input == has_messages:
        raise _bad("give exactly one of 'input' or 'messages'", "input")
    if has_messages:
        if modality != "text":
            raise _bad("'modality' applies to 'input', not to 'messages'", "modality")
        items = [_messages(body["messages"], limits, "messages")]
    else:
        items = _inputs(body["input"], modality, limits)
    check_items(len(items), limits)
    return EmbeddingRequest(model=model, items=items, encoding_format=encoding, instruction=instruction)


def parse_query(query: Any, limits: Limits, param: str = "query") -> RawItem:
    """A search query: "text", {"image": url}, {"image": url, "text": ...}, or content parts."""
    if isinstance(query, str):
        return RawItem(param, text=_text(query, limits, param))
    if isinstance(query, list):
        return _content(query, limits, param)
    if isinstance(query, dict):
        unknown = set(query) - {"image", "text"}
        if unknown or not query:
            raise _bad(f"{param} must be a string or an object with 'image' and/or 'text'", param)
        text = query.get("text")
        image = query.get("image")
        if text is not None and not isinstance(text, str):
            raise _bad(f"{param}.text must be a string", f"{param}.text")
        if image is not None:
            _check_url(image, f"{param}.image")
        if text is None and image is None:
            raise _bad(f"{param} needs 'image' and/or 'text'", param)
        return RawItem(param, text=_text(text, limits, f"{param}.text") if text is not None else None, image=image)
    raise _bad(f"{param} must be a string or an object, not {type(query).__name__}", param)


# ---------------------------------------------------------------------------- helpers
def _optional_str(body: dict, key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise _bad(f"'{key}' must be a string, not {type(value).__name__}", key)
    return value


def _text(text: str, limits: Limits, param: str) -> str:
    if not text.strip():
        raise _bad(f"{param}: text is empty", param, "empty_input")
    return check_text(text, limits, param)


def _check_url(url: Any, param: str) -> str:
    if not isinstance(url, str):
        raise _bad(f"{param}: image URL must be a string, not {type(url).__name__}", param)
    lowered = url[:8].lower()
    if not (lowered.startswith("data:") or lowered.startswith("http://") or lowered.startswith("https://")):
        raise _bad(f"{param}: image must be a data: URI ('data:image/png;base64,...') or an http(s) URL",
                   param, "invalid_image_url")
    return url


def _is_token_ids(value: Any) -> bool:
    return isinstance(value, int) or (isinstance(value, list) and bool(value) and
                                      all(isinstance(v, int) and not isinstance(v, bool) for v in value))


def _inputs(value: Any, modality: str, limits: Limits) -> list[RawItem]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise _bad(f"'input' must be a string or a list, not {type(value).__name__}", "input")
    if _is_token_ids(value):
        raise _bad("token-id inputs are not supported: send text, because E5-V wraps it in a prompt", "input")
    check_items(len(value), limits)
    items = []
    for i, element in enumerate(value):
        param = f"input[{i}]"
        if isinstance(element, str):
            if modality == "image":
                items.append(RawItem(param, image=_check_url(element, param)))
            else:
                items.append(RawItem(param, text=_text(element, limits, param)))
        elif modality == "image":
            raise _bad(f"{param}: with modality 'image' every input must be a data: URI or URL string", param)
        elif _is_token_ids(element):
            raise _bad(f"{param}: token-id inputs are not supported: send text", param)
        elif isinstance(element, list):
            items.append(_content(element, limits, param))
        elif isinstance(element, dict) and "messages" in element:
            items.append(_messages(element["messages"], limits, f"{param}.messages"))
        elif isinstance(element, dict) and "content" in element:
            items.append(_message(element, limits, param))
        elif isinstance(element, dict) and "type" in element:
            items.append(_content([element], limits, param))
        else:
            raise _bad(f"{param}: expected a string, a list of content parts or a message, "
                       f"not {type(element).__name__}", param)
    return items


def _messages(messages: Any, limits: Limits, param: str) -> RawItem:
    if not isinstance(messages, list) or len(messages) != 1:
        raise _bad(f"{param} must be a list with exactly one user message", param)
    return _message(messages[0], limits, f"{param}[0]")


def _message(message: Any, limits: Limits, param: str) -> RawItem:
    if not isinstance(message, dict):
        raise _bad(f"{param} must be an object with 'role' and 'content'", param)
    if message.get("role", "user") != "user":
        raise _bad(f"{param}: role must be 'user', got {message.get('role')!r}", f"{param}.role")
    return _content(message.get("content"), limits, f"{param}.content")


def _content(content: Any, limits: Limits, param: str) -> RawItem:
    if isinstance(content, str):
        return RawItem(param, text=_text(content, limits, param))
    if not isinstance(content, list) or not content:
        raise _bad(f"{param} must be a string or a non-empty list of content parts", param)
    texts, images = [], []
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise _bad(f"{where}.text must be a string", f"{where}.text")
            texts.append(part["text"])
        elif kind == "image_url":
            ref = part.get("image_url")
            url = ref.get("url") if isinstance(ref, dict) else ref
            images.append(_check_url(url, f"{where}.image_url"))
        else:
            raise _bad(f"{where}: content parts must be {{'type': 'text', 'text': ...}} or "
                       "{'type': 'image_url', 'image_url': {'url': ...}}", where)
    if len(images) > 1:
        raise _bad(f"{param}: {len(images)} images in one item; E5-V embeds at most one image per item "
                   "(send several items instead)", param)
    text = "\n".join(texts) if texts else None
    return RawItem(param, text=_text(text, limits, param) if text is not None else None,
                   image=images[0] if images else None)
