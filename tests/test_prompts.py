"""Prompts are data: exact strings from the paper, one resolver, clear errors."""

from __future__ import annotations

import pytest

from e5v.prompts import NAMED_PROMPTS, PromptSet, fashioniq_prompts, render, resolve_prompts

WRAP = "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n \n"


def test_exact_paper_prompts():
    p = resolve_prompts()
    assert render("text", p, text="a dog") == WRAP.format("a dog\nSummary above sentence in one word: ")
    assert render("image", p) == WRAP.format("<image>\nSummary above image in one word: ")
    assert render("composed", p, text="make it red") == WRAP.format(
        '<image>Modify this image with "make it red", describe modified image in one word: ')
    assert "desribe" in NAMED_PROMPTS["cirr-original"].composed


def test_other_families():
    p = resolve_prompts()
    assert render("text", p, family="mistral", text="x").startswith("[INST] x\n")
    assert render("image", p, family="phi3").startswith("<|user|>\n<image>")
    with pytest.raises(ValueError, match="unknown prompt family"):
        render("text", p, family="gpt", text="x")


def test_instruction_replaces_the_one_word_instruction():
    p = resolve_prompts(instruction="Describe the colour of the above image in one word:")
    assert p.image == "<image>\nDescribe the colour of the above image in one word: "
    assert p.text.startswith("<sent>\nDescribe the colour")
    with pytest.raises(ValueError, match="empty"):
        resolve_prompts(instruction="  ")


def test_resolution_order_and_errors():
    custom = PromptSet(text="Q: <sent> ->")
    assert resolve_prompts(custom) is custom
    assert resolve_prompts("cirr-target").image.endswith("Describe this image in one word:")
    with pytest.raises(ValueError, match="unknown prompt set 'nope'; choose one of"):
        resolve_prompts("nope")
    with pytest.raises(ValueError, match="exactly once"):
        resolve_prompts(PromptSet(text="no placeholder"))
    with pytest.raises(ValueError, match="must not contain"):
        resolve_prompts(PromptSet(image="<image> <sent>"))


def test_fashioniq_prompts():
    p = fashioniq_prompts("dress")
    assert p.image == "<image>\n Describe this dress in one word based on its style:"
    assert p.composed.startswith("<image> change the style of this dress to <sent>\n Desribe this modified dress")
    resolve_prompts(p)  # valid
