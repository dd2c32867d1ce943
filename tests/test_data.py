"""Prompt loading: every format, every row checked, errors that name the row."""

from __future__ import annotations

import pytest

from jobs.core.data import PromptStream, load_prompts, load_rows
from jobs.core.errors import DataError
from jobs.core.spec import DataSpec
from tests.conftest import write_jsonl

ROWS = [{"question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(5)]


def test_jsonl_parquet_and_saved_folder_give_the_same_rows(tmp_path):
    import datasets

    dataset = datasets.Dataset.from_list(ROWS)
    dataset.to_parquet(str(tmp_path / "rows.parquet"))
    datasets.DatasetDict({"train": dataset, "test": dataset.select([0])}).save_to_disk(str(tmp_path / "saved"))
    paths = {
        "jsonl": write_jsonl(tmp_path / "rows.jsonl", ROWS),
        "parquet": tmp_path / "rows.parquet",
        "folder": tmp_path / "saved",
    }
    for kind, path in paths.items():
        assert load_rows(DataSpec(path=str(path), prompt_column="question")) == ROWS, kind
    assert load_rows(DataSpec(path=str(tmp_path / "saved"), split="test")) == ROWS[:1]
    assert len(load_rows(DataSpec(path=str(paths["jsonl"]), max_prompts=2))) == 2


def test_chat_template_and_column_mapping(tmp_path, tokenizer):
    spec = DataSpec(path=str(write_jsonl(tmp_path / "rows.jsonl", ROWS)), prompt_column="question",
                    system_prompt="Be brief.")
    prompts, counts = load_prompts(spec, tokenizer, max_prompt_tokens=200)
    assert counts == {"prompts_dropped_too_long": 0, "prompts_truncated": 0}
    assert prompts[2].text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2 + 1?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert list(prompts[2].token_ids) == tokenizer(prompts[2].text, add_special_tokens=False).input_ids
    assert prompts[2].row["answer"] == "3" and prompts[2].index == 2

    raw, _ = load_prompts(DataSpec(path=spec.path, prompt_column="question", chat_template="none"), tokenizer, 200)
    assert raw[0].text == "What is 0 + 1?"
    custom, _ = load_prompts(
        DataSpec(path=spec.path, prompt_column="question", chat_template="Q: {{ messages[-1]['content'] }}\nA:"),
        tokenizer, 200,
    )
    assert custom[0].text == "Q: What is 0 + 1?\nA:"


def test_message_lists_are_accepted(tmp_path, tokenizer):
    rows = [{"prompt": [{"role": "user", "content": "hi"}]}]
    prompts, _ = load_prompts(DataSpec(path=str(write_jsonl(tmp_path / "m.jsonl", rows))), tokenizer, 200)
    assert prompts[0].text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize(
    "rows, expected",
    [
        (
            [{"prompt": "ok"}, {"question": "x"}],  # datasets gives row 1 a 'prompt' of None: not a column it has
            "data row 1: no column 'prompt' (data.prompt_column); the row has columns ['question']",
        ),
        ([{"question": "x"}], "data row 0: no column 'prompt' (data.prompt_column); the row has columns ['question']"),
        ([{"prompt": "ok"}, {"prompt": "  "}], "data row 1: column 'prompt' is empty"),
        ([{"prompt": 7}], "data row 0: column 'prompt' must be a non-empty string or a list of {role, content}"),
    ],
)
def test_bad_rows_are_named(tmp_path, tokenizer, rows, expected):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError) as caught:
        load_prompts(DataSpec(path=str(path)), tokenizer, max_prompt_tokens=200)
    assert str(caught.value).startswith(expected)


def test_broken_json_line_is_named(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"prompt": "a"}\n{"prompt": "b"\n')
    with pytest.raises(DataError, match=r"broken.jsonl: line 2: not valid JSON"):
        load_rows(DataSpec(path=str(path)))


def test_missing_file_and_missing_split(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_rows(DataSpec(path=str(tmp_path / "nope.jsonl")))
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(DataError, match=r"data.split: 'validation' is not in .* it has \['train'\]"):
        load_rows(DataSpec(path=str(tmp_path / "saved"), split="validation"))


def test_model_template_required_when_asked_for(tmp_path, tokenizer):
    tokenizer = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    tokenizer.chat_template = None
    with pytest.raises(DataError, match="has no chat template"):
        load_prompts(DataSpec(), tokenizer, 200)


def test_prompt_stream_cycles_through_every_prompt_each_epoch(tokenizer):
    prompts, _ = load_prompts(DataSpec(max_prompts=10), tokenizer, 200)
    stream = PromptStream(prompts, shuffle=True, seed=3)
    first_epoch = stream.next_batch(4) + stream.next_batch(4) + stream.next_batch(2)
    assert sorted(p.index for p in first_epoch) == list(range(10))
    assert [p.index for p in first_epoch] != list(range(10))  # shuffled
    assert stream.state() == {"epoch": 0, "position": 10}
    second = stream.next_batch(10)
    assert sorted(p.index for p in second) == list(range(10)) and stream.epoch == 1
    again = PromptStream(prompts, shuffle=True, seed=3)
    assert [p.index for p in again.next_batch(10)] == [p.index for p in first_epoch]  # seeded


def test_reasoning_gym_rows_with_nested_solution_column():
    from jobs.core.data_sources import column_value, response_text

    rows = load_rows(DataSpec(path="reasoning-gym:gsm_symbolic", prompt_column="question", max_prompts=3, seed=1))
    assert len(rows) == 3 and all(r["question"] and r["answer"] for r in rows)
    assert "####" in response_text(rows[0], 0, "metadata.answer_cot")  # the task's own worked solution
    assert column_value(rows[0], "metadata.no_such_key") is None
    held_out = load_rows(DataSpec(path="reasoning-gym:gsm_symbolic", max_prompts=3, seed=2))
    assert [r["question"] for r in held_out] != [r["question"] for r in rows]


def test_unknown_reasoning_gym_task():
    with pytest.raises(DataError, match="reasoning-gym:no_such_task.*cannot create it"):
        load_rows(DataSpec(path="reasoning-gym:no_such_task"))


def test_champ_rows_have_question_answer_solution_and_hints():
    rows = load_rows(DataSpec(path="champ:v0", prompt_column="question"))
    assert len(rows) == 270
    first = rows[0]
    assert first["question"] and first["answer"] and first["solution"].count("\n") >= 1 and first["hints"]
    assert {r["category"] for r in rows} == {"Number-Theory", "Inequality", "Polynomial", "Sequence", "Combinatorics"}
