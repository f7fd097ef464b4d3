"""Reading trial metrics: the termination message and stdout lines (hpo_operator.core.metrics)."""

import pytest

from hpo_operator.core.metrics import (
    Sample,
    final_samples,
    latest,
    log_needed,
    parse_line,
    parse_log,
    parse_termination_message,
)

WANTED = ["loss", "accuracy"]


def as_tuples(samples):
    return [(s.name, s.value, s.step) for s in samples]


# --- the termination message ---------------------------------------------------------------


def test_termination_message_json_object_of_numbers():
    samples = parse_termination_message('{"loss": 0.12, "accuracy": 0.97}', WANTED)
    assert as_tuples(samples) == [("loss", 0.12, None), ("accuracy", 0.97, None)]


def test_termination_message_with_step_gives_the_step_to_every_metric():
    samples = parse_termination_message('{"step": 7, "loss": 0.5, "accuracy": 1}', WANTED)
    assert as_tuples(samples) == [("loss", 0.5, 7), ("accuracy", 1.0, 7)]


def test_termination_message_keeps_only_wanted_metrics():
    samples = parse_termination_message('{"loss": 0.5, "lr": 0.01, "epoch": 3}', ["loss"])
    assert as_tuples(samples) == [("loss", 0.5, None)]


@pytest.mark.parametrize("text", [None, ""])
def test_empty_termination_message_gives_nothing(text):
    assert parse_termination_message(text, WANTED) == []


@pytest.mark.parametrize("text", ["[0.5]", "0.5", '"loss=0.5"', "null", "true"])
def test_termination_message_json_that_is_not_an_object_gives_nothing(text):
    assert parse_termination_message(text, WANTED) == []


def test_termination_message_that_is_not_json_is_read_as_name_value_lines():
    samples = parse_termination_message("done\nloss=0.25 accuracy=0.75\n", WANTED)
    assert as_tuples(samples) == [("loss", 0.25, None), ("accuracy", 0.75, None)]


def test_termination_message_holding_json_lines_is_read_line_by_line():
    text = '{"step": 1, "loss": 0.9}\n{"step": 2, "loss": 0.4}\n'
    assert as_tuples(parse_termination_message(text, ["loss"])) == [("loss", 0.9, 1), ("loss", 0.4, 2)]


def test_termination_message_values_that_are_not_numbers_are_dropped():
    text = '{"loss": "n/a", "accuracy": true, "other": 1}'
    assert parse_termination_message(text, WANTED + ["other"]) == [Sample("other", 1.0)]


def test_termination_message_non_finite_values_are_dropped():
    # Python's json accepts NaN and Infinity; 1e400 overflows to infinity.
    text = '{"loss": NaN, "accuracy": Infinity, "a": -Infinity, "b": 1e400, "c": 2}'
    assert as_tuples(parse_termination_message(text, ["loss", "accuracy", "a", "b", "c"])) == [("c", 2.0, None)]


def test_termination_message_numeric_strings_are_read_as_numbers():
    assert as_tuples(parse_termination_message('{"loss": "0.5"}', ["loss"])) == [("loss", 0.5, None)]


# --- stdout lines: name=value ---------------------------------------------------------------


def test_documented_example_line():
    samples = parse_line("epoch 3: step=3 loss=0.41, accuracy=0.88", set(WANTED))
    assert as_tuples(samples) == [("loss", 0.41, 3), ("accuracy", 0.88, 3)]


@pytest.mark.parametrize(
    "line",
    [
        "loss=0.5 accuracy=0.25",
        "loss=0.5,accuracy=0.25",
        "loss=0.5, accuracy=0.25",
        "loss=0.5;accuracy=0.25",
        "  loss=0.5\taccuracy=0.25  ",
    ],
)
def test_pairs_separated_by_spaces_commas_or_semicolons(line):
    assert as_tuples(parse_line(line, set(WANTED))) == [("loss", 0.5, None), ("accuracy", 0.25, None)]


@pytest.mark.parametrize(
    "raw, value",
    [
        ("1", 1.0),
        ("-2", -2.0),
        ("+3", 3.0),
        ("0.5", 0.5),
        (".5", 0.5),
        ("5.", 5.0),
        ("1e-3", 0.001),
        ("2.5E+2", 250.0),
        ("-1.5e1", -15.0),
    ],
)
def test_number_forms(raw, value):
    assert as_tuples(parse_line(f"loss={raw}", {"loss"})) == [("loss", value, None)]


def test_step_may_come_after_the_metrics():
    assert as_tuples(parse_line("loss=0.5 step=12", {"loss"})) == [("loss", 0.5, 12)]


@pytest.mark.parametrize("step, expected", [("4", 4), ("4.0", 4), ("4.5", None), ("-1", None), ("x", None)])
def test_step_must_be_a_whole_non_negative_number(step, expected):
    samples = parse_line(f"step={step} loss=0.5", {"loss"})
    assert as_tuples(samples) == [("loss", 0.5, expected)]


def test_step_is_not_a_metric_unless_wanted():
    assert as_tuples(parse_line("step=3 loss=1", {"loss"})) == [("loss", 1.0, 3)]


def test_metric_names_may_contain_dots_slashes_and_dashes():
    samples = parse_line("val/loss=0.3 train.acc=0.9 top-5=0.99", {"val/loss", "train.acc", "top-5"})
    assert as_tuples(samples) == [("val/loss", 0.3, None), ("train.acc", 0.9, None), ("top-5", 0.99, None)]


def test_only_wanted_metrics_are_kept_from_lines():
    assert as_tuples(parse_line("lr=0.1 loss=0.2 epoch=3", {"loss"})) == [("loss", 0.2, None)]


@pytest.mark.parametrize(
    "line",
    [
        "",
        "starting training",
        "loss: 0.5",
        "loss = 0.5",
        "loss=abc",
        "loss=0.5abc",
        "loss=0.5.1",
        "myloss=0.5",  # a different metric, not `loss`
        "xloss=0.5 accuracy_x=1",
        "loss==0.5",
        "=0.5",
    ],
)
def test_garbage_lines_are_ignored(line):
    assert parse_line(line, set(WANTED)) == []


def test_pair_glued_to_other_text_is_not_read():
    # `abc:loss=1` is not preceded by a separator; `(loss=2)` is not followed by one.
    assert parse_line("abc:loss=1 (loss=2)", {"loss"}) == []


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "+inf"])
def test_non_finite_pair_values_are_dropped(raw):
    assert as_tuples(parse_line(f"loss={raw} accuracy=0.5", set(WANTED))) == [("accuracy", 0.5, None)]


# --- stdout lines: JSON objects ----------------------------------------------------------------


def test_json_line_with_step():
    assert as_tuples(parse_line('{"step": 3, "loss": 0.41}', {"loss"})) == [("loss", 0.41, 3)]


def test_json_line_with_surrounding_whitespace():
    assert as_tuples(parse_line('   {"loss": 0.41}  ', {"loss"})) == [("loss", 0.41, None)]


@pytest.mark.parametrize(
    "line",
    [
        '{"loss": 0.5',  # broken JSON
        "{not json} loss=0.5",  # starts like JSON: read as JSON only
        '{"loss": null}',
        '{"loss": [0.5]}',
        '{"loss": {"value": 0.5}}',
        '{"loss": false}',
        '{"loss": NaN}',
    ],
)
def test_bad_json_lines_are_ignored(line):
    assert parse_line(line, {"loss"}) == []


def test_json_line_ignores_unwanted_keys():
    assert as_tuples(parse_line('{"loss": 1, "lr": 2, "note": "x"}', {"loss"})) == [("loss", 1.0, None)]


# --- whole logs and latest() -----------------------------------------------------------------


LOG = """\
Downloading data...
epoch 1: step=1 loss=0.9, accuracy=0.5
garbage === line
{"step": 2, "loss": 0.6, "accuracy": 0.7}
WARNING: loss is nan
epoch 3: step=3 loss=0.41 accuracy=nan
done
"""


def test_parse_log_reads_every_form_in_order_and_skips_the_rest():
    assert as_tuples(parse_log(LOG, WANTED)) == [
        ("loss", 0.9, 1),
        ("accuracy", 0.5, 1),
        ("loss", 0.6, 2),
        ("accuracy", 0.7, 2),
        ("loss", 0.41, 3),
    ]


def test_parse_log_accepts_any_iterable_of_names():
    assert parse_log("loss=1", iter(["loss"])) == [Sample("loss", 1.0)]
    assert parse_log("loss=1", ("loss",)) == [Sample("loss", 1.0)]


def test_parse_log_of_empty_text():
    assert parse_log("", WANTED) == []


def test_latest_keeps_the_last_sample_of_each_metric():
    found = latest(parse_log(LOG, WANTED))
    assert found == {"loss": Sample("loss", 0.41, 3), "accuracy": Sample("accuracy", 0.7, 2)}


def test_latest_is_by_order_of_report_not_by_step():
    samples = [Sample("loss", 0.1, 10), Sample("loss", 0.9, 2)]
    assert latest(samples)["loss"] == Sample("loss", 0.9, 2)


def test_latest_of_a_later_sample_on_the_same_line():
    assert latest(parse_line("loss=1 loss=2", {"loss"})) == {"loss": Sample("loss", 2.0)}


def test_latest_of_nothing():
    assert latest([]) == {}


def test_huge_json_integer_is_dropped_not_raised():
    huge = "1" + "0" * 400
    assert parse_termination_message(f'{{"loss": {huge}, "accuracy": 0.5}}', WANTED) == [Sample("accuracy", 0.5)]
    assert parse_log(f'{{"step": {huge}, "loss": 0.5}}', ["loss"]) == [Sample("loss", 0.5)]


# --- metricsCollector.source ---------------------------------------------------------------------

FINAL_MESSAGE = '{"loss": 0.2, "acc": 0.9}'
FINAL_LOG = "step=1 loss=0.5\nstep=2 loss=0.3 acc=0.8\n"


def test_which_finished_trials_need_their_log():
    assert not log_needed("TerminationMessage", None, "loss")
    assert log_needed("StdoutLog", FINAL_MESSAGE, "loss")
    assert not log_needed("Auto", FINAL_MESSAGE, "loss")
    assert log_needed("Auto", '{"acc": 0.9}', "loss") and log_needed("Auto", None, "loss")


def test_final_samples_follow_the_source():
    def result(source, message=FINAL_MESSAGE):
        return {
            n: (s.value, s.step)
            for n, s in latest(final_samples(source, "loss", message, FINAL_LOG, ["loss", "acc"])).items()
        }

    assert result("TerminationMessage") == {"loss": (0.2, None), "acc": (0.9, None)}
    assert result("StdoutLog") == {"loss": (0.3, 2), "acc": (0.8, 2)}
    assert result("Auto") == {"loss": (0.2, None), "acc": (0.9, None)}
    # Auto without the objective in the message: the message's metrics, then the log's.
    assert result("Auto", '{"acc": 0.95}') == {"loss": (0.3, 2), "acc": (0.8, 2)}
    assert result("TerminationMessage", None) == {}


# --- metricsCollector.metricsFormat: given regexes -----------------------------------------------

# Katib's documented default stdout regex, and one of its file examples' custom regexes.
KATIB_DEFAULT = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"
BRACED = r"{metricName: ([\w|-]+), metricValue: ((-?\d+)(\.\d+)?)}"


def test_a_given_regex_reads_name_and_value_from_its_first_two_groups():
    log = "epoch 1\n{metricName: loss, metricValue: 0.5}\n{metricName: accuracy, metricValue: 0.75} done\n"
    samples = parse_log(log, WANTED, formats=[BRACED])
    assert as_tuples(samples) == [("loss", 0.5, None), ("accuracy", 0.75, None)]


def test_a_given_regex_reads_spaces_around_the_equals_sign_that_the_default_form_does_not():
    line = "loss = 0.25 accuracy= 0.5"
    assert parse_line(line, set(WANTED)) == []
    assert as_tuples(parse_line(line, set(WANTED), [KATIB_DEFAULT])) == [("loss", 0.25, None), ("accuracy", 0.5, None)]


def test_with_given_regexes_json_and_pair_lines_are_not_read():
    log = '{"loss": 0.1}\nloss=0.2\nLOSS: 0.3\n'
    assert as_tuples(parse_log(log, ["loss"], formats=[r"LOSS(): ([0-9.]+)"])) == []
    assert as_tuples(parse_log(log, ["loss"], formats=[r"(LOSS|loss): ([0-9.]+)"])) == []
    assert as_tuples(parse_log(log.lower(), ["loss"], formats=[r"(loss): ([0-9.]+)"])) == [("loss", 0.3, None)]


def test_several_regexes_all_apply_and_a_match_named_step_gives_the_step():
    formats = [r"(step) (\d+)", r"([a-z]+): ([0-9.]+)"]
    samples = parse_log("step 3 loss: 0.5 accuracy: 0.9\nloss: 0.4\n", WANTED, formats=formats)
    assert as_tuples(samples) == [("loss", 0.5, 3), ("accuracy", 0.9, 3), ("loss", 0.4, None)]


def test_a_regex_value_that_is_not_a_number_is_dropped():
    assert parse_line("loss: high", {"loss"}, [r"(loss): (\w+)"]) == []


def test_given_regexes_reach_the_final_samples_and_a_termination_message_that_is_not_json():
    log = "{metricName: loss, metricValue: 0.3}\n"
    assert as_tuples(final_samples("StdoutLog", "loss", None, log, ["loss"], [BRACED])) == [("loss", 0.3, None)]
    message = "{metricName: loss, metricValue: 0.2}"
    assert as_tuples(final_samples("Auto", "loss", message, "", ["loss"], [BRACED])) == [("loss", 0.2, None)]
    assert not log_needed("Auto", message, "loss", [BRACED])
    assert log_needed("Auto", message, "loss")
