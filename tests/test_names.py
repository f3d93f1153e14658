from __future__ import annotations

import pytest

from scopebench.names import MAX_LENGTH, InvalidName, check_distinct, check_name, name_problem


@pytest.mark.parametrize("name", ["batchtopk", "my-sae", "BatchTopK_v2.1", "a", "x" * MAX_LENGTH, "7b"])
def test_good_names_pass_unchanged(name: str) -> None:
    assert name_problem(name) is None and check_name(name, "SAE name") == name


@pytest.mark.parametrize(("name", "problem"), [
    ("", "empty"), ("-", "start with a letter or a digit"), ("my sae", "' '"), ("../x", "'/'"),
    ("a..b", "'..'"), ("a__b", "'__'"), ("ça-va", "'ç'"), ("x" * 300, "300 characters"), (5, "string"),
])
def test_bad_names_say_why(name: object, problem: str) -> None:
    with pytest.raises(InvalidName, match="names must be") as err:
        check_name(name, "SAE name")
    assert problem in str(err.value)


def test_names_that_differ_only_in_case_or_repeat_are_refused() -> None:
    check_distinct(["a", "b", "c"], "run")
    with pytest.raises(InvalidName, match="differ only in case"):
        check_distinct(["my-sae", "My-SAE"], "run")
    with pytest.raises(InvalidName, match="given twice"):
        check_distinct(["topk", "topk"], "run")
