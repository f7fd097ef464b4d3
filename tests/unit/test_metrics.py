"""Reading trial metrics: the termination message and stdout lines (hpo_operator.core.metrics)."""

import pytest

from hpo_operator.api.parameters import METRIC_NAME_PATTERN
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


@pytest.mark.parametrize("name", ["Validation-accuracy", "loss/train", "top-5.acc", "_x", "a"])
def test_every_metric_name_the_spec_takes_is_read_whole_from_a_name_value_pair(name):
    # The objective's names are not placeholders: they may hold what this reader takes (api.parameters).
    assert re.match(METRIC_NAME_PATTERN, name)
    assert as_tuples(parse_line(f"epoch 3: {name}=0.5, other-{name}=1", {name})) == [(name, 0.5, None)]
    assert parse_termination_message(json.dumps({name: 0.25}), {name})[0].value == 0.25


@pytest.mark.parametrize("name", ["Validation accuracy", "-loss", "5x", "a=b", "a,b"])
def test_a_name_the_reader_would_split_or_not_take_is_not_a_metric_name(name):
    assert not re.match(METRIC_NAME_PATTERN, name)


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


# --- RE2, and what a hostile trial prints --------------------------------------------------------

import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from pydantic import ValidationError  # noqa: E402

from hpo_operator.api.regex import MAX_PROGRAM_SIZE, compile_format  # noqa: E402
from hpo_operator.api.spec import MetricsCollector  # noqa: E402
from hpo_operator.core.metrics import (  # noqa: E402
    LINE_SECONDS,
    MAX_LINE_BYTES,
    MAX_STEP,
    Budget,
    LineReader,
    Notes,
    read_final,
    read_running,
    stamp_nanos,
)

FIVE_THOUSAND_DIGITS = "1" * 5000


@pytest.mark.parametrize(
    "pattern, reason",
    [
        (r"(\w+)=(?=\d)(\d+)", "invalid perl operator: (?="),
        (r"(\w+)=(\d)\1", "invalid escape sequence: \\1"),
        (r"(\w+)=(\d+)\Z", "invalid escape sequence: \\Z"),
        (r"(\w+)=(?<!x)(\d+)", "invalid perl operator: (?<!"),
    ],
)
def test_a_metrics_format_re2_cannot_take_is_refused_with_re2s_reason(pattern, reason):
    with pytest.raises(ValidationError) as e:
        MetricsCollector.model_validate({"metricsFormat": [pattern]})
    assert "metricsFormat[0]" in str(e.value) and f"not a regular expression RE2 accepts: {reason}" in str(e.value)


def test_a_metrics_format_too_large_for_re2s_bound_is_refused():
    with pytest.raises(ValidationError, match=rf"instructions, more than {MAX_PROGRAM_SIZE}|pattern too large"):
        MetricsCollector.model_validate({"metricsFormat": [r"(\pL{20})(\pN{20})"]})


def test_katibs_default_format_compiles_with_re2():
    assert MetricsCollector.model_validate({"metricsFormat": [KATIB_DEFAULT]}).metrics_format == [KATIB_DEFAULT]
    assert compile_format(KATIB_DEFAULT).programsize <= MAX_PROGRAM_SIZE


def test_re2_reads_katibs_format_and_an_exponential_pattern_on_a_200000_character_line_in_linear_time():
    """Python's re takes minutes on the first (quadratic: 3 s at 20,000 characters) and forever on
    the second (exponential: 2.4 s at 29); RE2 reads both in one linear pass. Run in a subprocess
    with a generous timeout rather than timed."""
    program = (
        "from hpo_operator.api.regex import compile_format\n"
        f"k = compile_format({KATIB_DEFAULT!r})\n"
        "e = compile_format(r'(\\w+)=((\\d+)*)x')\n"
        "line = ('1' * 200000).encode()\n"
        "assert k.findall(line) == [] and e.findall(b'loss=' + line) == []\n"
        "assert e.findall(b'loss=' + line + b'x')[0][0] == b'loss'\n"
        "print('done')\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "done", done.stderr


def test_a_line_longer_than_the_cap_is_not_read_and_is_counted():
    notes, budget = Notes(), Budget()
    reader = LineReader(["loss"], [KATIB_DEFAULT])
    long_line = "loss=" + "1" * 200_000
    assert reader.line(long_line, notes, budget) == []
    assert (notes.long_lines, notes.longest) == (1, 200_005)
    at_the_cap = "loss=0.5 " + "x" * (MAX_LINE_BYTES - 9)
    assert reader.line(at_the_cap, notes, budget) == [Sample("loss", 0.5)]
    # Bytes, not characters: 4,100 four-byte characters are 16,400 bytes.
    assert LineReader(["loss"]).line("loss=0.5 " + "\U0001f600" * 4100, notes, Budget()) == []
    assert notes.long_lines == 2
    assert notes.skipped() == f"not read: 2 lines longer than {MAX_LINE_BYTES} bytes (the longest 200005)"


class Ticks:
    """A clock that advances a fixed step each time it is read: the reader reads it before each
    search, so its reading counts the searches made."""

    def __init__(self, step: float):
        self.step, self.reads = step, 0

    def __call__(self) -> float:
        self.reads += 1
        return self.reads * self.step


def test_a_line_whose_regexes_take_too_long_is_not_read_and_is_counted():
    notes = Notes()
    # An ordinary long line: 1,500 name=value pairs in Katib's format, all read (about 10 ms).
    line = " ".join(f"m{i}={i}" for i in range(1500)) + " loss=0.5"
    assert len(line) < MAX_LINE_BYTES
    assert LineReader(["loss"], [KATIB_DEFAULT]).line(line, notes, Budget()) == [Sample("loss", 0.5)]
    assert notes.costly_lines == 0
    # A pattern that finds a match at every byte and scans to the line's end for each (quadratic in
    # its matches: 6 s for this line): stopped once the line's time is spent, here after 5 searches.
    clock = Ticks(LINE_SECONDS / 5)
    assert LineReader(["a"], [r"(a)((?:a*b)?)"]).line("a" * MAX_LINE_BYTES, notes, Budget(None, clock)) == []
    assert notes.costly_lines == 1 and clock.reads <= 8
    assert "1 line that metricsFormat could not read" in notes.skipped()
    # With the thread's own clock, it stops as well.
    assert LineReader(["a"], [r"(a)((?:a*b)?)"]).line("a" * MAX_LINE_BYTES, notes, Budget()) == []
    assert notes.costly_lines == 2


def test_a_5000_digit_number_is_no_sample_and_says_why():
    message = f'{{"loss": {FIVE_THOUSAND_DIGITS}, "accuracy": 0.5}}'
    assert parse_termination_message(message, WANTED) == [Sample("accuracy", 0.5)]
    output = read_final("Auto", "loss", message, f'{{"loss": {FIVE_THOUSAND_DIGITS}}}\n', WANTED)
    assert output.latest == {"accuracy": Sample("accuracy", 0.5)}
    assert output.notes.unreadable_text(["loss"]) == (
        "the value of loss could not be read as a number: '111111111111111111111111'… (5000 characters)"
    )
    # The same number in a JSON line of the log, as a step, and in name=value form.
    assert parse_log(f'{{"step": {FIVE_THOUSAND_DIGITS}, "loss": 0.5}}', ["loss"]) == [Sample("loss", 0.5)]
    assert parse_log(f"step={FIVE_THOUSAND_DIGITS} loss=0.5\nloss={FIVE_THOUSAND_DIGITS}", ["loss"]) == [
        Sample("loss", 0.5)
    ]


def test_a_value_that_is_no_number_is_named_with_what_it_was():
    output = read_final("StdoutLog", "loss", None, 'loss=abc\n{"loss": "n/a"}\n{"loss": [1]}\n', WANTED)
    assert output.latest == {} and output.notes.unreadable_text(["loss"]) == (
        "the value of loss could not be read as a number: 'abc'"  # the first one
    )
    notes = Notes()
    LineReader(WANTED).line('{"loss": null, "accuracy": {"a": 1}}', notes, Budget())
    assert notes.unreadable == {"loss": "null", "accuracy": "a JSON object"}


# The name=value pattern before RE2 (Python's re, with a lookahead RE2 does not have): the new
# reader must find exactly what it found.
OLD_PAIR = re.compile(
    r"(?:^|[\s,;])([A-Za-z_][A-Za-z0-9_./-]*)=([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf|nan)(?=$|[\s,;])"
)


def old_pairs(line: str, wanted: set[str]) -> list[tuple[str, float, int | None]]:
    line = line.strip()
    if line.startswith("{"):
        return as_tuples(parse_line(line, wanted))  # (JSON lines: not the pattern's business)
    pairs = OLD_PAIR.findall(line)
    values = dict(pairs)
    step = None
    try:
        number = float(values["step"]) if "step" in values else None
        if number is not None and 0 <= number <= MAX_STEP and number == int(number):
            step = int(number)
    except (ValueError, OverflowError):
        pass
    out = []
    for name, raw in pairs:
        try:
            value = float(raw)
        except (ValueError, OverflowError):
            continue
        if name in wanted and value == value and abs(value) != float("inf"):
            out.append((name, value, step))
    return out


PIECES = [
    "loss",
    "acc",
    "step",
    "val/loss",
    "top-5",
    "x.y",
    "_a",
    "9a",
    "=",
    "==",
    "0.5",
    "5.",
    ".5",
    "1e3",
    "1e",
    "-2",
    "+3",
    "inf",
    "-inf",
    "nan",
    "NaN",
    "abc",
    "١٢",
    "٣.٥",
    " ",
    "  ",
    ",",
    ";",
    "\t",
    "\u00a0",
    "\u3000",
    "\x0b",
    ":",
    "(",
    ")",
    "{",
    "1_000",
    "e5",
    "E-2",
    "..",
    "'",
    "\x00",
]


def test_the_name_value_form_reads_what_the_python_re_pattern_read():
    rng = random.Random(32)
    wanted = {"loss", "acc", "val/loss", "top-5", "x.y", "_a"}
    for _ in range(20000):
        line = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 12)))
        assert as_tuples(parse_line(line, wanted)) == old_pairs(line, wanted), repr(line)


HOSTILE = [
    FIVE_THOUSAND_DIGITS,
    "9" * 400,
    "1e99999",
    "-1e-99999",
    "[" * 5000,
    "{" * 5000,
    '{"a":' * 3000,
    '"',
    "\\",
    "\\u00",
    "\ud800",
    "\udfff",
    "\x00",
    "\r",
    "\n",
    "\u2028",
    "\x85",
    "NaN",
    "Infinity",
    "-Infinity",
    "null",
    "true",
    "{}",
    "[]",
    "loss",
    "step",
    "accuracy",
    "=",
    ":",
    ",",
    " ",
    "0.5",
    "-0",
    "1e308",
    "2e308",
    "9007199254740993",
    "2024-01-02T03:04:05.123456789Z ",
    "2024-13-45T99:99:99Z ",
    "9999-12-31T23:59:59.999999999+23:59 ",
    "0000-01-01T00:00:00Z ",
    "x" * 20000,
    "\U0001f600" * 5000,
    "٣",
]


def hostile_text(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(0, 8)):
        piece = rng.choice(HOSTILE)
        if rng.random() < 0.3:
            piece = f'{{"loss": {piece}, "step": {rng.choice(HOSTILE)}}}'
        elif rng.random() < 0.3:
            piece = f"{rng.choice(['loss', 'step', 'accuracy'])}={piece}"
        parts.append(piece)
    return rng.choice(["", " ", "\n", ",", "\r\n"]).join(parts)


def assert_valid(samples: list[Sample], wanted: list[str]) -> None:
    """What the Trial's status would take: finite values, whole steps the API server accepts, RFC
    3339 timestamps, names the experiment asked for."""
    for s in samples:
        assert s.name in wanted and isinstance(s.value, float) and abs(s.value) < float("inf")
        assert s.step is None or (isinstance(s.step, int) and 0 <= s.step <= MAX_STEP)
        assert s.timestamp is None or stamp_nanos(s.timestamp) is not None


@pytest.mark.parametrize("formats", [(), (KATIB_DEFAULT,), (r"(\w+)=((\d+)*)x", BRACED)])
def test_no_exception_escapes_any_reader_of_hostile_output(formats):
    """Seeded random text built from what breaks parsers (huge and deep numbers, surrogates, line
    breaks the API server does not cut at, broken times): every reader returns, and what it returns
    is valid for the status."""
    rng = random.Random(1 + len(formats))
    wanted = ["loss", "accuracy"]
    reader = LineReader(wanted, formats)
    for _ in range(600):
        text = hostile_text(rng)
        notes, budget = Notes(), Budget(rng.choice([None, 0, 0.001, LINE_SECONDS]))
        assert_valid(reader.line(text, notes, budget), wanted)
        assert_valid(reader.message(text, notes, budget), wanted)
        for timestamps in (False, True):
            for samples in reader.lines(text.split("\n"), notes, budget, timestamps):
                assert_valid(samples, wanted)
            assert_valid(parse_log(text, wanted, timestamps=timestamps, formats=formats), wanted)
        for source in ("Auto", "StdoutLog", "TerminationMessage"):
            output = read_final(source, "loss", text, text, wanted, formats)
            assert_valid(list(output.latest.values()) + list(output.history), wanted)
            assert isinstance(output.notes.skipped(), str) and len(output.notes.unreadable_text(wanted)) < 500
        output = read_running(text, wanted, formats)
        assert_valid(list(output.latest.values()) + list(output.history), wanted)
        stamp_nanos(text)
        json.dumps(output.notes.unreadable)  # what goes into a message is plain text


def test_a_timestamp_is_read_only_where_the_api_server_put_it():
    # A line break the API server does not cut at (here a line separator) starts no new line, and
    # its text is never taken for a time.
    log = "2024-01-02T03:04:05.5Z epoch\u2028garbage loss=0.3\n2024-13-02T03:04:05Z loss=0.4\n"
    samples = parse_log(log, ["loss"], timestamps=True)
    assert samples == [Sample("loss", 0.3, None, "2024-01-02T03:04:05.5Z"), Sample("loss", 0.4)]


def test_a_long_termination_message_is_not_read_and_said():
    output = read_final("TerminationMessage", "loss", '{"loss": 0.5, "x": "' + "a" * MAX_LINE_BYTES + '"}', "", WANTED)
    assert output.latest == {} and output.notes.skipped().startswith("not read: the termination message (")


def test_a_budget_counts_the_cpu_time_of_each_thread_that_spends_it():
    """The loop makes the round's budget and its parsing threads spend it: each thread's CPU clock
    is its own, so the budget is paused in one and resumed in the next."""
    import threading
    import time

    budget = Budget(10.0)
    sum(range(200_000))  # this thread's clock moves on
    budget.pause()
    seen = []

    def parse() -> None:
        budget.resume()
        started = time.thread_time()
        while time.thread_time() - started < 0.02:
            pass
        seen.append(budget.spent())
        budget.pause()

    worker = threading.Thread(target=parse)
    worker.start()
    worker.join()
    assert 0.02 <= seen[0] < 1 and 0.02 <= budget.spent() < 1 and not budget.exhausted
