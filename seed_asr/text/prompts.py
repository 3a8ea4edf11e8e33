"""The prompt of the AcLLM: [bos][context][instruction] <audio tokens> [marker][transcript]<eos>.

One builder makes the token ids for training and for decoding: decoding calls the same `build` with
no transcript, so the prefix the LLM sees is the same token for token (no train/test prompt
mismatch, a known cause of hallucinations in LLM-based ASR).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

PROMPT_MARKERS = ("<|history|>", "<|keywords|>", "<|title|>", "<|speech|>", "<|transcript|>")
AUDIO_FIELD = "{audio}"
CHAT_TEMPLATE_CHOICES = ("auto", "always", "never")
_FIELDS = ("context", "instruction", "audio")


def chat_prompt_template(tokenizer: PreTrainedTokenizerBase) -> str:
    """A prompt template made from the tokenizer's chat template: one user turn holding
    ``{context}{instruction}{audio}``, then the opening of the assistant's turn (the transcript).

    Braces the chat template itself writes are escaped, so only the three fields are formatted.

    Raises:
        ValueError: the tokenizer has no chat template, or it drops one of the fields.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"tokenizer {type(tokenizer).__name__} ({tokenizer.name_or_path!r}) has no "
                         "chat template")
    marks = {name: f"\x00{name}\x00" for name in _FIELDS}
    user = "".join(marks.values())
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                             add_generation_prompt=True)
    if not all(rendered.count(mark) == 1 for mark in marks.values()):
        raise ValueError(f"the chat template of {tokenizer.name_or_path!r} does not keep the user's text as "
                         "it is: set the model's prompt.template instead (prompt.chat_template=never)")
    rendered = rendered.replace("{", "{{").replace("}", "}}")
    for name, mark in marks.items():
        rendered = rendered.replace(mark, "{" + name + "}")
    return rendered


@dataclass(frozen=True)
class PromptIds:
    """Token ids of one sample's prompt around its audio tokens.

    Attributes:
        before_audio: ids up to the audio tokens (bos, context, instruction, ...).
        after_audio: ids between the audio tokens and the transcript (the answer marker).
        target: transcript ids followed by eos; None when building a decoding prefix.
    """

    before_audio: list[int]
    after_audio: list[int]
    target: list[int] | None


class PromptBuilder:
    """Builds prompts from a template with `{context}`, `{instruction}` and one `{audio}` field.

    Only `history`, `title` and `keywords` of a context are shown to the model (`entities` are the
    answers). A title is a video title, meeting description, ... (a string).

    Args:
        tokenizer: the LLM's tokenizer.
        instruction: task text, e.g. "Transcribe the speech.".
        template: the prompt up to the transcript; `{audio}` marks where audio tokens go.
        chat_template: "auto" builds the template from the tokenizer's chat template when it has one
            (`chat_prompt_template`: a pretrained chat LLM hears the prompt in its own format) and
            uses `template` otherwise; "always" requires a chat template; "never" uses `template`.
        history_template: how dialogue history is shown (`{history}` field); empty history -> nothing.
        keywords_template: how hot words are shown (`{keywords}` field); no keywords -> nothing.
        title_template: how a title / description is shown (`{title}` field); no title -> nothing.
        keyword_separator: between keywords.
        history_separator: between dialogue turns when history is a list.
        max_context_tokens: token budget of the context; keywords are kept first (in their order),
            then the title (whole, or dropped when it does not fit), history fills the rest keeping its
            most recent part.
        add_bos: start with the tokenizer's bos token when it has one.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        instruction: str = "Transcribe the speech.",
        template: str = "{context}{instruction}<|speech|>{audio}<|transcript|>",
        chat_template: str = "auto",
        history_template: str = "<|history|>{history}",
        keywords_template: str = "<|keywords|>{keywords}",
        title_template: str = "<|title|>{title}",
        keyword_separator: str = ", ",
        history_separator: str = "\n",
        max_context_tokens: int = 128,
        add_bos: bool = True,
    ) -> None:
        if chat_template not in CHAT_TEMPLATE_CHOICES:
            raise ValueError(f"prompt chat_template must be one of {list(CHAT_TEMPLATE_CHOICES)}, "
                             f"got {chat_template!r}")
        has_chat = bool(getattr(tokenizer, "chat_template", None))
        if chat_template == "always" or (chat_template == "auto" and has_chat):
            template = chat_prompt_template(tokenizer)
        if template.count(AUDIO_FIELD) != 1:
            raise ValueError(f"prompt template must contain {AUDIO_FIELD} exactly once: {template!r}")
        if tokenizer.eos_token_id is None:
            raise ValueError("the prompt tokenizer needs an eos token to end transcripts")
        self.tokenizer = tokenizer
        self.instruction = instruction
        self.before_template, self.after_template = template.split(AUDIO_FIELD)
        self.history_template = history_template
        self.keywords_template = keywords_template
        self.title_template = title_template
        self.keyword_separator = keyword_separator
        self.history_separator = history_separator
        self.max_context_tokens = max_context_tokens
        # A chat template that writes the bos token itself gets no second one.
        writes_bos = bool(tokenizer.bos_token) and template.startswith(tokenizer.bos_token)
        self.bos = [tokenizer.bos_token_id] if add_bos and tokenizer.bos_token_id is not None \
            and not writes_bos else []
        self.eos_id: int = tokenizer.eos_token_id

    def encode(self, text: str) -> list[int]:
        """Token ids of text, without special tokens added."""
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def _n_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def shown_keywords(self, context: Mapping | None) -> list[str]:
        """The context's leading hot words whose rendering fits in ``max_context_tokens``, in order."""
        kept: list[str] = []
        for word in (context or {}).get("keywords") or []:
            text = self.keywords_template.format(keywords=self.keyword_separator.join([*kept, word]))
            if self._n_tokens(text) > self.max_context_tokens:
                break
            kept.append(word)
        return kept

    def _history_text(self, turns: Sequence[str], budget: int) -> str:
        """Rendered history within budget tokens: oldest turns dropped first, then the oldest words."""
        render = lambda body: self.history_template.format(history=body)
        fits = lambda body: self._n_tokens(render(body)) <= budget
        turns = [t for t in turns if t]
        while turns and not fits(self.history_separator.join(turns)):
            if len(turns) > 1:
                turns = turns[1:]
            else:
                turns = [_longest_fitting_tail(turns[0], fits)]
                break
        body = self.history_separator.join(t for t in turns if t)
        return render(body) if body else ""

    def context_text(self, context: Mapping | None) -> str:
        """The context part of the prompt ("" for no context or an empty one): title, history, keywords."""
        if not context:
            return ""
        history = context.get("history") or []
        history = [history] if isinstance(history, str) else list(history)
        kept = self.shown_keywords(context)
        keywords = self.keywords_template.format(keywords=self.keyword_separator.join(kept)) if kept else ""
        budget = self.max_context_tokens - self._n_tokens(keywords)
        title = self.title_template.format(title=context["title"]) if context.get("title") else ""
        title = title if self._n_tokens(title) <= budget else ""
        budget -= self._n_tokens(title)
        return title + self._history_text(history, budget) + keywords

    def build(self, context: Mapping | None, transcript: str | None, instruction: str | None = None
              ) -> PromptIds:
        """Prompt ids of one sample; transcript None gives the decoding prefix (same ids). ``instruction``
        replaces the builder's task text for this sample (e.g. a text-only drill's)."""
        fields = {"context": self.context_text(context), "instruction": instruction or self.instruction}
        return PromptIds(
            before_audio=self.bos + self.encode(self.before_template.format(**fields)),
            after_audio=self.encode(self.after_template.format(**fields)),
            target=None if transcript is None else self.target_ids(self.encode(transcript)),
        )

    def target_ids(self, transcript_ids: Sequence[int]) -> list[int]:
        """Transcript ids followed by eos (what the loss and scores cover)."""
        return [*transcript_ids, self.eos_id]

    def decode(self, ids: Sequence[int]) -> str:
        """Transcript text of generated ids, cut at the first eos."""
        ids = list(ids)
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()


def _longest_fitting_tail(text: str, fits: Callable[[str], bool]) -> str:
    """The longest suffix of text starting at a word (or, without spaces, a character) that fits.

    Binary search over cut points: the token count of a suffix shrinks as the cut moves right.
    """
    cuts = [0] + [i + 1 for i, ch in enumerate(text) if ch == " "] if " " in text else list(range(len(text)))
    lo, hi = 0, len(cuts)  # answer index in [lo, hi]; hi = nothing fits
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(text[cuts[mid] :]):
            hi = mid
        else:
            lo = mid + 1
    return text[cuts[lo] :] if lo < len(cuts) else ""
