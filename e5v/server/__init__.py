"""OpenAI-compatible embedding server (``e5v serve``); requires the ``serve`` extra.

    from e5v.server import ServerConfig, create_app
    app = create_app(ServerConfig(model_names=("e5v",)), model=E5V.from_pretrained(...))
"""

from __future__ import annotations

from ..errors import require

require("fastapi", "serve")

from .app import create_app  # noqa: E402
from .limits import Limits, RemoteImages  # noqa: E402
from .state import ServerConfig  # noqa: E402

__all__ = ["create_app", "ServerConfig", "Limits", "RemoteImages"]
