"""A scripted LLM server on 127.0.0.1 for role and provider tests.

It speaks the real wire formats (OpenAI ``POST /v1/chat/completions`` and Anthropic
``POST /v1/messages``), answers with prepared replies in order, and records every request
(path, headers, JSON body) so tests can check what a client sent. A reply is:

- a ``str``: the assistant's text;
- ``{"tool_input": {...}}``: an Anthropic ``tool_use`` block (OpenAI: the JSON as text);
- ``{"status": 429, "headers": {"Retry-After": "0"}, "body": {...}}``: an HTTP error;
- any of the above with ``"delay": seconds`` to answer late, ``"usage": {...}`` to override;
- any of the above with ``"wait": threading.Event`` to answer only once the test sets it (a model
  that is slow until the test has seen what it wants; ``"wait_s"`` bounds the wait, default 300).

When the script runs out it answers HTTP 418 naming that, so a test that asks too often fails.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs


@attrs.frozen
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any


class ScriptedLLMServer:
    """Start with ``with ScriptedLLMServer([...]) as server:``; ``server.url`` is the base."""

    def __init__(self, replies: list[Any] | None = None) -> None:
        self.replies: deque[Any] = deque(replies or [])
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                headers = {k.lower(): v for k, v in self.headers.items()}
                with server._lock:
                    server.requests.append(Recorded(self.path, headers, body))
                    reply = server.replies.popleft() if server.replies else None
                server._answer(self, reply, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def add(self, *replies: Any) -> None:
        with self._lock:
            self.replies.extend(replies)

    def __enter__(self) -> ScriptedLLMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- answers -----------------------------------------------------------------------------
    def _answer(self, handler: BaseHTTPRequestHandler, reply: Any, body: Any) -> None:
        if reply is None:
            return self._send(handler, 418, {"error": {"message": "scripted server: no reply left"}})
        spec = reply if isinstance(reply, dict) else {"text": reply}
        if spec.get("delay"):
            time.sleep(float(spec["delay"]))
        if spec.get("wait") is not None:
            spec["wait"].wait(timeout=float(spec.get("wait_s", 300)))
        if "status" in spec:
            payload = spec.get("body", {"error": {"message": f"scripted HTTP {spec['status']}"}})
            return self._send(handler, int(spec["status"]), payload, spec.get("headers", {}))
        text = spec.get("text")
        tool_input = spec.get("tool_input")
        if text is None:
            text = json.dumps(tool_input)
        prompt_tokens = max(1, len(json.dumps(body)) // 4)
        completion_tokens = max(1, len(text) // 4)
        usage = spec.get("usage")
        if handler.path.endswith("/messages"):
            blocks: list[dict[str, Any]] = []
            if "tool_input" in spec:
                blocks.append({"type": "tool_use", "id": "toolu_1", "name": "answer",
                               "input": tool_input})
            else:
                blocks.append({"type": "text", "text": text})
            payload = {
                "id": "msg_scripted", "type": "message", "role": "assistant",
                "model": (body or {}).get("model", "scripted"), "content": blocks,
                "stop_reason": "tool_use" if "tool_input" in spec else "end_turn",
                "usage": usage or {"input_tokens": prompt_tokens, "output_tokens": completion_tokens},
            }
        else:
            payload = {
                "id": "chatcmpl-scripted", "object": "chat.completion", "created": int(time.time()),
                "model": (body or {}).get("model", "scripted"),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}],
                "usage": usage or {"prompt_tokens": prompt_tokens,
                                   "completion_tokens": completion_tokens,
                                   "total_tokens": prompt_tokens + completion_tokens},
            }
        self._send(handler, 200, payload)

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler, status: int, payload: Any, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        try:
            handler.send_response(status)
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(data)))
            for key, value in (headers or {}).items():
                handler.send_header(key, value)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
            pass
