import pytest
from models_helpers import tiny_tokenizer

from seed_asr.text.prompts import PromptBuilder

CONTEXT = {
    "history": "set a timer for ten minutes",
    "keywords": ["okonkwo", "anneliese", "berlin"],
    "entities": ["anneliese", "okonkwo"],
}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.mark.parametrize("context", [None, CONTEXT])
def test_training_and_decoding_prompts_are_identical(tok, context):
    builder = PromptBuilder(tok, max_context_tokens=200)
    train = builder.build(context, "call anneliese okonkwo")
    infer = builder.build(context, None)
    assert (train.before_audio, train.after_audio) == (infer.before_audio, infer.after_audio)
    assert infer.target is None
    assert train.target == tok.encode("call anneliese okonkwo", add_special_tokens=False) + [tok.eos_token_id]


def test_prompt_text_follows_the_template(tok):
    builder = PromptBuilder(tok, max_context_tokens=200)
    ids = builder.build(CONTEXT, "call")
    assert ids.before_audio[0] == tok.bos_token_id
    assert tok.decode(ids.before_audio[1:]) == (
        "<|history|>set a timer for ten minutes<|keywords|>okonkwo, anneliese, berlin"
        "Transcribe the speech.<|speech|>"
    )
    assert tok.decode(ids.after_audio) == "<|transcript|>"


def test_empty_context_is_no_context_and_entities_are_never_shown(tok):
    builder = PromptBuilder(tok)
    assert builder.build({"history": "", "keywords": [], "entities": ["x"]}, "a") == builder.build(None, "a")
    assert builder.context_text({"entities": ["okonkwo"]}) == ""


def test_budget_keeps_keywords_and_the_most_recent_history(tok):
    keywords = tok.encode("<|keywords|>okonkwo, anneliese, berlin", add_special_tokens=False)
    budget = len(keywords) + 12
    builder = PromptBuilder(tok, max_context_tokens=budget)
    text = builder.context_text(
        {
            "history": ["play some music please", "set a timer for ten minutes"],
            "keywords": CONTEXT["keywords"],
        }
    )
    assert text.endswith("<|keywords|>okonkwo, anneliese, berlin")
    history = text[: -len("<|keywords|>okonkwo, anneliese, berlin")]
    assert history.startswith("<|history|>") and "set a timer for ten minutes".endswith(history[11:])
    assert history[11:] and history[11:] != "set a timer for ten minutes"  # truncated at a word start
    assert " " + history[11:] in " set a timer for ten minutes"
    assert len(tok.encode(text, add_special_tokens=False)) <= budget
    # An older turn is dropped before the recent one is cut.
    recent = len(tok.encode("<|history|>set a timer for ten minutes", add_special_tokens=False))
    roomy = PromptBuilder(tok, max_context_tokens=recent + 2)
    assert roomy.context_text({"history": ["play some music please", "set a timer for ten minutes"]}) == (
        "<|history|>set a timer for ten minutes"
    )


def test_keywords_beyond_the_budget_are_dropped_in_order(tok):
    budget = len(tok.encode("<|keywords|>okonkwo, anneliese", add_special_tokens=False))
    builder = PromptBuilder(tok, max_context_tokens=budget)
    assert builder.context_text(CONTEXT) == "<|keywords|>okonkwo, anneliese"


def test_history_without_spaces_is_cut_by_characters(tok):
    budget = len(tok.encode("<|history|>北京", add_special_tokens=False))
    builder = PromptBuilder(tok, max_context_tokens=budget)
    assert builder.context_text({"history": "我们明天去北京"}) == "<|history|>北京"


def test_decode_cuts_at_eos_and_bad_templates_are_named(tok):
    builder = PromptBuilder(tok)
    ids = builder.build(None, "play some music").target + tok.encode("junk", add_special_tokens=False)
    assert builder.decode(ids) == "play some music"
    with pytest.raises(ValueError, match="exactly once"):
        PromptBuilder(tok, template="{instruction}")


CHAT = ("{{ bos_token }}{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}[assistant] {json: {}}{% endif %}")


def test_a_chat_template_gives_the_prompt_its_format():
    tok = tiny_tokenizer()
    tok.chat_template = CHAT
    builder = PromptBuilder(tok, instruction="Transcribe.")
    ids = builder.build({"keywords": ["Ilse"]}, None)
    before = tok.decode(ids.before_audio)
    # the template writes bos itself; its own braces are text, not fields
    assert before == "<|endoftext|>[user]<|keywords|>IlseTranscribe."
    assert tok.decode(ids.after_audio) == "[assistant] {json: {}}"
    plain = PromptBuilder(tok, instruction="Transcribe.", chat_template="never")
    assert tok.decode(plain.build(None, None).before_audio) == "<|endoftext|>Transcribe.<|speech|>"


def test_chat_template_choices_and_unusable_templates_are_named():
    tok = tiny_tokenizer()
    assert PromptBuilder(tok, chat_template="auto").after_template == "<|transcript|>"  # none: `template`
    with pytest.raises(ValueError, match="has no chat template"):
        PromptBuilder(tok, chat_template="always")
    with pytest.raises(ValueError, match="chat_template must be one of"):
        PromptBuilder(tok, chat_template="yes")
    tok.chat_template = "{% for m in messages %}{{ m['content'] | upper }}{% endfor %}"
    with pytest.raises(ValueError, match="does not keep the user's text"):
        PromptBuilder(tok)
