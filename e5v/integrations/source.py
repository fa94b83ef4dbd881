"""Where framework adapters get vectors: a local ``E5V`` model or an e5v server, behind one small interface.

Both sides return float32 lists in input order and raise on a bad item (a framework has no slot for a
per-item error). Locally, ``E5V.encode``; remotely, the server's OpenAI-compatible ``/v1/embeddings`` (images
are sent as data URIs read here, so the server never reads the caller's files).
"""

from __future__ import annotations

import base64
import mimetypes
import os
from pathlib import Path
from typing import Any, Sequence


class EmbeddingSource:
    """Text and image embeddings from a local model (``model``) or a server (``server_url``)."""

    def __init__(self, model: Any = None, *, server_url: str | None = None, model_name: str | None = None,
                 api_key: str | None = None, batch_size: int = 8, timeout: float = 120.0,
                 query_instruction: str | None = None, query_prompt: str | None = None,
                 document_prompt: str | None = None):
        if (model is None) == (server_url is None):
            raise ValueError("give either model= (an E5V or a model path/id) or server_url= (an e5v server)")
        if server_url is not None and (query_prompt or document_prompt):
            raise ValueError("named prompt sets are local only; with server_url use query_instruction= (the "
                             "server's prompts are fixed when it starts)")
        if isinstance(model, (str, os.PathLike)):
            from ..encoder import E5V

            model = E5V.from_pretrained(model)
        self.model, self.server_url = model, server_url.rstrip("/") if server_url else None
        self.model_name, self.api_key, self.batch_size, self.timeout = model_name, api_key, batch_size, timeout
        self.query_instruction, self.query_prompt, self.document_prompt = query_instruction, query_prompt, document_prompt

    # ------------------------------------------------------------------ the three things adapters need
    def documents(self, texts: Sequence[str]) -> list[list[float]]:
        return self._embed(list(texts), prompt=self.document_prompt)

    def query(self, text: str) -> list[float]:
        return self._embed([text], instruction=self.query_instruction, prompt=self.query_prompt)[0]

    def images(self, uris: Sequence[str | os.PathLike | bytes]) -> list[list[float]]:
        """Images by path, ``file://`` URI, ``data:`` URI or bytes (remote http(s) URLs only through a server
        started with --allow-remote-images)."""
        return self._embed([_image_item(u) for u in uris], prompt=self.document_prompt)

    # ------------------------------------------------------------------ local or remote
    def _embed(self, items: list, instruction: str | None = None, prompt: str | None = None) -> list[list[float]]:
        if not items:
            return []
        if self.model is not None:
            vectors = self.model.encode([_local(i) for i in items], batch_size=self.batch_size,
                                        instruction=instruction, prompt=prompt, show_progress_bar=False)
            return vectors.astype("float32").tolist()
        return self._remote(items, instruction)

    def _remote(self, items: list, instruction: str | None) -> list[list[float]]:
        import httpx

        body: dict[str, Any] = {"model": self.model_name or "e5-v", "input": [_wire(i) for i in items]}
        if instruction is not None:
            body["instruction"] = instruction
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        response = httpx.post(f"{self.server_url}/v1/embeddings", json=body, headers=headers, timeout=self.timeout)
        if response.status_code != 200:
            raise RuntimeError(f"the e5v server at {self.server_url} answered {response.status_code}: "
                               f"{response.text[:500]}")
        data = sorted(response.json()["data"], key=lambda d: d["index"])
        return [d["embedding"] for d in data]


class _Image:
    """An image to embed: a local path or raw bytes (data URIs are decoded here), or a remote URL."""

    def __init__(self, path: Path | None = None, data: bytes | None = None, url: str | None = None):
        self.path, self.data, self.url = path, data, url


def _image_item(uri: Any) -> _Image:
    if isinstance(uri, (bytes, bytearray)):
        return _Image(data=bytes(uri))
    if hasattr(uri, "read"):  # a file object (LlamaIndex may hand over a BytesIO of a node's image)
        return _Image(data=uri.read())
    text = str(uri)
    if text.startswith("data:"):
        header, _, payload = text.partition(",")
        if ";base64" not in header:
            raise ValueError("data: URIs must be base64-encoded")
        return _Image(data=base64.b64decode(payload))
    if text.startswith(("http://", "https://")):
        return _Image(url=text)
    return _Image(path=Path(text[len("file://"):] if text.startswith("file://") else text).expanduser())


def _local(item: Any) -> Any:
    if not isinstance(item, _Image):
        return item
    if item.url is not None:
        raise ValueError(f"{item.url}: a local model does not fetch URLs; download the image or use an e5v server "
                         "started with --allow-remote-images")
    return item.path if item.path is not None else item.data


def _wire(item: Any) -> Any:
    if not isinstance(item, _Image):
        return item
    if item.url is not None:
        url = item.url
    else:
        data = item.data if item.data is not None else item.path.read_bytes()
        kind = mimetypes.guess_type(str(item.path))[0] if item.path is not None else None
        media = kind if kind and kind.startswith("image/") else ""  # the server sniffs the format from the header
        url = f"data:{media};base64," + base64.b64encode(data).decode()
    return [{"type": "image_url", "image_url": {"url": url}}]
