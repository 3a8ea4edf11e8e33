"""Text shared by data, models and metrics: prompts, tokenizers, phoneme labels and scoring units."""
