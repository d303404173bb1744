"""The instructions the captioners receive: the papers' prompts as defaults.

Where a paper prints its prompt, the text here is that prompt, verbatim, with the section it comes
from. Where a paper only describes its prompt, the text here is urbanlib's own wording, and the
docstring says so.
"""

from __future__ import annotations

from .. import cache

URBANLN_LONG = (
    "You are an expert in urban analysis. Please describe the provided satellite image in a single, "
    "coherent paragraph, focusing on the city's functional layout, road network design, human activity, "
    "and natural elements."
)
"""UrbanLN's long-caption prompt, verbatim from UrbanLN (AAAI 2026) Appendix A.4, Figure 7."""

URBANLN_LONG_STREET = URBANLN_LONG.replace("satellite image", "street-view image")
"""UrbanLN's prompt for street views. Not printed in the paper: the satellite prompt of Figure 7
with "satellite image" replaced by "street-view image" (urbanlib's choice; Figure 8 shows a
street-view caption but not its prompt)."""

URBANCLIP_DETAILED = (
    "Describe this satellite image of an urban region in detail. Focus on the urban infrastructure: the "
    "buildings (their type, density and height), the road network and transport facilities, green space "
    "and water, and signs of human activity such as traffic, parking and construction. Describe only what "
    "is visible in the image, in short factual sentences."
)
"""UrbanCLIP's generation instruction, in urbanlib's wording.

UrbanCLIP (WWW 2024) §3.1 says only that LLaMA-Adapter V2 received "an elaborately designed
instruction" and that "a more detailed prompt, especially including a specific focus such as urban
infrastructure" gave better summaries; Figure 3(a) is an image whose prompt text is not in the paper
text. This prompt follows that description (detailed, infrastructure-focused) and is not a quote.
"""

LOCAL_SHORT = (
    "Describe the main visual element in this image crop in one short sentence: what it is, its colour "
    "and its size. Do not guess what lies outside the crop."
)
"""Prompt for the local short captions of divide-and-conquer refinement, in urbanlib's wording.

UrbanLN (AAAI 2026, "Divide-and-Conquer Refinement") asks the same MLLM for "concise local short
captions" of each salient crop but does not print the prompt.
"""

FUSE_TEMPLATE = (
    "You are an expert in urban analysis. Below is a description of the provided satellite image, "
    "followed by short notes on details seen in close-up crops of the same image.\n\n"
    "Description:\n{long_caption}\n\n"
    "Close-up details:\n{local_details}\n\n"
    "Rewrite the description as a single, coherent paragraph that keeps its structure, adds the "
    "close-up details that are consistent with the image, and drops statements the image does not "
    "support."
)
"""Fusion prompt of divide-and-conquer refinement, in urbanlib's wording.

UrbanLN reuses "the same MLLM that reasonably absorbs detailed information from local short captions
based on image content and original long caption structures"; the paper does not print the prompt.
"""


def urbanclip_prompt() -> str:
    """UrbanCLIP's detailed, infrastructure-focused instruction (urbanlib's wording, see above)."""
    return URBANCLIP_DETAILED


def urbanln_prompt(kind: str = "satellite") -> str:
    """UrbanLN's "expert in urban analysis" prompt for a ``"satellite"`` or ``"street"`` image."""
    if kind == "satellite":
        return URBANLN_LONG
    if kind == "street":
        return URBANLN_LONG_STREET
    raise ValueError(f"image kind must be 'satellite' or 'street', got {kind!r}")


def default_prompt(style: str, kind: str = "satellite") -> str:
    """The paper prompt for a caption style: ``"short"`` (UrbanCLIP) or ``"long"`` (UrbanLN)."""
    if style == "short":
        if kind != "satellite":
            raise ValueError("UrbanCLIP captions satellite images only; use style='long' for street views")
        return urbanclip_prompt()
    if style == "long":
        return urbanln_prompt(kind)
    raise ValueError(f"caption style must be 'short' or 'long', got {style!r}")


def local_prompt() -> str:
    """Prompt for one local crop's short caption (divide-and-conquer step 3)."""
    return LOCAL_SHORT


def fuse_prompt(long_caption: str, local_details: list[str]) -> str:
    """Prompt asking the captioner to merge a long caption with the kept local details.

    Args:
        long_caption: the captioner's original long caption of the whole image.
        local_details: kept local phrases or short captions, one per line in the prompt.

    Returns:
        The filled-in :data:`FUSE_TEMPLATE`.
    """
    if not long_caption.strip():
        raise ValueError("fuse_prompt needs a non-empty long caption")
    details = "\n".join(f"- {d.strip()}" for d in local_details if d.strip()) or "- (none)"
    return FUSE_TEMPLATE.format(long_caption=long_caption.strip(), local_details=details)


def prompt_hash(prompt: str) -> str:
    """Short content hash of a prompt, stored with every caption so a changed prompt is visible."""
    return cache.stable_hash(prompt, n=12)
