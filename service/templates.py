"""Message templates: Jinja2 in a sandbox, strict about undefined names, checked up front.

Email has a subject, a text body and an HTML alternative per message kind; SMS has a
registered template (``templates/sms.yaml``) whose short variables are computed here, and
whose preview text is checked against the 70-character single-SMS limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, Template
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError, Problem
from .sandbox import BoundedEnvironment, RenderLimits, cpu_clock
from .sources import load_yaml, problems_from_validation, to_plain

KINDS = ("reminder", "overdue", "escalation", "notice", "digest")
MAX_TEMPLATE_BYTES = 64 * 1024  # the sandbox limits reach, not CPU; keep templates small
_VAR = re.compile(r"\$\{([a-zA-Z_][a-zA-Z0-9_]*)\}")


class SmsTemplateSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    params: dict[str, str]
    text: str


class SmsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    signature: str = Field(min_length=2, max_length=12)
    max_param_length: int = Field(default=12, ge=1, le=35)
    templates: dict[str, SmsTemplateSpec]


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str | None = None
    sms_params: dict[str, str] | None = None


def sms_length(text: str, signature: str) -> int:
    return len(f"【{signature}】{text}")


def sms_segments(text: str, signature: str) -> int:
    n = sms_length(text, signature)
    return 1 if n <= 70 else -(-n // 67)


class Templates:
    """All templates of one folder, compiled once."""

    def __init__(self, folder: Path, limits: RenderLimits | None = None) -> None:
        self.folder = folder
        self.limits = limits or RenderLimits()
        for path in folder.rglob("*"):
            if path.is_file() and path.stat().st_size > MAX_TEMPLATE_BYTES:
                raise ConfigError([Problem(str(path), None, "", "template larger than 64 KB")])
        loader = FileSystemLoader(str(folder))
        common: dict[str, Any] = {
            "undefined": StrictUndefined,
            "loader": loader,
            "trim_blocks": True,
            "lstrip_blocks": True,
            # A reload builds a new Templates (SIGHUP); never stat the files per render.
            "auto_reload": False,
        }
        # Bounded: a template may loop or build text only within self.limits (sandbox.py).
        self.text_env = BoundedEnvironment(autoescape=False, limits=self.limits, **common)
        self.html_env = BoundedEnvironment(autoescape=True, limits=self.limits, **common)
        sms_path = folder / "sms.yaml"
        doc = load_yaml(sms_path)
        try:
            self.sms = SmsSpec.model_validate(to_plain(doc))
        except ValidationError as exc:
            raise ConfigError(problems_from_validation(sms_path, doc, exc)) from None
        self._email: dict[str, tuple[Template, Template, Template]] = {}
        self._sms_params = {
            kind: {name: self.text_env.from_string(expr) for name, expr in spec.params.items()}
            for kind, spec in self.sms.templates.items()
        }

    def render(
        self, kind: str, channel: str, ctx: dict[str, Any], deadline: float | None = None
    ) -> Rendered:
        """Render one message; each template render is bounded (TemplateRenderLimit), and all
        of them by ``deadline`` (on sandbox.cpu_clock) when given."""
        text_env, html_env = self.text_env, self.html_env
        if channel == "sms":
            params = {
                name: text_env.render_bounded(tpl, ctx, deadline).strip()
                for name, tpl in self._sms_params[kind].items()
            }
            text = _VAR.sub(lambda m: params[m.group(1)], self.sms.templates[kind].text)
            return Rendered(subject=f"SMS:{kind}", text=text, sms_params=params)
        templates = self._email.get(kind)
        if templates is None:
            templates = self._email[kind] = (
                self.text_env.get_template(f"email/{kind}.subject.txt"),
                self.text_env.get_template(f"email/{kind}.txt"),
                self.html_env.get_template(f"email/{kind}.html"),
            )
        subject_t, text_t, html_t = templates
        return Rendered(
            subject=" ".join(text_env.render_bounded(subject_t, ctx, deadline).split()),
            text=text_env.render_bounded(text_t, ctx, deadline),
            html=html_env.render_bounded(html_t, ctx, deadline),
        )

    def check_sms(self, kind: str, rendered: Rendered, where: str) -> list[Problem]:
        problems = []
        for name, value in (rendered.sms_params or {}).items():
            if len(value) > self.sms.max_param_length:
                problems.append(
                    Problem(
                        where,
                        None,
                        f"templates.{kind}.params.{name}",
                        f"value {value!r} is {len(value)} characters; the limit is "
                        f"{self.sms.max_param_length}",
                    )
                )
        if (n := sms_length(rendered.text, self.sms.signature)) > 70:
            problems.append(
                Problem(
                    where,
                    None,
                    f"templates.{kind}.text",
                    f"{n} characters with the signature: more than one SMS (70)",
                )
            )
        return problems


def _template_location(exc: BaseException, folder: Path) -> tuple[str | None, int | None]:
    """The template file and line an error came from (Jinja maps frames to templates)."""
    name = getattr(exc, "filename", None)
    line = getattr(exc, "lineno", None)
    if name and line:
        return str(name), int(line)
    root = str(folder.resolve())
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.startswith((root, str(folder))):
            name, line = filename, tb.tb_lineno
        tb = tb.tb_next
    return name, line


def check_templates(model: Any, folder: Path, limits: RenderLimits | None = None) -> Templates:
    """Render every kind on every channel against sample data; report all problems.

    Each render is bounded by ``limits``, and all of them together by twice its time: a
    hostile template delays a reload by seconds at most (the daemon's loop waits on it).
    """
    from .messages import sample_contexts  # local: messages imports this module

    templates = Templates(folder, limits)
    deadline = cpu_clock() + 2 * templates.limits.seconds
    problems: list[Problem] = []
    missing = [k for k in KINDS if k not in templates.sms.templates]
    problems += [
        Problem(str(folder / "sms.yaml"), None, f"templates.{k}", "missing") for k in missing
    ]
    for kind, ctx in sample_contexts(model):
        for channel in ("email", "sms"):
            if channel == "sms" and kind in missing:
                continue
            where = str(folder / ("sms.yaml" if channel == "sms" else f"email/{kind}.*"))
            if cpu_clock() > deadline:
                problems.append(
                    Problem(where, None, kind, "not checked: the time for checking ran out")
                )
                continue
            try:
                rendered = templates.render(kind, channel, ctx, deadline)
                if channel == "email" and ctx.get("link"):  # and without a link
                    templates.render(kind, channel, ctx | {"link": None}, deadline)
            except Exception as exc:  # sandbox refusals, undefined names, OverflowError…
                name, line = _template_location(exc, folder)
                problems.append(Problem(name or where, line, kind, f"{type(exc).__name__}: {exc}"))
                continue
            if channel == "sms":
                problems += templates.check_sms(kind, rendered, where)
    if problems:
        raise ConfigError(problems)
    return templates
