"""seed-asr: staged training of LLM-based speech recognition."""
