"""Decoding over a `tokens_to_logits` callback, model-agnostic (T5X's decoding layout).

    sampling     greedy decoding, temperature / top-k / top-p sampling, `generate`
    beam_search  beam search with T5X's brevity penalty, inside lax.while_loop (the
                 function is beam_search.beam_search: the module keeps its name here)
    constraints  the DecodingConstraint hook and the sequence-labelling constraint
"""
from medmt5.decoding.constraints import DecodingConstraint, seqlabel_constraint
from medmt5.decoding.sampling import generate, greedy_decode, temperature_sample

__all__ = ["DecodingConstraint", "seqlabel_constraint", "generate",
           "greedy_decode", "temperature_sample"]
