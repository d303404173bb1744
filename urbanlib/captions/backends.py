"""Captioners: one interface, three backends (transformers VLMs, OpenAI-compatible servers, SynthCity).

Every backend turns a list of images and one prompt into one caption per image, in order, and
never returns an empty caption silently: it raises :class:`CaptionError` naming the image instead.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import email.utils
import http.client
import inspect
import io
import json
import math
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image

from ..data.synthcity.build import read_scenes
from ..data.synthcity.captions import caption_scene
from ..data.synthcity.config import CaptionerProfile, GeneratorParams


class CaptionError(RuntimeError):
    """A caption could not be produced; the message names the image and the cause.

    Attributes:
        partial: for a batch, the captions that did succeed (``None`` where one failed), so a
            caller can keep finished work; ``None`` when nothing is known.
    """

    def __init__(self, message: str, partial: list[str | None] | None = None):
        super().__init__(message)
        self.partial = partial


def image_id(image, index: int) -> str:
    """A name for an image in error messages: its file name if it has one, else its batch index."""
    if isinstance(image, str | Path):
        return str(image)
    name = getattr(image, "filename", "") or (image.info.get("id") if hasattr(image, "info") else "")
    return str(name) if name else f"image #{index}"


def _nonempty(texts: list[str], images: list, who: str) -> list[str]:
    for i, (t, im) in enumerate(zip(texts, images, strict=True)):
        if not isinstance(t, str) or not t.strip():
            raise CaptionError(f"{who}: empty caption for {image_id(im, i)}")
    return texts


class Captioner(ABC):
    """Anything that captions images.

    Attributes:
        name: recorded as the caption's ``source`` (e.g. ``"qwen2.5-vl-7b"``, ``"sim-llava"``).
        batch_size: how many images :func:`urbanlib.captions.batch.caption_dataset` hands over per call.
    """

    name: str = "captioner"
    batch_size: int = 8

    @abstractmethod
    def caption(self, images: list[Image.Image], prompt: str) -> list[str]:
        """One caption per image, in order.

        Args:
            images: PIL images (RGB or convertible to RGB).
            prompt: the instruction, e.g. :func:`urbanlib.captions.prompts.urbanln_prompt`.

        Returns:
            Non-empty captions, ``len(images)`` of them.

        Raises:
            CaptionError: a caption could not be produced; the message names the image.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


# ---------------------------------------------------------------------------------------------------
# 1. transformers image-text-to-text models
# ---------------------------------------------------------------------------------------------------


class TransformersCaptioner(Captioner):
    """Any transformers image-text-to-text model (Qwen2.5-VL, LLaVA, InternVL-hf, ...) with greedy decoding.

    Checkpoints must be in transformers format (``AutoModelForImageTextToText`` knows the class),
    e.g. ``Qwen/Qwen2.5-VL-7B-Instruct``, ``llava-hf/llava-1.5-7b-hf``, ``OpenGVLab/InternVL3-8B-hf``;
    remote-code checkpoints with their own ``chat()`` API (original InternVL) and LLaMA-Adapter V2
    (no transformers port) are not covered; serve those behind an OpenAI-compatible endpoint instead.

    Pass a hub id or local folder (loaded with ``AutoProcessor`` + ``AutoModelForImageTextToText``;
    the hub is reached only when an id is given and the hub is online), or an already-built
    ``model`` and ``processor``.

    The prompt goes through the processor's chat template as one user turn holding the image and
    the text; give ``prompt_template`` (with ``{prompt}`` and the model's image placeholder) for
    processors without a chat template.

    Args:
        model_id_or_path: hub id or local folder; leave ``None`` when passing ``model``/``processor``.
        model: a built model whose ``generate`` accepts the processor's outputs.
        processor: the matching processor (tokenizer + image processor).
        name: caption source name (default: the id/folder name, or the model class).
        device: torch device for inference.
        dtype: torch dtype to load/cast the model to (``None`` keeps the checkpoint's).
        max_new_tokens: caption length cap in tokens.
        batch_size: images per ``generate`` call.
        generate_kwargs: extra ``generate`` arguments (e.g. ``{"num_beams": 3}``).
        prompt_template: fallback prompt format when the processor has no chat template.
        trust_remote_code: passed to ``from_pretrained`` (models whose code lives on the hub).
    """

    def __init__(self, model_id_or_path: str | Path | None = None, *, model=None, processor=None,
                 name: str | None = None, device: str = "cpu", dtype=None, max_new_tokens: int = 256,
                 batch_size: int = 4, generate_kwargs: dict | None = None, prompt_template: str | None = None,
                 trust_remote_code: bool = False):
        if (model_id_or_path is None) == (model is None):
            raise ValueError("give either model_id_or_path or an already-built model (with its processor)")
        if model is not None and processor is None:
            raise ValueError("an already-built model needs its processor")
        if model_id_or_path is not None:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            src = str(model_id_or_path)
            try:
                processor = AutoProcessor.from_pretrained(src, trust_remote_code=trust_remote_code)
                model = AutoModelForImageTextToText.from_pretrained(src, torch_dtype=dtype,
                                                                    trust_remote_code=trust_remote_code)
            except (OSError, ValueError) as e:  # missing files, bad repo id (HFValidationError)
                raise OSError(f"cannot load image-text-to-text model {src!r}: {e}. A hub id needs the hub "
                              "(HF_HUB_OFFLINE unset and a network); a local folder needs the model and "
                              "processor files saved with save_pretrained.") from e
            name = name or Path(src.rstrip("/")).name
        elif dtype is not None:
            model = model.to(dtype)
        self.model = model.to(device).eval()
        self.processor = processor
        self.name = name or type(model).__name__
        self.device = device
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size = int(batch_size)
        self.generate_kwargs = dict(generate_kwargs or {})
        self.prompt_template = prompt_template
        tok = getattr(processor, "tokenizer", None)
        if tok is not None:
            tok.padding_side = "left"  # decoder-only generation continues from the right end
        self._accepted = set(inspect.signature(self.model.forward).parameters)

    def _prompt_text(self, prompt: str) -> str:
        if self.prompt_template is not None:
            return self.prompt_template.format(prompt=prompt)
        if getattr(self.processor, "chat_template", None) is None:
            raise ValueError(f"{self.name}: the processor has no chat template; pass prompt_template= "
                             "with {prompt} and the model's image placeholder")
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def caption(self, images: list[Image.Image], prompt: str) -> list[str]:
        """Greedy captions, ``batch_size`` images per ``generate`` call (see :meth:`Captioner.caption`)."""
        import torch

        text = self._prompt_text(prompt)
        out: list[str] = []
        dtype = next(self.model.parameters()).dtype
        for start in range(0, len(images), self.batch_size):
            chunk = [im.convert("RGB") for im in images[start:start + self.batch_size]]
            inputs = self.processor(images=chunk, text=[text] * len(chunk), return_tensors="pt", padding=True)
            # processors may add inputs this model's forward does not take (e.g. token_type_ids)
            inputs = {k: v for k, v in inputs.items() if k in self._accepted}
            inputs = {k: (v.to(self.device, dtype) if torch.is_floating_point(v) else v.to(self.device))
                      for k, v in inputs.items()}
            kwargs = {"max_new_tokens": self.max_new_tokens, "do_sample": False, **self.generate_kwargs}
            with torch.inference_mode():
                ids = self.model.generate(**inputs, **kwargs)
            new = ids[:, inputs["input_ids"].shape[1]:]  # (B, new_tokens): drop the echoed prompt
            texts = [t.strip() for t in self.processor.batch_decode(new, skip_special_tokens=True)]
            out += _nonempty(texts, images[start:start + self.batch_size], self.name)
        return out


# ---------------------------------------------------------------------------------------------------
# 2. OpenAI-compatible chat endpoints (vLLM, Ollama, llama.cpp server, ...)
# ---------------------------------------------------------------------------------------------------


class _Malformed(Exception):
    """A 2xx reply that is not a usable chat completion."""


# URLError, timeouts and connection resets are OSErrors; a reply cut short is an HTTPException
_RETRY_EXCEPTIONS = (OSError, http.client.HTTPException)


def parse_retry_after(value, cap: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date, clamped to ``[0, cap]``.

    Anything else (``-1``, ``nan``, ``inf``, text, a date that does not parse) gives None: the
    caller falls back to its own backoff.
    """
    if value is None:
        return None
    text = str(value).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    else:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), cap)


class OpenAICompatibleCaptioner(Captioner):
    """Captions from any OpenAI-compatible ``/chat/completions`` endpoint, one request per image.

    Images travel as base64 PNG data URLs in the OpenAI vision message format. Requests run on a
    thread pool of ``max_concurrency`` workers. Timeouts, connection errors, HTTP 429 and 5xx are
    retried with exponential backoff (``backoff_s · 2**attempt``, or the server's ``Retry-After`` in
    seconds or as an HTTP date, clamped to ``[0, max_backoff_s]``; an unparsable one is ignored);
    other 4xx errors are not retried. One attempt never takes longer than ``deadline_s`` overall
    (``timeout_s`` bounds each socket read, so a server that drips its reply byte by byte is cut
    off at the deadline and retried like a timeout). Every failure is a :class:`CaptionError`. A malformed reply (not JSON, no ``choices[0].message.content``,
    empty text) is retried ``malformed_retries`` times, then raises :class:`CaptionError`.

    Args:
        base_url: e.g. ``"http://localhost:8000/v1"``; ``/chat/completions`` is appended.
        model: model name the server expects.
        api_key: sent as ``Authorization: Bearer``; ``None`` sends no header.
        max_concurrency: most requests in flight at once.
        batch_size: images per :meth:`caption` call from the batch writer.
        timeout_s: socket timeout of each read (seconds).
        deadline_s: longest one attempt may take, connect to last byte (default ``timeout_s``).
        max_retries: retries after the first attempt, for retryable failures.
        backoff_s: first backoff (seconds); doubles each retry, capped at ``max_backoff_s``.
        max_backoff_s: backoff cap (seconds).
        malformed_retries: retries of a malformed 2xx reply.
        max_tokens: caption length cap sent to the server.
        temperature: sampling temperature sent to the server (0: greedy).
        name: caption source name (default: ``model``).
        extra_body: extra JSON fields merged into each request body.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, max_concurrency: int = 4,
                 batch_size: int = 8, timeout_s: float = 60, max_retries: int = 5, backoff_s: float = 1.0,
                 max_backoff_s: float = 30.0, malformed_retries: int = 1, max_tokens: int = 512,
                 temperature: float = 0.0, name: str | None = None, extra_body: dict | None = None,
                 deadline_s: float | None = None):
        if max_concurrency < 1 or batch_size < 1 or max_retries < 0:
            raise ValueError("max_concurrency and batch_size must be >= 1, max_retries >= 0")
        if not (timeout_s > 0 and (deadline_s is None or deadline_s > 0)):
            raise ValueError("timeout_s and deadline_s must be > 0")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.max_concurrency = int(max_concurrency)
        self.batch_size = int(batch_size)
        self.timeout_s = float(timeout_s)
        self.deadline_s = float(deadline_s if deadline_s is not None else timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.malformed_retries = int(malformed_retries)
        self.max_tokens = int(max_tokens)
        self.temperature = float(temperature)
        self.extra_body = dict(extra_body or {})
        self.name = name or model
        host = urllib.parse.urlparse(self.url).hostname or ""
        # a loopback server is never reached through an HTTP proxy from the environment
        handlers = [urllib.request.ProxyHandler({})] if host in ("127.0.0.1", "localhost", "::1") else []
        self._opener = urllib.request.build_opener(*handlers)
        self._pool = threading.Semaphore(self.max_concurrency)

    @staticmethod
    def data_url(image: Image.Image) -> str:
        """The image as a ``data:image/png;base64,...`` URL."""
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")

    def _body(self, image: Image.Image, prompt: str) -> bytes:
        message = {"role": "user", "content": [{"type": "text", "text": prompt},
                                               {"type": "image_url", "image_url": {"url": self.data_url(image)}}]}
        body = {"model": self.model, "messages": [message], "max_tokens": self.max_tokens,
                "temperature": self.temperature, **self.extra_body}
        return json.dumps(body).encode()

    @staticmethod
    def _parse(raw: bytes) -> str:
        try:
            reply = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _Malformed(f"reply is not JSON: {raw[:120]!r}") from None
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise _Malformed(f"reply has no choices[0].message.content: {str(reply)[:200]}") from None
        if isinstance(content, list):  # some servers return content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str) or not content.strip():
            raise _Malformed("reply has an empty caption")
        return content.strip()

    def _backoff(self, attempt: int, retry_after: str | None = None) -> float:
        wait = parse_retry_after(retry_after, self.max_backoff_s)
        return wait if wait is not None else min(self.backoff_s * 2 ** attempt, self.max_backoff_s)

    def _read(self, req, deadline: float) -> bytes:
        """POST and read the whole reply before ``deadline`` (``time.monotonic``); TimeoutError past it."""
        with self._opener.open(req, timeout=min(self.timeout_s, max(0.001, deadline - time.monotonic()))) as resp:
            parts = []
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reply not complete within the {self.deadline_s:g} s deadline")
                chunk = resp.read1(65536)
                if not chunk:
                    return b"".join(parts)
                parts.append(chunk)

    def request(self, image: Image.Image, prompt: str, ident: str = "image") -> str:
        """One caption from one request, with the retry policy above.

        Raises:
            CaptionError: naming ``ident`` and the URL, when the request fails for good.
        """
        body = self._body(image, prompt)
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        malformed, last, attempt = 0, "", 0
        while True:
            retry_after = None
            try:
                req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with self._pool:
                    raw = self._read(req, time.monotonic() + self.deadline_s)
                return self._parse(raw)
            except urllib.error.HTTPError as e:
                try:
                    detail = e.read()[:200].decode("utf-8", "replace")
                except (OSError, http.client.HTTPException):
                    detail = "(no body)"
                if e.code != 429 and e.code < 500:
                    raise CaptionError(f"{ident}: HTTP {e.code} from {self.url} (not retried): {detail}") from None
                last, retry_after = f"HTTP {e.code}: {detail}", e.headers.get("Retry-After")
            except _Malformed as e:
                malformed += 1
                if malformed > self.malformed_retries:
                    raise CaptionError(f"{ident}: malformed reply from {self.url} "
                                       f"({malformed} tries): {e}") from None
                last = f"malformed reply: {e}"
            except _RETRY_EXCEPTIONS as e:
                reason = getattr(e, "reason", e)
                kind = "timeout" if isinstance(reason, TimeoutError | socket.timeout) else "connection error"
                last = f"{kind} after {self.timeout_s:g} s: {reason}" if kind == "timeout" else f"{kind}: {reason}"
            except Exception as e:  # noqa: BLE001  (anything else, e.g. an image PIL cannot encode: not retried)
                raise CaptionError(f"{ident}: request to {self.url} failed: {type(e).__name__}: {e}") from None
            if attempt >= self.max_retries:
                raise CaptionError(f"{ident}: gave up after {attempt + 1} attempts to {self.url}; last error: {last}")
            time.sleep(self._backoff(attempt, retry_after))
            attempt += 1

    def caption(self, images: list[Image.Image], prompt: str) -> list[str]:
        """Captions via concurrent requests (see :meth:`Captioner.caption`).

        Raises:
            CaptionError: listing every failed image; ``partial`` holds the captions that succeeded.
        """
        ids = [image_id(im, i) for i, im in enumerate(images)]
        results: list[str | None] = [None] * len(images)
        errors: list[str] = []
        with cf.ThreadPoolExecutor(max_workers=self.max_concurrency) as ex:
            futures = {ex.submit(self.request, im, prompt, ids[i]): i for i, im in enumerate(images)}
            for fut in cf.as_completed(futures):
                i = futures[fut]
                try:
                    results[i] = fut.result()
                except CaptionError as e:
                    errors.append(str(e))
                except Exception as e:  # noqa: BLE001  (every failure is a CaptionError)
                    errors.append(f"{ids[i]}: {type(e).__name__}: {e}")
        if errors:
            raise CaptionError(f"{self.name}: {len(errors)} of {len(images)} captions failed: " + " | ".join(errors),
                               partial=results)
        return results  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------
# 3. SynthCity simulated captioners
# ---------------------------------------------------------------------------------------------------


def _generator_params(d: dict):
    """A :class:`~urbanlib.data.synthcity.config.GeneratorParams` from its ``to_dict()`` form (meta.json)."""
    known = {f.name for f in fields(GeneratorParams)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"meta.json params have fields this urbanlib does not know: {unknown}")
    kw = dict(d)
    kw["captioners"] = tuple(CaptionerProfile(**c) for c in d.get("captioners", []))
    for k in ("short_sentences", "long_words"):
        if k in kw:
            kw[k] = tuple(kw[k])
    return GeneratorParams(**kw)


class SimulatedCaptioner(Captioner):
    """A SynthCity simulated MLLM: captions an image from its scene record, never from its pixels.

    It calls the generator's own :func:`~urbanlib.data.synthcity.captions.caption_scene` with the
    city's seed and parameters (from its ``meta.json``), so it reproduces the captions shipped in
    the city's ``captions.jsonl`` exactly. Images are matched to scenes by file path, so pass images
    opened from the city folder (PIL keeps ``.filename``) or the paths themselves. The prompt is
    ignored: the profile and ``style`` fix what the simulated captioner writes.

    Args:
        profile_name: a captioner profile of the city's parameters (``sim-llava``, ``sim-qwen``,
            ``sim-internvl``, ``sim-llama-adapter``).
        city_dir: the built city folder (``synthcity.build`` / ``UrbanDataset.root``).
        style: ``"short"`` (UrbanCLIP) or ``"long"`` (UrbanLN).
        params: override the city's generator parameters (e.g. another ``rho`` for a sweep).
        seed: override the city's seed.
    """

    batch_size = 64

    def __init__(self, profile_name: str, city_dir: str | Path, style: str = "long", params=None,
                 seed: int | None = None):

        if style not in ("short", "long"):
            raise ValueError(f"caption style must be 'short' or 'long', got {style!r}")
        self.city_dir = Path(city_dir).resolve()
        meta_path = self.city_dir / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path}: not found; is {city_dir} a built SynthCity city?")
        meta = json.loads(meta_path.read_text())
        if meta.get("generator") != "synthcity":
            raise ValueError(f"{meta_path}: not a SynthCity city (generator={meta.get('generator')!r})")
        self.params = params if params is not None else _generator_params(meta["params"])
        self.seed = int(meta["seed"] if seed is None else seed)
        profiles = {p.name: p for p in self.params.captioners}
        if profile_name not in profiles:
            raise KeyError(f"unknown simulated captioner {profile_name!r}; this city has {sorted(profiles)}")
        self.profile = profiles[profile_name]
        self.name = profile_name
        self.style = style
        self._scenes = {s["image"]: s for s in read_scenes(self.city_dir)}
        self._cache: dict[str, dict] = {}

    @classmethod
    def from_dataset(cls, profile_name: str, ds, style: str = "long", params=None) -> SimulatedCaptioner:
        """The simulated captioner for a loaded SynthCity :class:`~urbanlib.data.UrbanDataset`."""
        return cls(profile_name, ds.root, style=style, params=params)

    def _scene(self, image, index: int) -> dict:
        path = image if isinstance(image, str | Path) else getattr(image, "filename", "")
        if not path:
            raise CaptionError(f"{self.name}: {image_id(image, index)} has no file name; the simulated "
                               "captioner needs images opened from the city folder, or their paths")
        p = Path(path)
        if not p.is_absolute() and p.as_posix() in self._scenes:  # already relative to the city folder
            return self._scenes[p.as_posix()]
        try:
            rel = p.resolve().relative_to(self.city_dir).as_posix()
        except ValueError:
            rel = None
        if rel not in self._scenes:
            raise CaptionError(f"{self.name}: {path} is not an image of {self.city_dir}")
        return self._scenes[rel]

    def describe(self, image, index: int = 0) -> dict:
        """The full simulated caption: ``{"text", "statements" (with truth labels), "omissions"}``."""
        sc = self._scene(image, index)
        cache = self._cache.setdefault(sc["image"], {})  # scene hash and facts, shared across calls
        return caption_scene(sc["objects"], sc["kind"], sc["size"], self.profile, self.style, self.params,
                             self.seed, cache)

    def caption(self, images: list, prompt: str = "") -> list[str]:
        """Simulated captions of city images (PIL images from the city folder, or paths); prompt ignored."""
        texts = [self.describe(im, i)["text"] for i, im in enumerate(images)]
        return _nonempty(texts, images, self.name)
