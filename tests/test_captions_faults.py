"""HTTP captioner and caption-batch faults, and conflicted results files (issue 18).

Local servers bind 127.0.0.1 only and every loop in them is bounded.
"""

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler

import numpy as np
import pandas as pd
import pytest
from local_server import LocalServer, ok_reply
from PIL import Image

from urbanlib.captions.backends import Captioner, CaptionError, OpenAICompatibleCaptioner, parse_retry_after
from urbanlib.captions.batch import caption_dataset, failures_path, read_records
from urbanlib.data.dataset import UrbanDataset
from urbanlib.results import store


class _Scripted(LocalServer):
    """A loopback server; ``script(n)`` -> (status, headers, body, drip_s) for request n."""

    def __init__(self, script):
        self.script, self.count, self.lock = script, 0, threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                self.rfile.read(int(self.headers["Content-Length"]))
                with server.lock:
                    n, server.count = server.count, server.count + 1
                status, headers, body, drip = server.script(n)
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if drip:
                        for i in range(min(len(body), 200)):  # bounded: at most 200 bytes, one per drip
                            self.wfile.write(body[i:i + 1])
                            self.wfile.flush()
                            time.sleep(drip)
                    else:
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up

            def log_message(self, *args):
                pass

        self.serve(Handler)


def _img():
    return Image.fromarray(np.zeros((8, 8, 3), np.uint8))


def test_a_dripping_server_is_cut_off_at_the_deadline():
    body = ok_reply("x" * 150)
    # a byte every 0.1 s never trips the 2 s per-read timeout, even with a stalled server thread; only the
    # 2.5 s deadline on the whole reply cuts it off
    with _Scripted(lambda n: (200, {}, body, 0.1)) as srv:
        cap = OpenAICompatibleCaptioner(srv.url, "m", timeout_s=2.0, deadline_s=2.5, max_retries=1, backoff_s=0.01)
        t0 = time.monotonic()
        with pytest.raises(CaptionError, match=r"gave up after 2 attempts.*timeout.*deadline"):
            cap.request(_img(), "p", "tile-1")
        took = time.monotonic() - t0
    assert took < 12.0, took  # 2 attempts x 2.5 s deadline (+ one drip each); the reply alone takes 20 s


@pytest.mark.parametrize(("value", "expected"), [
    ("5", 5.0), (" 7 ", 7.0), ("2.5", 2.5), ("100", 30.0), ("0", 0.0),
    ("-1", None), ("nan", None), ("inf", None), ("1e9", None), ("soon", None), ("", None), (None, None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date in the past: no wait
])
def test_retry_after_is_parsed_defensively_and_clamped(value, expected):
    assert parse_retry_after(value, cap=30.0) == expected


def test_retry_after_as_an_http_date_in_the_future():
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=12), usegmt=True)
    assert 9.0 <= parse_retry_after(when, cap=30.0) <= 12.0
    assert parse_retry_after(when, cap=3.0) == 3.0


def test_odd_retry_after_values_fall_back_to_backoff_instead_of_losing_the_batch():
    replies = [(429, {"Retry-After": "-1"}, b"slow down", 0), (503, {"Retry-After": "nan"}, b"busy", 0),
               (429, {"Retry-After": "Thu, 99 Foo 20xx"}, b"", 0), (200, {}, ok_reply("a caption"), 0)]
    with _Scripted(lambda n: replies[min(n, 3)]) as srv:
        cap = OpenAICompatibleCaptioner(srv.url, "m", max_retries=5, backoff_s=0.01)
        assert cap.caption([_img()], "p") == ["a caption"]
        assert srv.count == 4


def test_an_image_that_cannot_be_encoded_is_a_caption_error(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:150])
    lazy = Image.open(path)  # opened, not decoded: the failure comes when the request encodes it
    cap = OpenAICompatibleCaptioner("http://127.0.0.1:9/v1", "m", max_retries=0)
    with pytest.raises(CaptionError, match="cut.png"):
        cap.caption([lazy, _img()], "p")


# ---------------------------------------------------------------- the batch writer


def _dataset(root, n=8):
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        Image.fromarray(np.full((8, 8, 3), i * 20, np.uint8)).save(root / "images" / f"t{i}.png")
        rows.append({"region_id": f"r{i}", "kind": "satellite", "path": f"images/t{i}.png", "lon": np.nan,
                     "lat": np.nan})
    regions = pd.DataFrame({"region_id": [f"r{i}" for i in range(n)], "city": "c"})
    return UrbanDataset(regions=regions, images=pd.DataFrame(rows), root=root)


class _Echo(Captioner):
    name, batch_size = "echo", 4

    def __init__(self, delay=0.0):
        self.delay, self.seen = delay, []

    def caption(self, images, prompt):
        time.sleep(self.delay)
        self.seen += [im.filename for im in images]
        return [f"caption of {im.filename.rsplit('/', 1)[-1]}" for im in images]


def test_a_bad_image_is_recorded_and_skipped_and_the_batch_goes_on(tmp_path):
    ds = _dataset(tmp_path / "city")
    cut = tmp_path / "city" / "images" / "t2.png"
    cut.write_bytes(cut.read_bytes()[:40])  # truncated
    secret = tmp_path / "private.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(secret)
    ds.images.loc[5, "path"] = "../private.png"  # outside the dataset folder
    out = tmp_path / "caps.jsonl"
    echo = _Echo()
    with pytest.raises(CaptionError, match=r"2 image\(s\) could not be read.*t2\.png.*private\.png"):
        caption_dataset(ds, echo, out, progress=False)
    assert len(read_records(out)) == 6 and not any("private" in s for s in echo.seen)  # never read or sent
    failed = [json.loads(line) for line in failures_path(out).read_text().splitlines()]
    assert [f["image"] for f in failed] == ["images/t2.png", "../private.png"]
    again = _Echo()
    with pytest.raises(CaptionError, match="2 image"):
        caption_dataset(ds, again, out, progress=False)  # a rerun retries only the two, captions nothing twice
    assert again.seen == [] and len(read_records(out)) == 6


def test_two_writers_on_one_caption_file_never_duplicate(tmp_path):
    ds = _dataset(tmp_path / "city")
    out = tmp_path / "caps.jsonl"
    errors = []

    def run():
        try:
            caption_dataset(ds, _Echo(delay=0.05), out, progress=False)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    images = [r["image"] for r in read_records(out)]
    assert sorted(images) == sorted(ds.images["path"]) and len(images) == len(set(images))


# ---------------------------------------------------------------- results files with merge conflicts


def test_results_with_git_conflict_markers_are_refused_naming_file_and_line(tmp_path):
    path = tmp_path / "benchmark.csv"
    header = ",".join(store.ROW_COLUMNS + store.PROVENANCE_COLUMNS)
    row = "benchmark,u1,c,m,t,r2,0.5" + "," * len(store.PROVENANCE_COLUMNS)
    path.write_text(f"{header}\n<<<<<<< HEAD\n{row}\n=======\n{row.replace('0.5', '0.6')}\n>>>>>>> other\n")
    with pytest.raises(ValueError, match=r"benchmark\.csv:2: git conflict marker '<<<<<<< HEAD'"):
        store.read_results("benchmark", tmp_path)
    new = pd.DataFrame([{c: "x" for c in store.ROW_COLUMNS + store.PROVENANCE_COLUMNS}])
    with pytest.raises(ValueError, match=r"benchmark\.csv:2: git conflict marker"):
        store._replace_unit("benchmark", "benchmark", "u2", new, tmp_path)
    path.write_text(f"{header}\n{row}\n")
    assert len(store.read_results("benchmark", tmp_path)) == 1
