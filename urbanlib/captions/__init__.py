"""The caption pipeline of both papers: captioners, refinement, scene-graph parsing and CAPTURE consensus.

Imports are lazy: ``urbanlib.captions.capture`` pulls in sentence-transformers only when used.
"""

import importlib

# part B: parsing, CAPTURE consensus, divide-and-conquer refinement, SynthCity stand-ins, WordNet install
_LAZY = {
    "FactualParser": "parser", "RuleParser": "parser", "SceneGraph": "parser", "parse_factual_output": "parser",
    "Capture": "capture", "capture_score": "capture", "consensus_select": "capture",
    "PhraseEncoder": "capture", "load_minilm": "capture",
    "DivideAndConquer": "divide_conquer", "maximal_rectangle": "divide_conquer", "select_crops": "divide_conquer",
    "SamSegmenter": "divide_conquer", "Owlv2PhraseScorer": "divide_conquer", "filter_phrases": "divide_conquer",
    "SceneSegmenter": "standins", "ScenePhraseScorer": "standins", "refine_synthcity_caption": "standins",
    "refine_city": "standins",
    "ensure_nltk_data_env": "wordnet_setup",
    # part A: captioner backends, prompts, resumable batch captioning, UrbanCLIP rule-based refinement
    "Captioner": "backends", "CaptionError": "backends", "TransformersCaptioner": "backends",
    "OpenAICompatibleCaptioner": "backends", "SimulatedCaptioner": "backends",
    "caption_dataset": "batch", "load_captions": "batch", "read_records": "batch",
    "urbanclip_prompt": "prompts", "urbanln_prompt": "prompts", "local_prompt": "prompts", "fuse_prompt": "prompts",
    "RefineRules": "refine_rules", "refine": "refine_rules", "refine_captions": "refine_rules",
    "evaluate_refinement": "refine_rules", "plot_refinement": "refine_rules",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
