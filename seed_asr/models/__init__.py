"""Model code: Conformer encoder, converter, LLM builders and the SpeechLLM that composes them."""
