"""Prompt templates as data, one set per backbone family, and the resolver that renders them.

E5-V embeds by asking the model to summarise its input "in one word" and taking the hidden state of
the last prompt token. The exact strings matter: the trailing space after the instruction and the
``"\\n\\n \\n"`` after the assistant header are part of what the model was trained on.

Placeholders: ``<image>`` marks where image features go, ``<sent>`` where the text goes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .errors import InputError

IMAGE = "<image>"
SENT = "<sent>"

@dataclass(frozen=True)
class ChatFormat:
    """How one language model wants a user turn: its chat wrapper and what ``<image>`` becomes in it.

    name:              recorded in embedding configs ("prompt_family"): vectors of two formats never mix.
    wrapper:           the full prompt with ``{}`` where the user turn goes.
    image_placeholder: what replaces ``<image>`` (LLaVA keeps the literal token; Qwen2-VL wraps its pad token).
    """

    name: str
    wrapper: str
    image_placeholder: str = IMAGE
    default_system: str | None = None  # what ``{system}`` in the wrapper becomes unless a PromptSet sets one


#: The chat formats of the backbones e5v knows (families pick theirs by config; a family may define more).
LLAMA3 = ChatFormat("llama3", "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
                              "<|start_header_id|>assistant<|end_header_id|>\n\n \n")
MISTRAL = ChatFormat("mistral", "[INST] {} [/INST]")
PHI3 = ChatFormat("phi3", "<|user|>\n{}<|end|>\n<|assistant|>\n")
QWEN2VL = ChatFormat("qwen2vl", "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                                "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n",
                     "<|vision_start|><|image_pad|><|vision_end|>")
CHAT_FORMATS: dict[str, ChatFormat] = {f.name: f for f in (LLAMA3, MISTRAL, PHI3, QWEN2VL)}
#: ``{}``-wrappers by name (kept for callers of earlier releases).
WRAPPERS: dict[str, str] = {name: f.wrapper for name, f in CHAT_FORMATS.items()}


DEFAULT_TEXT_INSTRUCTION = "Summary above sentence in one word:"
DEFAULT_IMAGE_INSTRUCTION = "Summary above image in one word:"


@dataclass(frozen=True)
class PromptSet:
    """The three user-turn templates of one embedding configuration (before the chat wrapper).

    text:     used for text-only items; contains ``<sent>``.
    image:    used for image-only items; contains ``<image>``.
    composed: used for image + text items (composed retrieval query); contains both.
    """

    text: str = f"{SENT}\n{DEFAULT_TEXT_INSTRUCTION} "
    image: str = f"{IMAGE}\n{DEFAULT_IMAGE_INSTRUCTION} "
    # The paper's CIRR query prompt (spelled "describe"; the original code's "desribe" is available
    # as the named set "cirr-original").
    composed: str = f'{IMAGE}Modify this image with "{SENT}", describe modified image in one word: '
    # The system turn, for chat formats with a ``{system}`` slot (e.g. GME puts its instruction there);
    # None: the format's default. Not part of E5-V's prompts.
    system: str | None = None


#: Named prompt sets users can select with ``prompt="..."``.
NAMED_PROMPTS: dict[str, PromptSet] = {
    "e5v": PromptSet(),
    "cirr-original": PromptSet(
        composed=f'{IMAGE}Modify this image with "{SENT}", desribe modified image in one word: '
    ),
    "cirr-target": PromptSet(image=f"{IMAGE}\n Describe this image in one word:"),
}


def fashioniq_prompts(category: str) -> PromptSet:
    """FashionIQ prompts of the paper for one category (dress, shirt, toptee)."""
    return PromptSet(
        image=f"{IMAGE}\n Describe this {category} in one word based on its style:",
        composed=(
            f"{IMAGE} change the style of this {category} to {SENT}\n"
            f" Desribe this modified {category} in one word based on its style:"
        ),
    )


def resolve_prompts(prompt: str | PromptSet | None = None, instruction: str | None = None) -> PromptSet:
    """Pick the prompt set: an explicit PromptSet > a named one > the default; then apply ``instruction``.

    ``instruction`` replaces the one-word instruction of the text and image prompts (the paper's
    zero-shot instruction following, e.g. "Describe the colour of the above image in one word:").
    A whole custom template is passed as a ``PromptSet``.
    """
    if prompt is None:
        prompts = NAMED_PROMPTS["e5v"]
    elif isinstance(prompt, PromptSet):
        prompts = prompt
    elif isinstance(prompt, str):
        if prompt not in NAMED_PROMPTS:
            raise ValueError(f"unknown prompt set {prompt!r}; choose one of {sorted(NAMED_PROMPTS)} or pass a PromptSet")
        prompts = NAMED_PROMPTS[prompt]
    else:
        raise TypeError(f"prompt must be a name or a PromptSet, not {type(prompt).__name__}")
    validate(prompts)
    return with_instruction(prompts, instruction)


def with_instruction(prompts: PromptSet, instruction: str | None) -> PromptSet:
    """E5-V's instruction following: ``instruction`` replaces the one-word instruction of the text and image
    prompts (the composed prompt keeps its own)."""
    if instruction is None:
        return prompts
    instruction = clean_instruction(instruction)
    return replace(prompts, text=f"{SENT}\n{instruction} ", image=f"{IMAGE}\n{instruction} ")


def clean_instruction(instruction: str) -> str:
    """A caller's instruction without surrounding whitespace; an empty one is refused (it would silently give
    the prompt without one)."""
    instruction = instruction.strip()
    if not instruction:
        raise ValueError("instruction must not be empty")
    return instruction


def validate(prompts: PromptSet) -> None:
    """Each template must carry exactly the placeholders its kind needs."""
    needs = {"text": (SENT,), "image": (IMAGE,), "composed": (IMAGE, SENT)}
    for kind, placeholders in needs.items():
        template = getattr(prompts, kind)
        for ph in (IMAGE, SENT):
            count = template.count(ph)
            if ph in placeholders and count != 1:
                raise ValueError(f"the {kind} prompt must contain {ph!r} exactly once: {template!r}")
            if ph not in placeholders and count:
                raise ValueError(f"the {kind} prompt must not contain {ph!r}: {template!r}")


def chat_format(chat: ChatFormat | str) -> ChatFormat:
    """A ChatFormat, or the known one of that name."""
    if isinstance(chat, ChatFormat):
        return chat
    try:
        return CHAT_FORMATS[chat]
    except KeyError:
        raise ValueError(f"unknown prompt family {chat!r}; known: {sorted(CHAT_FORMATS)}") from None


def render(kind: str, prompts: PromptSet, family: ChatFormat | str = LLAMA3, text: str | None = None) -> str:
    """Full prompt string for one item: the chat format's wrapper around the kind's template."""
    chat = chat_format(family)
    template = getattr(prompts, kind).replace(IMAGE, chat.image_placeholder)
    if SENT in template:
        if text is None:
            raise InputError(f"{kind} item needs text")
        template = template.replace(SENT, text)
    before, after = chat.wrapper.split("{}", 1)  # not str.format: texts and instructions may hold braces
    system = prompts.system if prompts.system is not None else chat.default_system
    return before.replace("{system}", system or "") + template + after


def split_around_text(kind: str, prompts: PromptSet, family: ChatFormat | str = LLAMA3) -> tuple[str, str]:
    """(before, after) of the rendered prompt around the ``<sent>`` slot; used to truncate overlong text."""
    marker = "\x00E5V_TEXT\x00"
    full = render(kind, prompts, family, text=marker)
    before, after = full.split(marker)
    return before, after
