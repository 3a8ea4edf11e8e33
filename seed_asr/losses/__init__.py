"""Training objectives as pure tensor functions: cross-entropy (SSL masked prediction, next
token), CTC and MWER."""
