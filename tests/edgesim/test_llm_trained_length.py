"""Decode contexts and prompts stop at a model's trained length; `simulate zoo:NAME` of a name
it cannot take lists the ones it can.

Oracle: the published config.json of each model (Hugging Face): SmolLM-135M's
max_position_embeddings is 2048, Qwen2.5-0.5B's 32768. A prediction past it is of a model
that RoPE was never trained for, so the API refuses it and `simulate`'s default contexts stop
there.
"""

from __future__ import annotations

import json

import pytest

from edgesim.cli import main
from edgesim.errors import UserError
from edgesim.llm import load_config, simulate_llm
from hwmodels.target import load_target

RPI5 = load_target("rpi5")


@pytest.mark.parametrize("contexts, prompt_len", [([4096], 128), ([512], 3000)])
def test_beyond_trained_length_is_refused(contexts: list[int], prompt_len: int) -> None:
    cfg = load_config("zoo:smollm-135m")
    with pytest.raises(UserError, match="max_position_embeddings"):
        simulate_llm(cfg, RPI5, ["q4"], [1], contexts, prompt_len)


def test_trained_length_itself_is_accepted() -> None:
    sim = simulate_llm(load_config("zoo:smollm-135m"), RPI5, ["q4"], [1], [2048], 2048)
    assert sim.tokens_per_s.shape == (1, 1, 1)


def _default_contexts(model: str, capsys: pytest.CaptureFixture[str]) -> list[int]:
    assert main(["simulate", model, "--target", "rpi5", "--formats", "q4", "--json"]) == 0
    return json.loads(capsys.readouterr().out)["contexts"]


def test_default_contexts_stop_at_trained_length(capsys: pytest.CaptureFixture[str]) -> None:
    assert _default_contexts("zoo:smollm-135m", capsys) == [128, 512, 1024, 2048]
    assert _default_contexts("zoo:qwen2.5-0.5b", capsys) == [128, 512, 1024, 2048, 4096]


def test_cli_refuses_a_context_past_it_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", "zoo:smollm-135m", "--target", "rpi5", "--context", "4096"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "2048" in err


@pytest.mark.parametrize("name, says", [
    ("Qwen2.5-0.5B", "qwen2.5-0.5b"),       # a misspelt shipped config is named in the list
    ("tiny_lm", "edgesim generate"),        # a zoo decoder: the commands that take it
])
def test_simulate_names_the_zoo_it_takes(name: str, says: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", f"zoo:{name}", "--target", "rpi5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err
