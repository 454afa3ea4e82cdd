"""Secrets never come out (issue 14, class 3): generated tokens through every path that could echo them.

A real hostile HTTP server (it answers every request with an error body that echoes the
request's headers, an ANSI escape included) stands in for a proxy that leaks headers.
"""

import http.server
import json
import threading

import numpy as np
import pytest

from explainer.cli import main
from explainer.errors import InputError, add_secret, redact
from explainer.explanation import atomic_write_all

ALPHABETS = ["abcdefghijklmnopqrstuvwxyz0123456789", "ABCDEF0123456789-_.~+/=", "%&?#@:;,!$'()*",
             "\u00e9\u00df\u4e2d\u0416\u00b2"]


def _token(seed: int, control: bool = False) -> str:
    rng = np.random.default_rng(seed)
    alphabet = "".join(ALPHABETS[: 1 + seed % len(ALPHABETS)])
    text = "tok" + "".join(rng.choice(list(alphabet), 20))
    return text[:10] + ("\x07\x1b[31m" if control else "") + text[10:]


class _Echo(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        ready = "/ready" in self.path or "/live" in self.path  # the server and model are up...
        body = json.dumps({} if ready else  # ...and every other answer echoes the request's headers
                          {"error": "denied \x1b[2J" + " ".join(f"{k}={v}" for k, v in self.headers.items())})
        data = body.encode()
        self.send_response(200 if ready else 400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def echo_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _cli(capsys, args):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out + out.err


SEEDS = range(6)


@pytest.mark.parametrize("seed", SEEDS)
def test_header_echoed_by_server_is_redacted(capsys, tmp_path, echo_server, seed):
    token = _token(seed)
    image = tmp_path / "x.npy"
    np.save(image, np.zeros((1, 3, 8, 8), np.float32))
    code, text = _cli(capsys, ["classify", str(image), "--model", f"http://{echo_server}/m",
                               "--header", f"Authorization: Bearer {token}", "--retry-seconds", "1"])
    assert code in (2, 3), text  # a failing server is exit 3
    assert token not in text and token[3:13] not in text and "<redacted>" in text, text
    assert "\x1b" not in text and len(text.strip().splitlines()) == 1, text


@pytest.mark.parametrize("seed", SEEDS)
def test_header_with_control_characters_is_never_echoed(capsys, tmp_path, seed):
    token = _token(seed, control=True)
    code, text = _cli(capsys, ["classify", str(tmp_path / "x.npy"), "--model", "http://127.0.0.1:9/m",
                               "--header", f"x-api-key: {token}"])
    assert code == 2, text
    for part in (token, token[:10], token[-10:], repr(token)[1:-1]):
        assert part not in text, text


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", ["query", "userinfo", "fragment", "password"])
def test_url_credentials_and_query_are_redacted(capsys, tmp_path, seed, shape):
    token = _token(seed).replace("#", "").replace("@", "").replace("?", "").replace("/", "")
    url = {"query": f"http://127.0.0.1:9/m?token={token}", "userinfo": f"grpc://{token}@127.0.0.1:9/m",
           "fragment": f"https://127.0.0.1:9/m#{token}", "password": f"http://u:{token}@127.0.0.1:9/m"}[shape]
    code, text = _cli(capsys, ["classify", str(tmp_path / "x.npy"), "--model", url])
    assert code == 2, text
    assert token not in text, text


@pytest.mark.parametrize("seed", SEEDS)
def test_registered_secret_never_reaches_a_json_file_or_an_error(tmp_path, seed):
    token = _token(seed, control=seed % 2 == 1)
    add_secret(token)
    record = {"label": f"class {token}", "source": f"http://h:1/m?key={token[:8]}zz"}
    atomic_write_all({tmp_path / "r.json": json.dumps(record).encode()})
    written = (tmp_path / "r.json").read_text()
    assert token not in written and json.dumps(token)[1:-1] not in written
    assert "<redacted>" in json.loads(written)["label"]
    assert token not in str(InputError(f"server said {token!r}")) and token not in redact(repr(token))
