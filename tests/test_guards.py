"""Guards: an empty spec or dataset, a missing column, over-long prompts; the spec fields other parts rely on.

Each bad input must end the run with one line naming the field or row, before any actor starts.
"""

from __future__ import annotations

import json

import pytest

from jobs.core.data import load_prompts, load_rows, render_prompt
from jobs.core.data_sources import response_text
from jobs.core.errors import DataError, SpecError
from jobs.core.spec import DataSpec, load_spec, validate_spec
from tests.conftest import assert_one_line, run_main, write_jsonl


def no_actor_started(result, out) -> bool:
    # run_onpolicy prints "starting ..." and opens metrics.jsonl only once it starts actors.
    return "starting" not in result.stdout and not (out / "metrics.jsonl").exists()


# --------------------------------------------------------------------------- empty spec


@pytest.mark.parametrize("text", ["", "\n  \n", "# every field left to its default?\n# name: x\n", "---\n"])
def test_empty_spec_file_is_refused(tmp_path, text):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert str(caught.value) == (
        f"{path}: the spec file is empty; expected a mapping of fields, e.g. configs/hinted_idft.yaml"
    )


def test_explicit_empty_mapping_still_means_the_default_job(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("{}\n")
    assert load_spec(path) == validate_spec({})


def test_empty_spec_through_the_cli(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("# nothing here yet\n")
    out = tmp_path / "out"
    result = run_main(str(path), "--output-dir", str(out))
    assert result.returncode == 2
    assert_one_line(result, "spec error: ", str(path), "the spec file is empty", "expected a mapping of fields")
    assert not out.exists()


# --------------------------------------------------------------------------- empty dataset


def prompt_dataset(prompts: list[str]):
    import datasets

    return datasets.Dataset.from_dict({"prompt": prompts}, features=datasets.Features({"prompt": datasets.Value("string")}))


def saved_with_empty_train_split(path, other_prompts: list[str]):
    import datasets

    datasets.DatasetDict({"train": prompt_dataset([]), "other": prompt_dataset(other_prompts)}).save_to_disk(str(path))
    return path


@pytest.mark.parametrize(
    "name, make, what",
    [
        ("empty.jsonl", lambda p: p.write_text(""), "the file"),
        ("blank-lines.jsonl", lambda p: p.write_text("\n  \n\n"), "the file"),
        ("empty.json", lambda p: p.write_text("[]\n"), "the file"),
        ("whitespace.json", lambda p: p.write_text("  \n"), "the file"),
        ("empty.parquet", lambda p: prompt_dataset([]).to_parquet(str(p)), "the file"),
        ("saved", lambda p: prompt_dataset([]).save_to_disk(str(p)), "the saved dataset"),
        ("saved-dict", lambda p: saved_with_empty_train_split(p, ["a"]), "split 'train'"),
    ],
)
def test_a_dataset_with_no_rows_names_data_path(tmp_path, name, make, what):
    path = tmp_path / name
    make(path)
    with pytest.raises(DataError) as caught:
        load_rows(DataSpec(path=str(path)))
    assert str(caught.value) == f"data.path {str(path)!r}: {what} has no rows; expected at least one row with a prompt"


def test_an_empty_split_does_not_hide_the_full_one(tmp_path):
    """datasets itself cannot load a saved DatasetDict once any split is empty; the wanted split still loads."""
    path = saved_with_empty_train_split(tmp_path / "saved", ["a", "b"])
    assert load_rows(DataSpec(path=str(path), split="other")) == [{"prompt": "a"}, {"prompt": "b"}]


def test_empty_dataset_through_the_cli(tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text("")
    out = tmp_path / "out"
    result = run_main("configs/onpolicy_idft.yaml", "--output-dir", str(out), "--set", f"data.path={data}")
    assert result.returncode == 1
    assert_one_line(result, "data error: ", f"data.path {str(data)!r}", "has no rows")
    assert no_actor_started(result, out)


# --------------------------------------------------------------------------- unknown column


def test_unknown_prompt_column_names_the_row_and_the_columns_there(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"question": "What is 1 + 1?", "answer": "2"}])
    with pytest.raises(DataError) as caught:
        load_prompts(DataSpec(path=str(path), prompt_column="prompt"), tokenizer, 200)
    assert str(caught.value) == (
        "data row 0: no column 'prompt' (data.prompt_column); the row has columns ['answer', 'question']"
    )


def test_a_column_only_other_rows_have_is_not_listed_as_there(tmp_path, tokenizer):
    """datasets gives every row every key, None where a row lacks it: the message lists only real values."""
    rows = load_rows(DataSpec(path=str(write_jsonl(tmp_path / "rows.jsonl", [
        {"prompt": "What is 1 + 1?", "solution": "2"},
        {"prompt": "What is 2 + 2?"},
    ]))))
    assert rows[1] == {"prompt": "What is 2 + 2?", "solution": None}
    with pytest.raises(DataError) as caught:
        response_text(rows[1], 1, "solution")
    assert str(caught.value) == "data row 1: no column 'solution'; the row has columns ['prompt']"


def test_unknown_column_through_the_cli(tmp_path):
    out = tmp_path / "out"
    result = run_main("configs/onpolicy_idft.yaml", "--output-dir", str(out), "--set", "data.prompt_column=question")
    assert result.returncode == 1
    assert_one_line(result, "data error: ", "data row 0", "no column 'question'", "data.prompt_column",
                    "['answer', 'prompt', 'solution']")
    assert no_actor_started(result, out)


# --------------------------------------------------------------------------- over-long prompts

SHORT = {"prompt": "What is 1 + 1?"}
LONG = {"prompt": "word " * 60}  # about 300 tokens with the tiny byte-level tokenizer
BUDGET = 100


def overlong_rows(tmp_path):
    return write_jsonl(tmp_path / "rows.jsonl", [SHORT, LONG, SHORT, LONG])


def full_token_ids(row, index, tokenizer) -> list[int]:
    return render_prompt(row, index, DataSpec(), tokenizer)[1]


def test_overlong_prompts_are_dropped_by_default(tmp_path, tokenizer):
    assert len(full_token_ids(LONG, 1, tokenizer)) > BUDGET >= len(full_token_ids(SHORT, 0, tokenizer))
    spec = DataSpec(path=str(overlong_rows(tmp_path)))
    assert spec.overlong_prompts == "drop"
    prompts, counts = load_prompts(spec, tokenizer, BUDGET)
    assert counts == {"prompts_dropped_too_long": 2, "prompts_truncated": 0}
    assert [p.index for p in prompts] == [0, 2]  # the original row numbers, not positions in the kept list
    assert [list(p.token_ids) for p in prompts] == [full_token_ids(SHORT, 0, tokenizer)] * 2


def test_overlong_prompts_keep_their_last_tokens_when_truncated(tmp_path, tokenizer):
    spec = DataSpec(path=str(overlong_rows(tmp_path)), overlong_prompts="truncate")
    prompts, counts = load_prompts(spec, tokenizer, BUDGET)
    assert counts == {"prompts_dropped_too_long": 0, "prompts_truncated": 2}
    assert [p.index for p in prompts] == [0, 1, 2, 3]
    full = full_token_ids(LONG, 1, tokenizer)
    truncated = prompts[1]
    assert list(truncated.token_ids) == full[-BUDGET:]
    assert truncated.text == tokenizer.decode(full[-BUDGET:], skip_special_tokens=False)
    assert truncated.text.endswith("<|im_end|>\n<|im_start|>assistant\n")  # the generation prompt survives
    assert not truncated.text.startswith("<|im_start|>user")  # the start of the question was cut
    assert truncated.row == LONG and truncated.messages[-1]["content"] == LONG["prompt"]
    assert list(prompts[0].token_ids) == full_token_ids(SHORT, 0, tokenizer)  # short prompts are untouched


def test_overlong_prompt_fails_naming_the_row_when_asked(tmp_path, tokenizer):
    spec = DataSpec(path=str(overlong_rows(tmp_path)), overlong_prompts="error")
    with pytest.raises(DataError) as caught:
        load_prompts(spec, tokenizer, BUDGET)
    length = len(full_token_ids(LONG, 1, tokenizer))
    assert str(caught.value).startswith(
        f"data row 1: the prompt is {length} tokens; at most {BUDGET} fit "
        "(model.max_model_len minus rollout.max_new_tokens); data.overlong_prompts is 'error'"
    )


def test_every_prompt_dropped_is_one_line(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "rows.jsonl", [LONG, LONG, LONG])
    with pytest.raises(DataError) as caught:
        load_prompts(DataSpec(path=str(path)), tokenizer, BUDGET)
    assert str(caught.value) == (
        f"data.path {str(path)!r}: all 3 prompt(s) are longer than {BUDGET} tokens "
        "(model.max_model_len minus rollout.max_new_tokens) and data.overlong_prompts is 'drop'; "
        "raise model.max_model_len or set data.overlong_prompts to 'truncate'"
    )


def test_overlong_error_through_the_cli(tmp_path):
    data = write_jsonl(tmp_path / "prompts.jsonl", [SHORT, LONG])
    out = tmp_path / "out"
    result = run_main("configs/onpolicy_idft.yaml", "--output-dir", str(out), "--set", f"data.path={data}",
                      "--set", "data.overlong_prompts=error")
    assert result.returncode == 1
    # onpolicy_idft.yaml: max_model_len 256 - max_new_tokens 32 leaves 224 prompt tokens.
    assert_one_line(result, "data error: ", "data row 1", "at most 224 fit", "data.overlong_prompts is 'error'")
    assert no_actor_started(result, out)


# --------------------------------------------------------------------------- fields other parts rely on


def test_new_fields_and_their_defaults():
    spec = validate_spec({})
    assert spec.model.trust_remote_code is False
    assert spec.data.overlong_prompts == "drop"
    assert spec.checkpoint.keep_last == 3
    assert (spec.faults.worker_restarts, spec.faults.job_restarts) == (3, 0)
    assert (spec.placement.strategy, spec.placement.colocate) == ("pack", False)
    chosen = validate_spec({"model": {"trust_remote_code": True}, "placement": {"strategy": "spread", "colocate": True},
                            "faults": {"job_restarts": 2}, "checkpoint": {"keep_last": 1}})
    assert chosen.model.trust_remote_code is True and chosen.placement.strategy == "spread"
    assert chosen.placement.colocate is True and chosen.faults.job_restarts == 2 and chosen.checkpoint.keep_last == 1


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"checkpoint": {"keep_last": 0}}, "checkpoint.keep_last: Input should be greater than or equal to 1 (got 0)"),
        ({"faults": {"worker_restarts": -1}}, "faults.worker_restarts: Input should be greater than or equal to 0"),
        ({"placement": {"strategy": "ring"}}, "placement.strategy: Input should be 'pack' or 'spread' (got 'ring')"),
        ({"data": {"overlong_prompts": "skip"}},
         "data.overlong_prompts: Input should be 'drop', 'truncate' or 'error' (got 'skip')"),
        ({"faults": {"restarts": 1}}, "faults.restarts: unknown field, did you mean `job_restarts`? (expected one of: worker_restarts, job_restarts)"),
    ],
)
def test_new_fields_are_checked(raw, expected):
    with pytest.raises(SpecError) as caught:
        validate_spec(raw)
    assert str(caught.value).startswith(expected)


def test_model_code_from_the_repo_does_not_run_unless_the_spec_says_so(tmp_path, tiny_model):
    """A model folder that ships its own Python (auto_map) is refused with trust_remote_code off, and its code never runs."""
    import shutil

    model = tmp_path / "custom-model"
    shutil.copytree(tiny_model, model)
    ran = tmp_path / "the-repo-code-ran"
    (model / "configuration_custom.py").write_text(
        f"import pathlib\npathlib.Path({str(ran)!r}).write_text('yes')\n"
        "from transformers import LlamaConfig\n\nclass CustomConfig(LlamaConfig):\n    model_type = 'hintflow-custom'\n"
    )
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="hintflow-custom", auto_map={"AutoConfig": "configuration_custom.CustomConfig"})
    (model / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    result = run_main("configs/onpolicy_idft.yaml", "--output-dir", str(out), "--set", f"model.path={model}")
    assert result.returncode == 1
    assert_one_line(result, "model error: model.path", "trust_remote_code")
    assert not ran.exists()
    assert no_actor_started(result, out)
