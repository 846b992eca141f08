"""Talking to the REST endpoint of the engine that holds a journal (loopback, bearer token)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from weft_nb.errors import CliError

HTTP_TIMEOUT = 30.0


def request_endpoint(endpoint: dict[str, Any], method: str, route: str, body: Any = None) -> Any:
    """Call the holder's REST endpoint; its refusals become messages.

    A JSON answer comes back decoded; a ``text/plain`` one (``?format=text``) as its text.
    """
    url = str(endpoint["url"]).rstrip("/") + route
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if endpoint.get("token"):
        request.add_header("Authorization", f"Bearer {endpoint['token']}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    try:
        with opener.open(request, timeout=HTTP_TIMEOUT) as response:
            data = response.read()
            if response.headers.get_content_type() == "text/plain":
                return data.decode(response.headers.get_content_charset() or "utf-8")
            return json.loads(data or b"null")
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read() or b"{}").get("error")
        except (ValueError, AttributeError):
            detail = None
        raise CliError(
            f"the kernel's endpoint ({endpoint['url']}, PID {endpoint.get('pid')}) refused: "
            f"{detail or exc.reason} (HTTP {exc.code})"
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(
            f"the kernel's endpoint {endpoint['url']} (PID {endpoint.get('pid')}, recorded in "
            f"{endpoint.get('file')}) did not answer: {reason}"
        ) from None
