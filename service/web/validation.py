"""Field-by-field validation with Chinese messages, for forms and API bodies alike."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ..errors import LedgerError
from ..model import CampaignModel
from ..submissions import MAX_COUNT, check, parse_time

NOTE_MAX = 500

_PYDANTIC: dict[str, str] = {
    "missing": "必填",
    "int_parsing": "必须是整数",
    "int_type": "必须是整数",
    "int_from_float": "必须是整数",
    "string_type": "必须是文本",
    "greater_than_equal": "不能小于 {ge}",
    "less_than_equal": "不能大于 {le}",
    "string_too_short": "至少 {min_length} 个字符",
    "string_too_long": "最多 {max_length} 个字符",
    "string_pattern_mismatch": "格式不正确",
    "extra_forbidden": "不认识的字段",
    "json_invalid": "不是合法的 JSON",
    "model_attributes_type": "应为 JSON 对象",
    "dict_type": "应为 JSON 对象",
    "datetime_parsing": "不是合法的 ISO 8601 时间",
    "datetime_type": "不是合法的 ISO 8601 时间",
    "timezone_aware": "时间须带时区",
}


def chinese_errors(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        template = _PYDANTIC.get(str(err.get("type")), "取值无效")
        ctx = dict(err.get("ctx") or {})
        try:
            message = template.format(**ctx)
        except (KeyError, IndexError):
            message = template
        out.append({"field": ".".join(loc) or "请求", "message": message})
    return out


_LEDGER_FIELDS = {
    "unit": "单位",
    "obligation": "事项",
    "period": "周期",
    "count": "数量",
}


def submission_problems(
    model: CampaignModel, unit: str, obligation: str, period: str, count: int
) -> dict[str, str]:
    """The domain check (service/submissions.check) as {field: Chinese message}."""
    try:
        check(model, unit, obligation, period, count)
    except LedgerError as exc:
        field, _, _detail = str(exc).partition(": ")
        messages = {
            "unit": "该单位不存在或无需报送此事项",
            "obligation": "没有这个报送事项",
            "period": "该事项没有这个周期",
            "count": f"数量须在 1 到 {MAX_COUNT} 之间",
        }
        return {field: messages.get(field, "取值无效")}
    return {}


def form_int(form: Mapping[str, Any], name: str, errors: dict[str, str], default: int = 1) -> int:
    raw = str(form.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        errors[name] = "必须是整数"
        return default
    if not 1 <= value <= MAX_COUNT:
        errors[name] = f"须在 1 到 {MAX_COUNT} 之间"
    return value


def form_text(
    form: Mapping[str, Any], name: str, errors: dict[str, str], *, required: bool, limit: int
) -> str:
    value = str(form.get(name) or "").strip()
    if required and not value:
        errors[name] = "必填"
    elif len(value) > limit:
        errors[name] = f"最多 {limit} 个字符"
    return value


def form_time(
    form: Mapping[str, Any], name: str, errors: dict[str, str], tz: str
) -> datetime | None:
    raw = str(form.get(name) or "").strip()
    if not raw:
        return None
    try:
        return parse_time(raw, tz)
    except ValueError:
        errors[name] = "不是合法的时间（例如 2023-06-21T10:00）"
        return None


FIELD_LABEL = {
    **_LEDGER_FIELDS,
    "note": "备注",
    "at": "报送时间",
    "reason": "原因",
    "submission_id": "报送记录编号",
    "name": "用户名",
    "password": "密码",
    "key": "幂等键",
}
