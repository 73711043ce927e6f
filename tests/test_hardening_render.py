"""Issue 8 (hardening), rendering and validation side.

- item 2: a template the sandbox allows but that burns CPU or memory is stopped by the
  render limits (service/sandbox.py) at validation, at reload and at send time;
- item 7: ``validate`` checks what would fail at send time, for every person, and the
  channels file;
- item 3: control characters in the schedule and the directory are located errors;
- item 11: plaintext credentials in the channels file are reported by ``validate``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from service.cli import app
from service.messages import sample_contexts
from service.model import load_model
from service.sandbox import BoundedEnvironment, RenderLimits, TemplateRenderLimit
from service.templates import Templates
from tests.conftest import SHANGHAI
from tests.test_daemon import SIGNAL_DEADLINE, RunningDaemon, schedule_text

ROOT = Path(__file__).resolve().parent.parent
SCHEDULE = ROOT / "schedules" / "jilin-2023.yaml"
CONTACTS = ROOT / "contacts"
TEMPLATES = ROOT / "templates"
QUICK = 5.0  # CPU seconds: a hostile template is refused well within this (limit: 1 s per render)

# Each one is fine for the stock Jinja2 sandbox and hangs it or exhausts memory.
HOSTILE = {
    "nested-range": "{% for i in range(100000) %}{% for j in range(100000) %}"
    "{% endfor %}{% endfor %}",
    "nested-list-loops": "{% set l = range(100000)|list %}"
    "{% for a in l %}{% for b in l %}{% endfor %}{% endfor %}",
    "lipsum": "{{ lipsum(10**6) }}",
    "string-times": "{{ 'x' * 10**9 }}",
    "list-times": "{{ ([0] * 10**9)|length }}",
    "power": "{{ 10 ** (10 ** 8) }}",
    "tilde-doubling": "{% set s = 'x' * 60000 %}" + "{% set s = s ~ s %}" * 30,
    "capture-doubling": "{% set s = 'x' * 60000 %}" + "{% set s %}{{ s }}{{ s }}{% endset %}" * 30,
    "loop-into-capture": "{% set s %}{% for i in range(100000) %}"
    + "y" * 20000
    + "{% endfor %}{% endset %}{{ s|length }}",
    "replace-empty": "{% set s = 'x' * 60000 %}{{ s.replace('', s) }}",
    "join-filter": "{{ range(100000)|join('x' * 60000) }}",
    "center": "{{ 'x'|center(10**9) }}",
    "printf-width": "{{ '%01000000000d'|format(1) }}",
    "str-format-width": "{{ '{:>1000000000}'.format(1) }}",
    "macro-fork": "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}"
    "{% endmacro %}{{ f(60) }}",
    "shared-lists": "{% set l = [1] %}" + "{% set l = [l, l] %}" * 45 + "{{ l }}",
    "wordwrap-long-word": "{{ ('x' * 1900000)|wordwrap(1) }}",
    "urlize-large": "{{ ('a.b ' * 900000)|urlize }}",
}


def bounded(seconds: float = 1.0, max_chars: int = 4_000_000) -> BoundedEnvironment:
    return BoundedEnvironment(limits=RenderLimits(seconds, max_chars))


def copy_templates(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    shutil.copytree(TEMPLATES, folder)
    return folder


def validate(templates: Path, *extra: str) -> Result:
    args = ["--schedule", str(SCHEDULE), "--contacts", str(CONTACTS)]
    return CliRunner().invoke(app, [*args, "--templates", str(templates), *extra, "validate"])


# --- item 2: bounded rendering ---------------------------------------------------------------


@pytest.mark.parametrize("source", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_template_is_stopped_by_the_render_limits(source: str) -> None:
    """Each CPU/memory attack ends in TemplateRenderLimit (or an error) within the limit."""
    env = bounded(seconds=0.5)
    started = time.process_time()  # the limits are on CPU time: a loaded machine may not fail this
    with pytest.raises(Exception) as caught:
        env.render_bounded(env.from_string(source), {})
    assert time.process_time() - started < 2.0
    assert isinstance(caught.value, TemplateRenderLimit | OverflowError) or (
        "lipsum" in str(caught.value)
    ), repr(caught.value)


@pytest.mark.parametrize("name", ["nested-range", "string-times", "capture-doubling", "macro-fork"])
def test_validate_refuses_a_hostile_template_quickly_with_its_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """``service validate`` ends in seconds with exit 1 naming the template file and line."""
    monkeypatch.delenv("SERVICE_CHANNELS_FILE", raising=False)
    templates = copy_templates(tmp_path)
    target = templates / "email" / "reminder.txt"
    lines = target.read_text(encoding="utf-8").count("\n")
    target.write_text(target.read_text(encoding="utf-8") + HOSTILE[name] + "\n", "utf-8")
    started = time.process_time()  # the limits are on CPU time: a loaded machine may not fail this
    result = validate(templates)
    assert time.process_time() - started < QUICK
    assert result.exit_code == 1, result.output
    assert f"{target}:{lines + 1}: reminder: TemplateRenderLimit" in result.output


def test_validate_subprocess_with_nested_loops_ends_instead_of_hanging(tmp_path: Path) -> None:
    """The real command line returns (exit 1) instead of spinning forever."""
    templates = copy_templates(tmp_path)
    target = templates / "email" / "_footer.txt"
    target.write_text(HOSTILE["nested-range"] + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVICE_")}
    env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, "-m", "service", "--schedule", str(SCHEDULE)]
    cmd += ["--contacts", str(CONTACTS), "--templates", str(templates), "validate"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=30, check=False)
    assert done.returncode == 1, done.stderr
    assert f"{target}:1:" in done.stderr
    # One footer shared by every kind: the checks stop after twice the per-render limit.
    assert "not checked: the time for checking ran out" in done.stderr


def test_render_at_send_time_is_bounded_for_data_dependent_loops(tmp_path: Path) -> None:
    """A loop sized by the message data fails that message's render, not the process."""
    templates = copy_templates(tmp_path)
    target = templates / "email" / "reminder.txt"
    target.write_text(
        "{% for i in range(items|length * 50000) %}{% for j in range(items|length * 50000) %}"
        "{% endfor %}{% endfor %}",
        encoding="utf-8",
    )
    model = load_model(SCHEDULE, CONTACTS)
    ctx = dict(sample_contexts(model))["reminder"]
    loaded = Templates(templates, RenderLimits(seconds=0.3))
    started = time.process_time()  # the limits are on CPU time: a loaded machine may not fail this
    with pytest.raises(TemplateRenderLimit):
        loaded.render("reminder", "email", ctx)
    assert time.process_time() - started < 2.0


def test_render_time_is_cpu_time_not_waiting_time() -> None:
    """A render blocked without burning CPU (a starved process) is not failed for it."""
    env = bounded(seconds=0.2)
    blocked = threading.Event()
    template = env.from_string("{{ wait(0.6) }}{% for i in range(10) %}{{ i }}{% endfor %}")
    assert env.render_bounded(template, {"wait": blocked.wait}).endswith("0123456789")


def test_render_output_is_capped_in_characters() -> None:
    """Output past max_chars is refused even when every piece is small."""
    env = bounded(max_chars=10_000)
    template = env.from_string("{% for i in range(2000) %}0123456789{% endfor %}")
    with pytest.raises(TemplateRenderLimit):
        env.render_bounded(template, {})
    # The budget counts values built and output alike: 4,000 built + 4,000 output fit.
    assert env.render_bounded(env.from_string("{{ 'x' * 4000 }}"), {}) == "x" * 4000


def test_the_real_templates_render_the_same_under_the_limits() -> None:
    """The shipped templates render identically with the bounded environment."""
    model = load_model(SCHEDULE, CONTACTS)
    loaded = Templates(TEMPLATES)
    for kind, ctx in sample_contexts(model):
        text = loaded.render(kind, "email", ctx).text
        assert text == loaded.text_env.get_template(f"email/{kind}.txt").render(ctx)


@pytest.fixture
def hostile_daemon(tmp_path: Path) -> Iterator[RunningDaemon]:
    """``service run --tick 3600`` on a copy of the templates, file outbox."""
    today = datetime.now(SHANGHAI).date()
    schedule = tmp_path / "schedule.yaml"
    schedule.write_text(schedule_text(today), encoding="utf-8")
    contacts = tmp_path / "contacts"
    shutil.copytree(CONTACTS, contacts)
    templates = copy_templates(tmp_path)
    state, log_file = tmp_path / "state", tmp_path / "daemon.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVICE_")}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "service", "--schedule", str(schedule)]
    cmd += ["--contacts", str(contacts), "--templates", str(templates)]
    cmd += ["--state-dir", str(state), "run", "--tick", "3600"]
    with log_file.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    running = RunningDaemon(proc, schedule, contacts, state, log_file)
    try:
        yield running
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=SIGNAL_DEADLINE)


def test_hot_reload_of_a_hostile_template_is_refused_and_sigterm_still_stops(
    hostile_daemon: RunningDaemon, tmp_path: Path
) -> None:
    """SIGHUP with a CPU-burning template: reload refused, old config kept, SIGTERM exits 0."""
    daemon = hostile_daemon
    daemon.started()
    target = tmp_path / "templates" / "email" / "_footer.txt"
    target.write_text(HOSTILE["nested-range"] + "\n", encoding="utf-8")
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_log("reload refused")
    assert "TemplateRenderLimit" in daemon.log()
    assert "configuration reloaded" not in daemon.log()
    assert daemon.proc.poll() is None
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=SIGNAL_DEADLINE) == 0
    assert "daemon stopped" in daemon.log()


# --- item 7: validate promises only what sending keeps ---------------------------------------

ALIYUN_SECRET_ENV = "HARDENING_TEST_ALIYUN_SECRET"
ALL_KINDS = ("reminder", "overdue", "escalation", "notice", "digest")


@pytest.fixture
def contacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the example directory to spoil, and no channels file from the environment."""
    monkeypatch.delenv("SERVICE_CHANNELS_FILE", raising=False)
    folder = tmp_path / "contacts"
    shutil.copytree(CONTACTS, folder)
    return folder


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8", newline="")


def validate_with(contacts: Path, *extra: str, schedule: Path = SCHEDULE) -> Result:
    args = ["--schedule", str(schedule), "--contacts", str(contacts), "--templates"]
    return CliRunner().invoke(app, [*args, str(TEMPLATES), *extra, "validate"])


def aliyun_channels(tmp_path: Path, extra: str = "") -> Path:
    refs = "".join(
        f"    {kind}: {{code: SMS_{i}, params: [{', '.join(_params(kind))}]}}\n"
        for i, kind in enumerate(ALL_KINDS)
    )
    path = tmp_path / "channels.yaml"
    path.write_text(
        "sms:\n  backend: aliyun\n  access_key_id: LTAI-test\n"
        f"  secret_env: {ALIYUN_SECRET_ENV}\n  sign_name: 吉林省应急管理厅\n"
        f"{extra}  templates:\n{refs}",
        encoding="utf-8",
    )
    return path


def _params(kind: str) -> list[str]:
    return list(Templates(TEMPLATES).sms.templates[kind].params)


def test_validate_checks_the_sms_of_every_person_not_only_the_first(contacts: Path) -> None:
    """A 15-character name for the second person fails validate, located at its line."""
    people = contacts / "people.csv"
    replace_in(people, "张建国", "张" * 15)  # changchun-head, line 3
    result = validate_with(contacts)
    assert result.exit_code == 1, result.output
    assert f"{people}:3: name: person changchun-head: SMS escalation: variable name" in (
        result.output
    )


def test_validate_checks_every_person_when_the_template_transforms_the_name(
    contacts: Path, tmp_path: Path
) -> None:
    """A variable computed from the name (not just copying it) is rendered per person."""
    people = contacts / "people.csv"
    replace_in(people, "刘丽华", "刘" * 11)  # jilin-city-liaison, line 4: 11 + "11" > 12
    templates = copy_templates(tmp_path)
    replace_in(
        templates / "sms.yaml",
        'name: "{{ recipient.name }}"',
        'name: "{{ recipient.name }}{{ recipient.name|length }}"',
    )
    args = ["--schedule", str(SCHEDULE), "--contacts", str(contacts)]
    result = CliRunner().invoke(app, [*args, "--templates", str(templates), "validate"])
    assert result.exit_code == 1, result.output
    assert f"{people}:4: name: person jilin-city-liaison: SMS reminder: variable name is 13" in (
        result.output
    )


def test_validate_uses_the_provider_account_variable_limit(
    contacts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An account limit of 2 in the channels file refuses 3-character names."""
    monkeypatch.setenv(ALIYUN_SECRET_ENV, "test-secret")
    channels = aliyun_channels(tmp_path, "  max_param_len: 2\n")
    result = validate_with(contacts, "--channels", str(channels))
    assert result.exit_code == 1, result.output
    assert "person changchun-liaison: SMS reminder: variable name is 3 characters" in (
        result.output
    )
    assert "the limit is 2" in result.output


def test_validate_accepts_the_example_with_a_provider_at_its_default_limit(
    contacts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example directory fits Alibaba's default 20-character variables."""
    monkeypatch.setenv(ALIYUN_SECRET_ENV, "test-secret")
    result = validate_with(contacts, "--channels", str(aliyun_channels(tmp_path)))
    assert result.exit_code == 0, result.output


def test_validate_reports_an_unset_sms_secret_by_its_variable_name(
    contacts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A secret variable the channels file names but nobody set is a validate error."""
    monkeypatch.delenv(ALIYUN_SECRET_ENV, raising=False)
    channels = aliyun_channels(tmp_path)
    result = validate_with(contacts, "--channels", str(channels))
    assert result.exit_code == 1, result.output
    assert f"{channels}:1: sms: " in result.output
    assert ALIYUN_SECRET_ENV in result.output
    assert "Traceback" not in result.output


def test_validate_reports_an_unset_smtp_password_by_its_variable_name(
    contacts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SMTP password variable, when unset, is named by validate."""
    monkeypatch.delenv("HARDENING_TEST_SMTP_PASSWORD", raising=False)
    channels = tmp_path / "channels.yaml"
    channels.write_text(
        "email:\n  backend: smtp\n  host: smtp.example.org\n  port: 587\n"
        "  security: starttls\n  from_addr: noreply@example.org\n  username: robot\n"
        "  password_env: HARDENING_TEST_SMTP_PASSWORD\n",
        encoding="utf-8",
    )
    result = validate_with(contacts, "--channels", str(channels))
    assert result.exit_code == 1, result.output
    assert f"{channels}:1: email: " in result.output
    assert "HARDENING_TEST_SMTP_PASSWORD" in result.output


def test_validate_refuses_a_line_break_in_the_channels_from_name(
    contacts: Path, tmp_path: Path
) -> None:
    """CR/LF in the channels file's from_name is found by validate, not at every send."""
    channels = tmp_path / "channels.yaml"
    channels.write_text(
        'from_addr: noreply@example.org\nfrom_name: "报送提醒\\r\\nBcc: x@example.net"\n',
        encoding="utf-8",
    )
    result = validate_with(contacts, "--channels", str(channels))
    assert result.exit_code == 1, result.output
    assert f"{channels}:2: from: " in result.output
    assert "CR or LF" in result.output


def test_validate_reads_the_channels_file_from_the_environment(
    contacts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SERVICE_CHANNELS_FILE is the same as --channels for validate."""
    channels = tmp_path / "channels.yaml"
    channels.write_text("from_addr: 'not an address'\nfrom_name: x\n", encoding="utf-8")
    monkeypatch.setenv("SERVICE_CHANNELS_FILE", str(channels))
    result = validate_with(contacts)
    assert result.exit_code == 1, result.output
    assert str(channels) in result.output


def test_validate_refuses_a_non_ascii_mailbox(contacts: Path) -> None:
    """An internationalised address (no SMTPUTF8 when sending) is a located error."""
    people = contacts / "people.csv"
    replace_in(people, "changchun-head@example.org", "张建国@例子.中国")
    result = validate_with(contacts)
    assert result.exit_code == 1, result.output
    assert f"{people}:3: email: " in result.output
    assert "ASCII" in result.output


def test_validate_refuses_a_name_too_long_for_a_header(contacts: Path) -> None:
    """A 1,200-character name is refused with its line."""
    people = contacts / "people.csv"
    replace_in(people, "李海燕", "李" * 1200)
    result = validate_with(contacts)
    assert result.exit_code == 1, result.output
    assert f"{people}:2: name: " in result.output


def test_validate_refuses_a_line_break_in_a_person_name(contacts: Path) -> None:
    """A quoted CR/LF inside a CSV name is a located error, not a failed send."""
    people = contacts / "people.csv"
    replace_in(people, "张建国", '"张建\r\n国"')
    result = validate_with(contacts)
    assert result.exit_code == 1, result.output
    assert f"{people}:4: name: " in result.output
    assert "U+000D" in result.output


# --- item 3 (validation): control characters are located errors ------------------------------


@pytest.mark.parametrize(
    ("char", "code"),
    [("\x00", "U+0000"), ("\x0b", "U+000B"), ("\x7f", "U+007F"), ("\u202e", "U+202E")],
    ids=["nul", "vertical-tab", "del", "bidi-override"],
)
def test_control_character_in_a_unit_name_is_located(contacts: Path, char: str, code: str) -> None:
    """NUL, VT, DEL or a bidi override in a unit name: file, line and field are named."""
    units = contacts / "units.csv"
    replace_in(units, "长春市安委会办公室", f"长春市{char}安委会办公室")  # line 3
    result = validate_with(contacts)
    assert result.exit_code == 1, result.output
    assert f"{units}:3: name: " in result.output
    assert code in result.output


@pytest.mark.parametrize("char", ["\x00", "\u2028", "\x1b"], ids=["nul", "u2028", "escape"])
def test_control_character_in_a_schedule_title_is_located(
    contacts: Path, tmp_path: Path, char: str
) -> None:
    """A control character in an obligation title is refused at its line and field."""
    text = SCHEDULE.read_text(encoding="utf-8")
    old = "title: 报送“安全生产月”活动联络员反馈表"
    assert old in text
    line = text[: text.index(old)].count("\n") + 1
    escaped = char.encode("unicode_escape").decode("ascii")
    schedule = tmp_path / "schedule.yaml"
    schedule.write_text(text.replace(old, f'title: "报送{escaped}活动联络员反馈表"'), "utf-8")
    result = validate_with(contacts, schedule=schedule)
    assert result.exit_code == 1, result.output
    assert f"{schedule}:{line}: obligations[0].title: " in result.output


def test_line_breaks_stay_allowed_where_a_field_spans_lines(tmp_path: Path) -> None:
    """how_to_submit may hold LF and tab (a multi-line instruction in the e-mail body)."""
    text = SCHEDULE.read_text(encoding="utf-8")
    old = "how_to_submit: 填写附件1后发送至省安委会办公室邮箱 L18644975330@163.com\n"
    assert old in text
    schedule = tmp_path / "schedule.yaml"
    new = 'how_to_submit: "第一步\\n\\t第二步：填写附件1后发送"\n'
    schedule.write_text(text.replace(old, new), "utf-8")
    model = load_model(schedule, CONTACTS)
    assert model.schedule.obligations[0].how_to_submit == "第一步\n\t第二步：填写附件1后发送"


# --- item 11 (validate side): plaintext credentials ------------------------------------------


def _registry_refuses_plaintext() -> bool:
    from service.channels.registry import SmtpConfig

    return "allow_plaintext" in SmtpConfig.model_fields


@pytest.mark.skipif(
    not _registry_refuses_plaintext(),
    reason="the plaintext rule itself lives in the registry's parser (branch h-store)",
)
@pytest.mark.parametrize(
    "channels_yaml",
    [
        "email:\n  backend: smtp\n  host: smtp.example.org\n  port: 25\n  security: none\n"
        "  from_addr: noreply@example.org\n  username: robot\n"
        "  password_env: HARDENING_TEST_SMTP_PASSWORD\n",
        "sms:\n  backend: aliyun\n  access_key_id: LTAI-test\n"
        f"  secret_env: {ALIYUN_SECRET_ENV}\n  sign_name: 吉林省应急管理厅\n"
        "  endpoint: http://sms.example.org/\n  templates: {}\n",
    ],
    ids=["smtp-none-with-password", "http-sms-endpoint"],
)
def test_validate_refuses_plaintext_credentials(
    contacts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, channels_yaml: str
) -> None:
    """validate reports the registry's refusal of plaintext credentials with the file."""
    monkeypatch.setenv("HARDENING_TEST_SMTP_PASSWORD", "pw")
    monkeypatch.setenv(ALIYUN_SECRET_ENV, "secret")
    channels = tmp_path / "channels.yaml"
    channels.write_text(channels_yaml, encoding="utf-8")
    result = validate_with(contacts, "--channels", str(channels))
    assert result.exit_code == 1, result.output
    assert f"{channels}:" in result.output
