"""What a process reward model (PRM) is to ponder: a convention, one preset per public family.

A PRM scores step j of a path at one token position. The public PRMs differ in how
the path is laid out (``layout``) and in what the model outputs there (``mode``):

=================== ============ ============= ==========================================
preset              layout       mode          the score of step j
=================== ============ ============= ==========================================
qwen2.5-math-prm    tagged       reward_head   softmax(head)[1] at the ``<extra_0>`` after
                                               step j (chat: system, user, assistant)
math-shepherd       tagged       label_tokens  softmax over the ("+", "-") logits at the
                                               `` ки`` after "Step j: ..."
rlhflow             chat_turns   label_tokens  softmax over ("+", "-") at the token that
                                               predicts the assistant's reply to step j
skywork-prm         step_tokens  value_head    sigmoid(value) at the "\\n" token that
                                               ends step j
=================== ============ ============= ==========================================

How each layout becomes token ids is in :mod:`ponder.actors.backends.prm_input`;
this module holds the conventions, the presets, preset detection from a checkpoint,
and the reading of scores from the model's outputs at the chosen positions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

MODES = ("label_tokens", "reward_head", "value_head")
LAYOUTS = ("tagged", "chat_turns", "step_tokens")
QWEN_MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True, slots=True)
class PRMConvention:
    """How to lay a path out for a PRM and where and how to read its step scores.

    Attributes:
        mode: what the model outputs at a scored position: "label_tokens" (causal
            LM; softmax over the logits of ``label_tokens``, P(good) = the first),
            "reward_head" (classification head; softmax over classes, P(good) =
            class ``good_class``) or "value_head" (one scalar; P(good) = sigmoid).
        layout: "tagged" (``step_tag`` written after each step, read at its last
            token), "chat_turns" (each step a user turn, the assistant replies
            ``label_tokens[0]``; read at the token that predicts the reply) or
            "step_tokens" (BOS, problem, then each line of each step tokenized on
            its own and followed by the ``step_tag`` token; read at the tag that
            ends each step).
        step_tag: the tag text ("tagged"), or the separator whose last token
            ends each line ("step_tokens").
        label_tokens: (good, bad) tokens for "label_tokens" mode; each must be one token.
        good_class: class index read as P(good) in "reward_head" mode.
        prompt_join: text between the problem and the first step.
        step_join: text between one step's tag and the next step ("tagged").
        step_prefix: written before step j, ``{k}`` replaced by j + 1 (Math-Shepherd's
            "Step {k}: "); left out when the step already starts with it.
        system_prompt: "tagged" only: when set, the path is rendered with the
            tokenizer's chat template (system, user = problem, assistant = tagged steps).
        name: the preset's name, or "custom".
    """

    mode: str = "label_tokens"
    layout: str = "tagged"
    step_tag: str = " ки"
    label_tokens: tuple[str, str] = ("+", "-")
    good_class: int = 1
    prompt_join: str = " "
    step_join: str = "\n"
    step_prefix: str = ""
    system_prompt: str | None = None
    name: str = "custom"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"PRM mode must be one of {MODES}, got {self.mode!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"PRM layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.layout != "chat_turns" and not self.step_tag:
            raise ValueError("PRM step_tag must be a non-empty string")
        if len(self.label_tokens) != 2:
            raise ValueError(f"label_tokens must be (good, bad), got {self.label_tokens!r}")
        if self.layout == "chat_turns" and self.mode != "label_tokens":
            raise ValueError("the chat_turns layout reads label-token logits: it needs mode='label_tokens'")


# preset name -> convention; a config names one with `verifier.kwargs.prm: NAME`
PRESETS: dict[str, PRMConvention] = {
    # Qwen/Qwen2.5-Math-PRM-7B model card: steps joined and ended by <extra_0> as the
    # assistant turn of the chat template; Qwen2ForProcessRewardModel, 2 classes.
    "qwen2.5-math-prm": PRMConvention(
        mode="reward_head", layout="tagged", step_tag="<extra_0>", good_class=1, prompt_join="",
        step_join="", system_prompt=QWEN_MATH_SYSTEM, name="qwen2.5-math-prm",
    ),
    # peiyi9979/math-shepherd-mistral-7b-prm model card: f"{question} {output}" where output
    # is "Step 1: ... ки\nStep 2: ... ки"; candidate tokens "+" and "-".
    "math-shepherd": PRMConvention(
        mode="label_tokens", layout="tagged", step_tag=" ки", prompt_join=" ", step_join="\n",
        step_prefix="Step {k}: ", name="math-shepherd",
    ),
    # RLHFlow/RLHF-Reward-Modeling math/README.md: user turns "question step_1", "step_2", ...
    # each answered "+" by the assistant; P("+") where the assistant's reply is predicted.
    "rlhflow": PRMConvention(mode="label_tokens", layout="chat_turns", prompt_join=" ", name="rlhflow"),
    # SkyworkAI/skywork-o1-prm-inference model_utils/io_utils.py prepare_input with
    # step_token="\n": bos + problem + "\n", then each step's ids + the "\n" id; a
    # Linear(hidden, 1) value head (v_head.summary) on the last hidden state, sigmoid.
    "skywork-prm": PRMConvention(mode="value_head", layout="step_tokens", step_tag="\n", prompt_join="\n",
                                 name="skywork-prm"),
}


def resolve_convention(prm: PRMConvention | str | dict | None) -> PRMConvention:
    """A PRMConvention from a preset name, a dict of its fields, or an instance.

    Args:
        prm: a preset name (a key of ``PRESETS``), a dict of PRMConvention fields,
            an instance, or None (Math-Shepherd; backends detect from the checkpoint instead).

    Raises:
        ValueError: an unknown preset name (the message lists the presets) or a bad field.
    """
    if prm is None:
        return PRESETS["math-shepherd"]
    if isinstance(prm, PRMConvention):
        return prm
    if isinstance(prm, str):
        if prm not in PRESETS:
            raise ValueError(f"unknown PRM preset {prm!r}; presets: {', '.join(sorted(PRESETS))}")
        return PRESETS[prm]
    fields = dict(prm)
    if isinstance(fields.get("label_tokens"), list):
        fields["label_tokens"] = tuple(fields["label_tokens"])
    return PRMConvention(**fields)


def detect_preset(config: dict, tokenizer) -> str:
    """The preset a checkpoint needs, read from its config.json and tokenizer.

    Only unambiguous signs count: the architecture Qwen2ForProcessRewardModel
    (Qwen2.5-Math-PRM) or Qwen2ForPrmModel (Skywork's value-head PRM); a token
    classifier whose tokenizer has ``<extra_0>``; a causal LM without a chat
    template (Math-Shepherd: RLHFlow's PRM is a chat).

    Args:
        config: the checkpoint's config.json as a dict.
        tokenizer: its tokenizer.

    Returns:
        A key of ``PRESETS``.

    Raises:
        ValueError: nothing decides (e.g. a chat causal LM: Math-Shepherd or RLHFlow?);
            the message lists the presets to choose from with ``verifier.kwargs.prm``.
    """
    architectures = " ".join(config.get("architectures") or [])
    if "Qwen2ForProcessRewardModel" in architectures:
        return "qwen2.5-math-prm"
    if "Qwen2ForPrmModel" in architectures:
        return "skywork-prm"
    if "ForTokenClassification" in architectures and "<extra_0>" in tokenizer.get_vocab():
        return "qwen2.5-math-prm"
    if "ForCausalLM" in architectures and not getattr(tokenizer, "chat_template", None):
        return "math-shepherd"
    raise ValueError(
        f"cannot tell which PRM preset this checkpoint needs (architectures: {architectures or 'none'}); "
        f"set verifier.kwargs.prm to one of: {', '.join(sorted(PRESETS))}"
    )


def pick_convention(model_path: str, prm, convention, tokenizer) -> PRMConvention:
    """The convention a verifier runs: ``prm`` (or ``convention``, its older name), else detected.

    Args:
        model_path: the checkpoint folder (its config.json is read for detection).
        prm: as :func:`resolve_convention`, or None.
        convention: the older keyword for the same; at most one of the two is given.
        tokenizer: the checkpoint's tokenizer (for detection).

    Raises:
        ValueError: both given, an unknown preset, or nothing to detect from.
    """
    if prm is not None and convention is not None:
        raise ValueError("give the PRM preset once: `prm` (`convention` is its older name)")
    chosen = prm if prm is not None else convention
    if chosen is None:
        chosen = detect_preset(json.loads((Path(model_path) / "config.json").read_text()), tokenizer)
    return resolve_convention(chosen)


def step_probs(outputs_at_steps, convention: PRMConvention) -> list[float]:
    """P(good) for each step from the model's outputs at its scored position.

    Args:
        outputs_at_steps: torch tensor at the S scored positions: (S, 2) logits of
            the (good, bad) label tokens ("label_tokens"), (S, C) class logits
            ("reward_head"), or (S,) / (S, 1) raw values ("value_head").
        convention: how to read them.

    Returns:
        S floats in [0, 1].
    """
    x = outputs_at_steps.float()
    if convention.mode == "value_head":
        return x.reshape(-1).sigmoid().tolist()  # (S,)
    probs = x.softmax(-1)  # (S, 2) or (S, C)
    good = 0 if convention.mode == "label_tokens" else convention.good_class
    return probs[:, good].tolist()
