"""response_stats projects to the vocabulary only where a response token is predicted, and changes no number."""

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from actors.training.batching import collate, response_stats
from losses.token_stats import response_token_stats


def stats_both_ways(model, prompts, responses):
    batch = collate(prompts, responses, pad_id=0)
    with torch.no_grad():
        full = response_token_stats(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits,
                                    batch.input_ids, batch.response_mask)
        cut = response_stats(model, batch)
    return full, cut


@pytest.fixture(scope="module")
def models(tiny_model):
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=32, n_layer=2, n_head=2, n_positions=64)).eval()
    return {"llama": AutoModelForCausalLM.from_pretrained(tiny_model).eval(), "gpt2": gpt2}


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_same_response_stats_as_the_full_logits(models, name):
    # Prompts of different lengths, an empty response, right padding: the cut starts at the shortest prompt.
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13, 14], [15, 16, 17, 18], [19, 20, 21]]
    responses = [[30, 31, 32], [33, 34, 35, 36, 37, 38], [], [39]]
    full, cut = stats_both_ways(models[name], prompts, responses)
    # The shortest prompt is 3 tokens: positions 0 and 1 predict prompt tokens in every row and are skipped.
    assert cut.mask.shape[1] == full.mask.shape[1] - 2
    for row in range(len(prompts)):
        assert torch.equal(full.mask[row].sum(), cut.mask[row].sum())
        assert torch.allclose(full.logprobs[row][full.mask[row]], cut.logprobs[row][cut.mask[row]], atol=1e-5)
        assert torch.allclose(full.entropy[row][full.mask[row]], cut.entropy[row][cut.mask[row]], atol=1e-5)


def test_long_shared_prompts_skip_most_positions(models):
    prompts = [list(range(1, 41)), list(range(2, 42))]
    full, cut = stats_both_ways(models["llama"], prompts, [[50, 51], [52, 53, 54]])
    assert cut.mask.shape[1] == 3 and full.mask.shape[1] == 42  # from position 39, which predicts token 40
    assert torch.allclose(full.logprobs[full.mask], cut.logprobs[cut.mask], atol=1e-5)
