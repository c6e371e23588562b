"""Soft prompts, ProMoT stages, in-context evaluation and prompt export."""
