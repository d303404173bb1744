"""UrbanLN's divide-and-conquer caption refinement.

1. SAM segments the image (automatic mask generation from a grid of point prompts, :class:`SamSegmenter`).
2. Each mask's largest axis-aligned rectangle (:func:`maximal_rectangle`) is a candidate crop; a greedy pass
   keeps large crops with low mutual overlap (:func:`select_crops`).
3. The same captioner writes a short local caption for every crop.
4. The scene-graph parser extracts visual-element phrases from the long and the local captions.
5. OWLv2 scores every phrase on the whole image (:class:`Owlv2PhraseScorer`); phrases whose best box scores
   below 0.01 are dropped (:func:`filter_phrases`).
6. The captioner fuses the long caption with the kept local details.

Every component is an object with a small interface, so SynthCity can plug in its declared stand-ins
(:mod:`urbanlib.captions.standins`): a segmenter is ``segmenter(image) -> list[(H, W) bool mask]``, a scorer is
``scorer(image, phrases) -> (P,) scores in [0, 1]``, a captioner has ``caption(images, prompt) -> list[str]``, a
parser has ``parse(texts) -> list[SceneGraph]``. Real SAM / OWLv2 weights are opt-in (``from_pretrained``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .prompts import fuse_prompt, local_prompt

PHRASE_THRESHOLD = 0.01  # UrbanLN: phrases whose OWLv2 score is below 0.01 are discarded

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), pixels, end-exclusive


# ---------------------------------------------------------------------------------------------
# 2. maximal rectangles and crop selection
# ---------------------------------------------------------------------------------------------

def maximal_rectangle(mask: np.ndarray) -> Box | None:
    """Largest axis-aligned rectangle of True pixels inside a mask (histogram-and-stack, O(H·W)).

    Row by row, ``heights[x]`` counts consecutive True pixels ending at that row; the largest rectangle under
    that histogram is found with a monotone stack. Ties keep the first rectangle found (top rows first, then
    left).

    Args:
        mask: ``(H, W)`` boolean (or 0/1) array.

    Returns:
        ``(x0, y0, x1, y1)`` with exclusive ends, or ``None`` for an empty mask.
    """
    m = np.asarray(mask).astype(bool)
    if m.ndim != 2:
        raise ValueError(f"maximal_rectangle expects a 2-D mask, got shape {m.shape}")
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if len(rows) == 0:
        return None
    y_off, x_off = int(rows[0]), int(cols[0])
    m = m[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]  # the rectangle lies inside the bounding box
    h, w = m.shape
    heights = [0] * (w + 1)  # sentinel 0 at the end flushes the stack
    best, best_area = None, 0
    for y in range(h):
        row = m[y].tolist()
        for x in range(w):
            heights[x] = heights[x] + 1 if row[x] else 0
        stack: list[int] = []  # column indices with increasing heights
        for x in range(w + 1):
            while stack and heights[stack[-1]] >= heights[x]:
                top = stack.pop()
                height = heights[top]
                left = stack[-1] + 1 if stack else 0
                area = height * (x - left)
                if area > best_area:
                    best_area, best = area, (left, y - height + 1, x, y + 1)
            stack.append(x)
    x0, y0, x1, y1 = best
    return (x0 + x_off, y0 + y_off, x1 + x_off, y1 + y_off)


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two end-exclusive boxes."""
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def select_crops(masks: Sequence[np.ndarray], min_side: int = 8, max_iou: float = 0.3,
                 max_crops: int = 8) -> list[Box]:
    """Low-overlap crops from segment masks.

    Each mask's maximal rectangle is a candidate; candidates are visited largest first and kept when their IoU
    with every kept crop is at most ``max_iou``.

    Args:
        masks: ``(H, W)`` boolean masks.
        min_side: drop rectangles narrower or shorter than this (pixels).
        max_iou: overlap cap between kept crops.
        max_crops: at most this many crops.

    Returns:
        Kept boxes ``(x0, y0, x1, y1)``, largest first.
    """
    rects = [r for r in (maximal_rectangle(m) for m in masks) if r is not None]
    rects = [r for r in rects if r[2] - r[0] >= min_side and r[3] - r[1] >= min_side]
    rects.sort(key=lambda r: (-(r[2] - r[0]) * (r[3] - r[1]), r[1], r[0]))
    kept: list[Box] = []
    for r in rects:
        if len(kept) >= max_crops:
            break
        if all(box_iou(r, k) <= max_iou for k in kept):
            kept.append(r)
    return kept


# ---------------------------------------------------------------------------------------------
# 1. SAM automatic mask generation (transformers SamModel)
# ---------------------------------------------------------------------------------------------

class SamSegmenter:
    """Automatic mask generation with transformers' ``SamModel``: one point prompt per grid point.

    For each point SAM proposes 3 masks; the one with the highest predicted IoU is kept if its predicted IoU
    and stability score (IoU of the mask thresholded at ``+offset`` and ``-offset`` logits) pass the
    thresholds, then duplicates are removed by mask IoU (non-maximum suppression).

    Args:
        model: a ``SamModel``.
        processor: its ``SamProcessor``.
        points_per_side: grid of ``points_per_side**2`` prompts.
        pred_iou_thresh: minimum predicted mask IoU (SAM's generator uses 0.88).
        stability_thresh: minimum stability score (SAM uses 0.95).
        stability_offset: logit offset of the stability score.
        nms_iou: masks overlapping a better one more than this are dropped.
        min_area: masks with fewer pixels are dropped.
        points_per_batch: prompts per forward pass.
        device: torch device.
    """

    def __init__(self, model, processor, points_per_side: int = 16, pred_iou_thresh: float = 0.88,
                 stability_thresh: float = 0.95, stability_offset: float = 1.0, nms_iou: float = 0.7,
                 min_area: int = 16, points_per_batch: int = 64, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.processor = processor
        self.points_per_side = points_per_side
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_thresh = stability_thresh
        self.stability_offset = stability_offset
        self.nms_iou = nms_iou
        self.min_area = min_area
        self.points_per_batch = points_per_batch
        self.device = device

    @classmethod
    def from_pretrained(cls, model_id_or_path: str = "facebook/sam-vit-base", device: str = "cpu",
                        local_files_only: bool = True, **kwargs) -> SamSegmenter:
        """Load real SAM weights (opt-in: needs the checkpoint locally or hub access)."""
        from transformers import SamModel, SamProcessor

        return cls(SamModel.from_pretrained(model_id_or_path, local_files_only=local_files_only),
                   SamProcessor.from_pretrained(model_id_or_path, local_files_only=local_files_only),
                   device=device, **kwargs)

    def grid(self, width: int, height: int) -> np.ndarray:
        """``(n*n, 2)`` point prompts (x, y) at the centres of an ``n x n`` grid, in pixels."""
        n = self.points_per_side
        xs = (np.arange(n) + 0.5) / n * width
        ys = (np.arange(n) + 0.5) / n * height
        return np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)  # (n*n, 2)

    def __call__(self, image: Image.Image | np.ndarray) -> list[np.ndarray]:
        """``(H, W)`` boolean masks of one image, best first."""
        import torch

        image = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
        image = image.convert("RGB")
        w, h = image.size
        points = self.grid(w, h)
        enc = self.processor(images=image, return_tensors="pt")
        with torch.no_grad():
            emb = self.model.get_image_embeddings(enc["pixel_values"].to(self.device))
        cand, quality = [], []
        for i in range(0, len(points), self.points_per_batch):
            pts = points[i:i + self.points_per_batch]
            inp = self.processor(images=image, input_points=[[[list(map(float, p))] for p in pts]],
                                 return_tensors="pt")  # input_points (1, P, 1, 2)
            with torch.no_grad():
                out = self.model(image_embeddings=emb, input_points=inp["input_points"].to(self.device),
                                 multimask_output=True)
            logits = self.processor.image_processor.post_process_masks(
                out.pred_masks.cpu(), inp["original_sizes"], inp["reshaped_input_sizes"], binarize=False)[0]
            # logits (P, 3, H, W); iou_scores (1, P, 3)
            iou = out.iou_scores[0].cpu()
            best = iou.argmax(dim=1)
            for p in range(len(pts)):
                lg = logits[p, best[p]]
                hi = (lg > self.stability_offset).sum().item()
                lo = (lg > -self.stability_offset).sum().item()
                stability = hi / lo if lo else 0.0
                mask = (lg > 0).numpy()
                if (iou[p, best[p]].item() >= self.pred_iou_thresh and stability >= self.stability_thresh
                        and mask.sum() >= self.min_area):
                    cand.append(mask)
                    quality.append(float(iou[p, best[p]]))
        return _mask_nms(cand, quality, self.nms_iou)


def _mask_nms(masks: list[np.ndarray], quality: list[float], max_iou: float) -> list[np.ndarray]:
    order = np.argsort(-np.asarray(quality), kind="stable")
    kept: list[np.ndarray] = []
    for i in order:
        m = masks[i]
        if all((m & k).sum() / max(1, (m | k).sum()) <= max_iou for k in kept):
            kept.append(m)
    return kept


# ---------------------------------------------------------------------------------------------
# 5. OWLv2 phrase scoring and the 0.01 filter
# ---------------------------------------------------------------------------------------------

class Owlv2PhraseScorer:
    """Scores text phrases on an image with OWLv2: a phrase's score is its best box's sigmoid class logit.

    Args:
        model: an ``Owlv2ForObjectDetection``.
        processor: its ``Owlv2Processor``.
        max_phrases: phrases per forward pass.
        device: torch device.
    """

    def __init__(self, model, processor, max_phrases: int = 16, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.processor = processor
        self.max_phrases = max_phrases
        self.device = device

    @classmethod
    def from_pretrained(cls, model_id_or_path: str = "google/owlv2-base-patch16-ensemble", device: str = "cpu",
                        local_files_only: bool = True, **kwargs) -> Owlv2PhraseScorer:
        """Load real OWLv2 weights (opt-in)."""
        from transformers import Owlv2ForObjectDetection, Owlv2Processor

        return cls(Owlv2ForObjectDetection.from_pretrained(model_id_or_path, local_files_only=local_files_only),
                   Owlv2Processor.from_pretrained(model_id_or_path, local_files_only=local_files_only),
                   device=device, **kwargs)

    def __call__(self, image: Image.Image | np.ndarray, phrases: Sequence[str]) -> np.ndarray:
        """``(P,)`` scores in [0, 1], one per phrase."""
        import torch

        if not phrases:
            return np.zeros(0)
        image = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
        image = image.convert("RGB")
        scores = []
        for i in range(0, len(phrases), self.max_phrases):
            chunk = list(phrases[i:i + self.max_phrases])
            enc = self.processor(text=[chunk], images=image, return_tensors="pt", padding=True, truncation=True)
            with torch.no_grad():
                out = self.model(input_ids=enc["input_ids"].to(self.device),
                                 attention_mask=enc["attention_mask"].to(self.device),
                                 pixel_values=enc["pixel_values"].to(self.device))
            # logits (1, num_boxes, num_phrases): best box per phrase
            scores.append(torch.sigmoid(out.logits[0]).max(dim=0).values.cpu().numpy())
        return np.concatenate(scores)


def filter_phrases(phrases: Sequence[str], scores: Sequence[float], threshold: float = PHRASE_THRESHOLD,
                   ) -> tuple[list[str], list[str]]:
    """Split phrases into (kept, dropped): dropped when the score is strictly below ``threshold``."""
    if len(phrases) != len(scores):
        raise ValueError(f"filter_phrases: {len(phrases)} phrases but {len(scores)} scores")
    kept = [p for p, s in zip(phrases, scores, strict=True) if s >= threshold]
    dropped = [p for p, s in zip(phrases, scores, strict=True) if s < threshold]
    return kept, dropped


# ---------------------------------------------------------------------------------------------
# the whole refinement
# ---------------------------------------------------------------------------------------------

@dataclass
class Refinement:
    """Everything one refinement produced (kept for inspection and the book's examples)."""

    original: str
    caption: str
    boxes: list[Box] = field(default_factory=list)
    local_captions: list[str] = field(default_factory=list)
    phrases: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    n_masks: int = 0
    parser: str = ""


def _default_prompts() -> tuple[str, Callable[[str, list[str]], str]]:
    return local_prompt(), fuse_prompt


class DivideAndConquer:
    """UrbanLN's divide-and-conquer refinement of one long caption (steps 1-6 of the module docstring).

    Args:
        captioner: writes local captions of crops and the fused caption (``caption(images, prompt)``).
        segmenter: ``segmenter(image) -> list of (H, W) bool masks`` (e.g. :class:`SamSegmenter`).
        parser: ``parse(texts) -> list[SceneGraph]`` (FACTUAL, or the labelled rule-based fallback).
        scorer: ``scorer(image, phrases) -> (P,) scores`` (e.g. :class:`Owlv2PhraseScorer`).
        threshold: phrase score floor (UrbanLN: 0.01).
        min_side: minimum crop side in pixels.
        max_iou: overlap cap between crops.
        max_crops: at most this many local captions per image.
        local_prompt: prompt for the crops (default :func:`urbanlib.captions.prompts.local_prompt`).
        fuse_prompt: ``fuse_prompt(long_caption, local_details) -> str`` (default from ``prompts``).
    """

    def __init__(self, captioner, segmenter, parser, scorer, threshold: float = PHRASE_THRESHOLD,
                 min_side: int = 8, max_iou: float = 0.3, max_crops: int = 8, local_prompt: str | None = None,
                 fuse_prompt: Callable[[str, list[str]], str] | None = None):
        default_local, default_fuse = _default_prompts()
        self.captioner, self.segmenter, self.parser, self.scorer = captioner, segmenter, parser, scorer
        self.threshold, self.min_side, self.max_iou, self.max_crops = threshold, min_side, max_iou, max_crops
        self.local_prompt = local_prompt or default_local
        self.fuse_prompt = fuse_prompt or default_fuse

    def local_details(self, local_captions: list[str], kept: set[str], graphs) -> list[str]:
        """Local captions that still carry a kept phrase.

        A local caption whose phrases were all dropped describes nothing the detector found, so it is not
        offered for fusion.
        """
        return [c for c, g in zip(local_captions, graphs, strict=True) if set(g.phrases()) & kept]

    def refine(self, image: Image.Image, long_caption: str) -> Refinement:
        """Refine one image's long caption."""
        image = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
        masks = self.segmenter(image)
        boxes = select_crops(masks, self.min_side, self.max_iou, self.max_crops)
        crops = [image.crop(b) for b in boxes]
        local = self.captioner.caption(crops, self.local_prompt) if crops else []
        graphs = self.parser.parse([long_caption] + list(local))
        phrases = list(dict.fromkeys(p for g in graphs for p in g.phrases()))
        scores = [float(s) for s in self.scorer(image, phrases)] if phrases else []
        kept, dropped = filter_phrases(phrases, scores, self.threshold)
        details = self.local_details(list(local), set(kept), graphs[1:]) + [
            p for p in kept if p not in set(graphs[0].phrases())]
        if dropped:  # the fuse prompt takes detail lines only, so the filter's verdict travels as one
            details.append(f"Not found in the image (do not mention): {', '.join(dropped)}")
        prompt = self.fuse_prompt(long_caption, details)
        fused = self.captioner.caption([image], prompt)[0]
        return Refinement(long_caption, fused, boxes, list(local), phrases, scores, kept, dropped, len(masks),
                          getattr(self.parser, "label", type(self.parser).__name__))
