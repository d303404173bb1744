"""A local HTTP server for captioner tests: bound to 127.0.0.1 on a free port, stopped on exit."""

import json
import threading
from http.server import ThreadingHTTPServer


class LocalServer:
    """Base of the tests' fake OpenAI-compatible servers: ``serve(Handler)`` in ``__init__``, then ``with``."""

    def serve(self, handler) -> None:
        """Bind ``handler`` to a free loopback port; ``self.url`` is the API base the client gets."""
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def ok_reply(text: str) -> bytes:
    """The body of a chat-completions answer whose message is ``text``."""
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
