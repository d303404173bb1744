"""Captioner backends, prompts and resumable batch captioning (issue 7, part A)."""

import base64
import hashlib
import io
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from local_server import LocalServer, ok_reply
from PIL import Image

from urbanlib.captions import prompts
from urbanlib.captions.backends import (
    Captioner,
    CaptionError,
    OpenAICompatibleCaptioner,
    SimulatedCaptioner,
    TransformersCaptioner,
)
from urbanlib.captions.batch import caption_dataset, load_captions, read_records
from urbanlib.data.report import DataError

PAPERS = Path(__file__).resolve().parents[2] / "shared" / "papers"


def _images(n, size=24):
    return [Image.new("RGB", (size, size), (40 * i % 256, 100, 200 - 30 * i % 200)) for i in range(n)]


# --------------------------------------------------------------------------------------------- prompts


def test_prompts_defaults_and_fuse():
    assert prompts.default_prompt("long") == prompts.URBANLN_LONG
    assert prompts.default_prompt("long", "street").count("street-view image") == 1
    assert "urban infrastructure" in prompts.default_prompt("short")
    with pytest.raises(ValueError, match="satellite"):
        prompts.default_prompt("short", "street")
    p = prompts.fuse_prompt("A grid of roads.", ["a red roof", " ", "two cars"])
    assert "A grid of roads." in p and "- a red roof\n- two cars" in p
    assert prompts.prompt_hash("a") != prompts.prompt_hash("b")


@pytest.mark.skipif(not (PAPERS / "urbanln-aaai2026.txt").is_file(), reason="needs ../shared/papers")
def test_urbanln_prompt_is_verbatim_from_the_paper():
    assert prompts.URBANLN_LONG in (PAPERS / "urbanln-aaai2026.txt").read_text()


# ------------------------------------------------------------------------------- transformers backend


def _tiny_llava():
    """A random-init LlavaForConditionalGeneration (tiny CLIP vision + tiny Llama) and its processor, offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    words = ["<unk>", "<pad>", "<s>", "</s>", "<image>", "USER:", "ASSISTANT:"] + (
        "a the of with and road roads building buildings tree trees water park car cars green grey red house "
        "houses river field fields dense low tall area block blocks street streets lot parking").split()
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                  eos_token="</s>", additional_special_tokens=["<image>"])
    tok.model_input_names = ["input_ids", "attention_mask"]
    template = ("{% for m in messages %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}<image> "
                "{% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}"
                "{% if add_generation_prompt %}ASSISTANT:{% endif %}")
    proc = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                             crop_size={"height": 32, "width": 32}),
                          tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                          chat_template=template, num_additional_image_tokens=1)
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                       image_size=32, patch_size=8, projection_dim=32),
        text_config=LlamaConfig(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                                pad_token_id=1, bos_token_id=2, eos_token_id=3),
        image_token_index=4, vision_feature_select_strategy="default", vision_feature_layer=-1)
    return LlavaForConditionalGeneration(cfg), proc


def test_transformers_captioner_tiny_llava_in_memory_and_from_folder(tmp_path):
    model, proc = _tiny_llava()
    cap = TransformersCaptioner(model=model, processor=proc, name="tiny-llava", max_new_tokens=3,
                                generate_kwargs={"min_new_tokens": 3}, batch_size=2)
    imgs = _images(2, size=40)
    out = cap.caption(imgs, "describe the roads")
    assert len(out) == 2 and all(isinstance(t, str) and t for t in out)
    # only the generated tokens come back (the echoed prompt would add USER:/ASSISTANT:/prompt words)
    assert all(len(t.split()) <= 3 and "ASSISTANT:" not in t for t in out)
    # the same model saved and loaded through AutoProcessor + AutoModelForImageTextToText (offline)
    model.save_pretrained(tmp_path / "m")
    proc.save_pretrained(tmp_path / "m")
    loaded = TransformersCaptioner(tmp_path / "m", max_new_tokens=3, generate_kwargs={"min_new_tokens": 3})
    assert type(loaded.model).__name__ == "LlavaForConditionalGeneration"
    assert loaded.name == "m"
    assert loaded.caption(imgs, "describe the roads") == out  # greedy: same weights, same captions


def _tiny_qwen2_5_vl():
    """A random-init Qwen2_5_VLForConditionalGeneration with a word-level Qwen2 tokenizer, offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2TokenizerFast,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
               "<|video_pad|>"]
    words = special + "user assistant a the road roads building tree water park car green grey house".split()
    ids = {w: i for i, w in enumerate(words)}
    tk = Tokenizer(models.WordLevel(ids, unk_token="<|endoftext|>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = Qwen2TokenizerFast(tokenizer_object=tk, unk_token="<|endoftext|>", pad_token="<|endoftext|>",
                             eos_token="<|im_end|>", additional_special_tokens=special[1:])
    tok.model_input_names = ["input_ids", "attention_mask"]
    template = ("{% for m in messages %}<|im_start|> {{ m['role'] }} {% for c in m['content'] %}"
                "{% if c['type'] == 'image' %}<|vision_start|> <|image_pad|> <|vision_end|> "
                "{% else %}{{ c['text'] }} {% endif %}{% endfor %}<|im_end|> {% endfor %}"
                "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")
    proc = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=56 * 56),
                               tokenizer=tok, video_processor=Qwen2VLVideoProcessor(), chat_template=template)
    dims = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                rope_scaling={"type": "mrope", "mrope_section": [2, 2, 4]})
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(words), max_position_embeddings=256, **dims),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        vocab_size=len(words), eos_token_id=ids["<|im_end|>"], pad_token_id=0, **dims)
    return Qwen2_5_VLForConditionalGeneration(cfg), proc


def test_transformers_captioner_tiny_qwen2_5_vl():
    model, proc = _tiny_qwen2_5_vl()
    cap = TransformersCaptioner(model=model, processor=proc, max_new_tokens=3, generate_kwargs={"min_new_tokens": 3})
    assert cap._prompt_text("describe").startswith("<|im_start|> user <|vision_start|> <|image_pad|>")
    out = cap.caption(_images(2, size=40), "describe the roads")
    assert len(out) == 2 and all(t and len(t.split()) <= 3 for t in out)


def test_transformers_captioner_argument_errors():
    with pytest.raises(ValueError, match="either"):
        TransformersCaptioner()
    with pytest.raises(OSError, match="cannot load"):
        TransformersCaptioner("/nonexistent/model/folder")


# ---------------------------------------------------------------------------- OpenAI-compatible backend


class _Server(LocalServer):
    """A loopback chat-completions server whose replies a test scripts: reply(n, body) -> (status, bytes, delay)."""

    def __init__(self, reply):
        self.reply, self.requests, self.in_flight, self.max_in_flight = reply, [], 0, 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    n = len(server.requests)
                    server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                status, data, delay = server.reply(n, body)
                time.sleep(delay)
                # Out of flight before the reply goes out: once the client has read it, it may start its next
                # request, which must not find this one still counted (a loaded machine once measured 3 of 2).
                with server.lock:
                    server.in_flight -= 1
                try:
                    self.send_response(status)
                    if status == 429:
                        self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

            def log_message(self, *args):
                pass

        self.serve(Handler)


def _image_digest(body):
    url = body["messages"][0]["content"][1]["image_url"]["url"]
    return hashlib.sha1(url.encode()).hexdigest()[:10]


def test_openai_batching_format_order_and_concurrency_limit():
    with _Server(lambda n, body: (200, ok_reply(f"caption {_image_digest(body)}"), 0.3)) as srv:
        cap = OpenAICompatibleCaptioner(srv.url, "qwen2.5-vl", api_key="k", max_concurrency=2, backoff_s=0.01)
        imgs = _images(5)
        out = cap.caption(imgs, "describe")
        assert srv.max_in_flight == 2  # concurrent, and never more than the limit
    assert len(srv.requests) == 5
    req = srv.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer k"
    assert req["body"]["model"] == "qwen2.5-vl"
    text, image = req["body"]["messages"][0]["content"]
    assert text == {"type": "text", "text": "describe"}
    url = image["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size == (24, 24)
    # each caption belongs to its own image, in input order
    expect = [f"caption {hashlib.sha1(OpenAICompatibleCaptioner.data_url(im).encode()).hexdigest()[:10]}"
              for im in imgs]
    assert out == expect


@pytest.mark.parametrize("status", [503, 500, 429])
def test_openai_retries_5xx_and_429_then_succeeds(status):
    with _Server(lambda n, body: (status, b"busy", 0) if n < 2 else (200, ok_reply("ok"), 0)) as srv:
        cap = OpenAICompatibleCaptioner(srv.url, "m", max_retries=3, backoff_s=0.01)
        assert cap.caption(_images(1), "p") == ["ok"]
    assert len(srv.requests) == 3


def test_openai_gives_up_after_retries_naming_the_image():
    with _Server(lambda n, body: (502, b"bad gateway", 0)) as srv:
        cap = OpenAICompatibleCaptioner(srv.url, "m", max_retries=2, backoff_s=0.01)
        im = _images(1)[0]
        im.info["id"] = "region_r03c04"
        with pytest.raises(CaptionError, match=r"region_r03c04: gave up after 3 attempts.*HTTP 502"):
            cap.caption([im], "p")
    assert len(srv.requests) == 3


def test_openai_timeout_is_retried_then_reported():
    # a slow reply takes 20 s and the client's timeout is 1 s: wide margins both ways on a loaded machine
    # (the server's handler threads are daemons, so the sleeping ones do not hold up the test's exit)
    with _Server(lambda n, body: (200, ok_reply("slow"), 20.0) if n == 0 else (200, ok_reply("fast"), 0)) as srv:
        cap = OpenAICompatibleCaptioner(srv.url, "m", timeout_s=1.0, max_retries=2, backoff_s=0.01)
        assert cap.caption(_images(1), "p") == ["fast"]
    with _Server(lambda n, body: (200, ok_reply("slow"), 20.0)) as srv:
        cap = OpenAICompatibleCaptioner(srv.url, "m", timeout_s=1.0, max_retries=1, backoff_s=0.01)
        t0 = time.perf_counter()
        with pytest.raises(CaptionError, match=r"image #0: gave up after 2 attempts.*timeout"):
            cap.caption(_images(1), "p")
        assert time.perf_counter() - t0 < 10.0  # two 1 s timeouts; waiting for a slow reply would take 20 s
    assert len(srv.requests) == 2


@pytest.mark.parametrize("payload", [b"<html>oops</html>", b'{"choices": []}', b'{"result": "x"}',
                                     ok_reply(""), ok_reply("   ")])
def test_openai_malformed_reply_raises_caption_error(payload):
    with _Server(lambda n, body: (200, payload, 0)) as srv:
        cap = OpenAICompatibleCaptioner(srv.url, "m", malformed_retries=1, backoff_s=0.01)
        with pytest.raises(CaptionError, match="malformed reply"):
            cap.caption(_images(1), "p")
    assert len(srv.requests) == 2  # one retry, then a clear error (never an empty caption)


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_openai_4xx_is_not_retried(status):
    with _Server(lambda n, body: (status, b'{"error": "bad request"}', 0)) as srv:
        cap = OpenAICompatibleCaptioner(srv.url, "m", max_retries=5, backoff_s=0.01)
        with pytest.raises(CaptionError, match=f"HTTP {status}.*not retried"):
            cap.caption(_images(1), "p")
    assert len(srv.requests) == 1


def test_openai_partial_batch_failure_keeps_successes():
    bad = OpenAICompatibleCaptioner.data_url(_images(3)[1])

    def reply(n, body):
        url = body["messages"][0]["content"][1]["image_url"]["url"]
        return (400, b"no", 0) if url == bad else (200, ok_reply(f"c{n}"), 0)

    with _Server(reply) as srv:
        cap = OpenAICompatibleCaptioner(srv.url, "m", max_concurrency=1, backoff_s=0.01)
        with pytest.raises(CaptionError, match="1 of 3 captions failed") as e:
            cap.caption(_images(3), "p")
    assert e.value.partial[1] is None and all(e.value.partial[i] for i in (0, 2))


def test_openai_connection_refused_is_retried_and_reported():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    cap = OpenAICompatibleCaptioner(f"http://127.0.0.1:{port}/v1", "m", max_retries=1, backoff_s=0.01)
    with pytest.raises(CaptionError, match="gave up after 2 attempts.*connection error"):
        cap.caption(_images(1), "p")


# ------------------------------------------------------------------------------- SynthCity simulation


@pytest.fixture(scope="module")
def city():
    from urbanlib.data.synthcity import load_city

    return load_city("synth-ring", scale="smoke", progress=False)


def test_simulated_captioner_reproduces_the_shipped_captions(city):
    shipped = {(r.image, r.source, r.style): r.text for r in city.captions.itertuples()}
    sat = city.images[city.images["kind"] == "satellite"]["path"].tolist()
    street = city.images[city.images["kind"] == "street"]["path"].tolist()
    n = 0
    for name in ["sim-llava", "sim-qwen", "sim-internvl", "sim-llama-adapter"]:
        for style, paths in (("short", sat), ("long", sat + street)):
            cap = SimulatedCaptioner.from_dataset(name, city, style=style)
            paths = paths[name.count("-")::3]  # a third of the images (different ones per captioner) keeps it fast
            out = cap.caption(paths, "ignored")
            assert out == [shipped[(p, name, style)] for p in paths]
            n += len(paths)
    assert n > len(city.captions) // 3 - 8
    # PIL images opened from the city folder work too (matched by file name; pixels unused)
    cap = SimulatedCaptioner("sim-qwen", city.root, style="long")
    with Image.open(city.root / sat[0]) as im:
        assert cap.caption([im], "")[0] == shipped[(sat[0], "sim-qwen", "long")]
    d = cap.describe(sat[0])
    assert d["text"] == shipped[(sat[0], "sim-qwen", "long")] and d["statements"]


def test_simulated_captioner_errors(city, tmp_path):
    with pytest.raises(KeyError, match="sim-gpt"):
        SimulatedCaptioner("sim-gpt", city.root)
    cap = SimulatedCaptioner("sim-llava", city.root)
    with pytest.raises(CaptionError, match="no file name"):
        cap.caption(_images(1), "")
    with pytest.raises(CaptionError, match="not an image of"):
        cap.caption([tmp_path / "x.png"], "")


# ------------------------------------------------------------------------------- resumable batch writer


class _Killed(Exception):
    """Stands in for the process dying mid-run."""


class _Counting(Captioner):
    """Wraps a captioner; counts captioned images and raises after ``crash_after`` of them (a simulated kill)."""

    def __init__(self, inner, crash_after=None):
        self.inner, self.crash_after, self.seen = inner, crash_after, 0
        self.name, self.style, self.batch_size = inner.name, inner.style, 5

    def caption(self, images, prompt):
        if self.crash_after is not None and self.seen + len(images) > self.crash_after:
            raise _Killed("killed")
        self.seen += len(images)
        return self.inner.caption(images, prompt)


def _check_complete(path, city, name="sim-llava", style="long"):
    recs = read_records(path)
    keys = [r["image"] for r in recs]
    sat = city.images[city.images["kind"] == "satellite"]["path"].tolist()
    assert len(keys) == len(set(keys)), "duplicate records"
    assert sorted(keys) == sorted(sat), "lost records"
    shipped = {(r.image, r.source, r.style): r.text for r in city.captions.itertuples()}
    assert all(r["text"] == shipped[(r["image"], name, style)] for r in recs)
    assert all(r["region_id"] in r["image"] and r["source"] == name and r["style"] == style for r in recs)
    return recs


def test_caption_dataset_resumes_after_a_kill_without_repeats_or_losses(city, tmp_path):
    out = tmp_path / "caps.jsonl"
    sim = SimulatedCaptioner.from_dataset("sim-llava", city, style="long")
    with pytest.raises(_Killed):
        caption_dataset(city, _Counting(sim, crash_after=12), out, progress=False)
    assert len(read_records(out)) == 10  # two full batches of 5 were on disk before the kill
    again = _Counting(sim)
    caption_dataset(city, again, out, progress=False)
    assert again.seen == 64 - 10  # nothing captioned twice
    recs = _check_complete(out, city)
    assert recs[0]["prompt_hash"] == prompts.prompt_hash(prompts.URBANLN_LONG) and recs[0]["created"]
    done = _Counting(sim)
    caption_dataset(city, done, out, progress=False)  # complete: no work at all
    assert done.seen == 0 and len(read_records(out)) == 64
    table = load_captions(out)
    assert list(table.columns[:5]) == ["region_id", "image", "source", "style", "prompt_hash"]
    # another prompt is another caption of the same image, not a finished one
    other = _Counting(sim)
    caption_dataset(city, other, tmp_path / "caps.jsonl", prompt="another prompt", progress=False)
    assert other.seen == 64


def test_caption_dataset_torn_last_line_is_redone(city, tmp_path):
    out = tmp_path / "caps.jsonl"
    sim = SimulatedCaptioner.from_dataset("sim-llava", city, style="long")
    with pytest.raises(_Killed):
        caption_dataset(city, _Counting(sim, crash_after=7), out, progress=False)
    lines = out.read_text().splitlines()
    assert len(lines) == 5
    with open(out, "a") as f:  # a crash in the middle of writing record 6
        f.write(lines[0][: len(lines[0]) // 2])
    assert len(read_records(out)) == 5  # readers skip the torn line without touching the file
    again = _Counting(sim)
    caption_dataset(city, again, out, progress=False)
    assert again.seen == 64 - 5
    _check_complete(out, city)
    assert all(json.loads(line) for line in out.read_text().splitlines())


def test_caption_dataset_keeps_a_whole_last_record_that_lost_its_newline(city, tmp_path):
    out = tmp_path / "caps.jsonl"
    sim = SimulatedCaptioner.from_dataset("sim-llava", city, style="long")
    with pytest.raises(_Killed):
        caption_dataset(city, _Counting(sim, crash_after=7), out, progress=False)
    out.write_text(out.read_text().rstrip("\n"))
    again = _Counting(sim)
    caption_dataset(city, again, out, progress=False)
    assert again.seen == 64 - 5
    _check_complete(out, city)


def test_caption_dataset_corrupt_middle_line_names_file_and_line(city, tmp_path):
    out = tmp_path / "caps.jsonl"
    sim = SimulatedCaptioner.from_dataset("sim-llava", city, style="long")
    with pytest.raises(_Killed):
        caption_dataset(city, _Counting(sim, crash_after=7), out, progress=False)
    lines = out.read_text().splitlines()
    lines[2] = "{not json"
    out.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"caps\.jsonl:3: corrupt caption record"):
        caption_dataset(city, sim, out, progress=False)
    lines[2] = json.dumps({"region_id": "x"})
    out.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"caps\.jsonl:3: .*missing field"):
        read_records(out)


def test_caption_dataset_keeps_the_successes_of_a_failed_batch(city, tmp_path):
    class HalfFails(Captioner):
        name, batch_size = "half", 4

        def caption(self, images, prompt):
            partial = [f"ok {i}" if i % 2 == 0 else None for i in range(len(images))]
            raise CaptionError("server down", partial=partial)

    out = tmp_path / "caps.jsonl"
    with pytest.raises(CaptionError, match="server down"):
        caption_dataset(city, HalfFails(), out, progress=False)
    recs = read_records(out)
    assert [r["text"] for r in recs] == ["ok 0", "ok 2"]


def test_caption_dataset_rejects_empty_captions_and_style_mismatch(city, tmp_path):
    class Empty(Captioner):
        name = "empty"

        def caption(self, images, prompt):
            return [""] * len(images)

    with pytest.raises(CaptionError, match="empty caption"):
        caption_dataset(city, Empty(), tmp_path / "e.jsonl", progress=False)
    sim = SimulatedCaptioner.from_dataset("sim-llava", city, style="long")
    with pytest.raises(ValueError, match="writes 'long'"):
        caption_dataset(city, sim, tmp_path / "s.jsonl", style="short", progress=False)


def test_caption_dataset_with_the_openai_client_resumes_after_a_failed_request(city, tmp_path):
    small = city.subset(region_ids=city.region_ids[:7])
    out = tmp_path / "caps.jsonl"
    # batches of 3, one request at a time: request #4 (second batch) is refused
    with _Server(lambda n, body: (400, b"no", 0) if n == 4 else (200, ok_reply(f"caption {n}"), 0)) as srv:
        cap = OpenAICompatibleCaptioner(srv.url, "m", max_concurrency=1, batch_size=3, backoff_s=0.01)
        with pytest.raises(CaptionError, match="HTTP 400"):
            caption_dataset(small, cap, out, progress=False)
    assert len(srv.requests) == 6  # the third batch never started
    assert [r["text"] for r in read_records(out)] == ["caption 0", "caption 1", "caption 2", "caption 3", "caption 5"]
    with _Server(lambda n, body: (200, ok_reply(f"again {n}"), 0)) as srv:
        caption_dataset(small, OpenAICompatibleCaptioner(srv.url, "m", batch_size=3), out, progress=False)
    assert len(srv.requests) == 2  # only the refused image and the one never tried
    recs = read_records(out)
    sat = small.images[small.images["kind"] == "satellite"]["path"].tolist()
    assert sorted(r["image"] for r in recs) == sorted(sat) and len(recs) == 7
    assert {r["source"] for r in recs} == {"m"}
