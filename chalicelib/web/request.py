"""One HTTP request as a service sees it: framework-free and typed.

Built once per request by app.py (`_serve`) and handed to the service's entry point;
services take what they need from it instead of from process globals.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..config import Settings, settings
from .params import Params


@dataclass(frozen=True)
class Request:
    method: str
    params: Params
    base: str  # the public base URL of the API (web.urls.base_url)
    path: Mapping[str, str] = field(default_factory=dict)  # path parameters, greedy too
    caller: str | None = None  # the owner identity (web.callers.identify), or None
    request_id: str | None = None
    settings: Settings = field(default_factory=settings)

    @property
    def rest(self) -> str:
        """The greedy tail of the path ({rest+}), without surrounding slashes."""
        return (self.path.get("rest") or "").strip("/")
