# ruff: noqa: E501  (a catalogue: one message per line reads better than split strings)
"""The CLI's words, in Simplified Chinese (default) and English (``--lang en``, ``LANG=en_*``).

A dictionary of (zh, en) pairs rather than gettext: the CLI has one small catalogue, two
languages, and help texts that Typer reads at import time; a .po/.mo toolchain would add a
build step for ~150 strings and would still need the early language decision made here.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from datetime import datetime, tzinfo

Lang = str  # "zh" | "en"
_lang: list[Lang] = []  # set once by the app's callback; empty: decided from the environment


def env_lang(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> Lang:
    """``--lang`` on the command line, else the locale (LC_ALL, LC_MESSAGES, LANG)."""
    args = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(args):
        if arg == "--lang" and i + 1 < len(args):
            return "en" if args[i + 1].lower().startswith("en") else "zh"
        if arg.startswith("--lang="):
            return "en" if arg.partition("=")[2].lower().startswith("en") else "zh"
    env = os.environ if environ is None else environ
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        if value := env.get(name):
            return "en" if value.startswith("en") else "zh"
    return "zh"


def set_lang(lang: Lang) -> None:
    _lang[:] = [lang]


def lang() -> Lang:
    return _lang[0] if _lang else env_lang()


def t(key: str, /, **kw: object) -> str:
    zh, en = CATALOGUE[key]
    text = en if lang() == "en" else zh
    return text.format(**kw) if kw else text


def help_text(key: str) -> str:
    """Help strings are read by Typer at import: decided from argv and the environment."""
    zh, en = CATALOGUE[key]
    return en if env_lang() == "en" else zh


# Outbox and status states.
STATE = {
    "pending": ("等待中", "pending"),
    "sending": ("发送中", "sending"),
    "sent": ("已发送", "sent"),
    "cancelled": ("已取消", "cancelled"),
    "stale": ("已过时", "stale"),
    "failed": ("失败", "failed"),
    "done": ("已完成", "done"),
    "outstanding": ("待报送", "outstanding"),
    "overdue": ("逾期", "overdue"),
}
KIND = {
    "reminder": ("截止前提醒", "reminder"),
    "overdue": ("逾期提醒", "overdue"),
    "escalation": ("督办", "escalation"),
    "digest": ("逾期汇总", "digest"),
    "notice": ("活动通知", "notice"),
    "weekly": ("每周", "weekly"),
    "monthly": ("每月", "monthly"),
    "once": ("一次", "once"),
    "event": ("活动", "event"),
}
CHANNEL = {"email": ("邮件", "e-mail"), "sms": ("短信", "SMS")}


def word(table: dict[str, tuple[str, str]], key: str) -> str:
    pair = table.get(key)
    if pair is None:
        return key
    return pair[1] if lang() == "en" else pair[0]


def state(key: str) -> str:
    return word(STATE, key)


def counts_line(counts: dict[str, int]) -> str:
    """``{'cancelled': 25, 'sent': 914}`` as ``已发送 914 · 已取消 25``."""
    order = [s for s in STATE if s in counts] + sorted(set(counts) - set(STATE))
    return " · ".join(f"{state(s)} {counts[s]}" for s in order) or t("none")


_ISO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:[+-]\d{2}:\d{2}|Z)")

# Reasons are stored in English by the dispatcher and the planner (a stable vocabulary for
# logs and programs); the operator reads them translated. Unknown reasons pass through.
_REASONS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^reason disappeared: (.+)$"), "提醒理由已消失：{0}"),
    (re.compile(r"^recipient is no longer in the directory$"), "收件人已不在通讯录中"),
    (re.compile(r"^expired at (.+)$"), "已于 {0} 过期"),
    (
        re.compile(r"^no (?:SMS )?sending window before it (?:expired|stops making sense)$"),
        "过期前没有可发送的时段",
    ),
    (re.compile(r"^waiting for the (?:SMS )?sending window$"), "等待发送时段"),
    (
        re.compile(r"^daily SMS cap reached \((\d+) per (?:recipient|number)\): deferred$"),
        "已达每个号码每日短信上限（{0} 条），顺延到次日",
    ),
    (
        re.compile(
            r"^daily SMS cap reached \((\d+) per (?:recipient|number)\); the email copy "
            r"carries the message$"
        ),
        "已达每个号码每日短信上限（{0} 条），由邮件送达",
    ),
    (
        re.compile(
            r"^daily SMS cap reached \(kept for urgent messages\); the email copy carries the "
            r"message$"
        ),
        "当日剩余短信额度留给逾期与督办，由邮件送达",
    ),
    (re.compile(r"^no (\w+) channel is configured$"), "未配置 {0} 渠道"),
    (
        re.compile(r"^gave up after (\d+) attempts; last error: (.*)$"),
        "尝试 {0} 次后放弃；最后错误：{1}",
    ),
    (
        re.compile(
            r"^gave up after (\d+) attempts: it stops making sense at (\S+); last error: (.*)$"
        ),
        "尝试 {0} 次后放弃：{1} 后已无意义；最后错误：{2}",
    ),
    (
        re.compile(
            r"^planned at (\S+), after it stopped making sense \((\S+)\); the service was "
            r"not running at (\S+)$"
        ),
        "于 {0} 才计划，已过有效期（{1}）；服务在 {2} 未运行",
    ),
    (
        re.compile(r"^planned at (\S+), after the next digest slot$"),
        "于 {0} 才计划，已到下一期汇总时间",
    ),
    (re.compile(r"^requeued by the operator; before: (.*)$"), "由操作员重新排队；此前：{0}"),
    (
        re.compile(r"^in doubt: the worker sending it stopped; sending again with the same id$"),
        "结果不明：发送它的进程已停止，正以相同编号重新发送",
    ),
    (re.compile(r"^internal error: (.*)$"), "内部错误：{0}"),
    (re.compile(r"^send failed: (.*)$"), "发送失败：{0}"),
]

# The parts a ``reason disappeared: a, b`` reason is made of (service/compose.py).
_DROPPED = {
    "submitted meanwhile": "期间已报送",
    "unchanged since the last digest": "与上次汇总相比无变化",
    "no longer in the schedule or directory": "已不在日程或通讯录中",
    "expired": "已过期",
}


def local_times(text: str, tz: tzinfo) -> str:
    """Every ISO 8601 moment inside ``text`` shown in the campaign's zone."""

    def conv(m: re.Match[str]) -> str:
        try:
            value = datetime.fromisoformat(m.group(0).replace("Z", "+00:00"))
        except ValueError:
            return m.group(0)
        return value.astimezone(tz).isoformat(timespec="seconds")

    return _ISO.sub(conv, text)


def reason(text: str, tz: tzinfo) -> str:
    text = local_times(text or "", tz)
    if lang() == "en" or not text:
        return text
    for pattern, zh in _REASONS:
        if m := pattern.match(text):
            groups = [reason(g, tz) if g and g != text else g for g in m.groups()]
            if pattern.pattern.startswith("^reason disappeared"):
                groups = ["，".join(_DROPPED.get(p, p) for p in m.group(1).split(", "))]
            return zh.format(*groups)
    return text


CATALOGUE: dict[str, tuple[str, str]] = {
    "none": ("无", "none"),
    "check.schedule": ("日程", "schedule"),
    "check.directory": ("通讯录", "directory"),
    "check.model": ("日程与通讯录交叉检查", "schedule × directory"),
    "check.templates": ("模板", "templates"),
    "check.timezone": ("时区与节假日数据", "time zone and holiday data"),
    "check.channels": ("渠道配置", "channels file"),
    "check.smtp": ("SMTP 连接与登录", "SMTP connection and login"),
    "check.sms": ("短信凭据", "SMS credentials"),
    "check.database": ("数据库", "database"),
    "check.state": ("状态文件夹", "state folder"),
    "check.mailbox": ("办公邮箱（IMAP）", "office mailbox (IMAP)"),
    "check.links": ("个人链接", "personal links"),
    "doctor_ok": ("全部检查通过。", "All checks passed."),
    "doctor_failed": ("{n} 项检查未通过。", "{n} check(s) failed."),
    "and_more": ("等 {n} 个", " and {n} more"),
    "calendar_cols": (
        "截止时间|事项|周期|类型|应报单位数|最低/目标|节假日调整",
        "due|obligation|period|kind|units owing|min/target|holiday shift",
    ),
    "shifted": ("顺延/提前", "shifted"),
    "status_cols": (
        "单位|事项|周期|截止时间|状态|进度",
        "unit|obligation|period|due|state|progress",
    ),
    "status_summary": (
        "已完成 {done}（其中补报 {late}）· 待报送 {outstanding} · 逾期 {overdue} · 超额 {over}",
        "done {done} (late {late}) · outstanding {outstanding} · overdue {overdue} · over target {over}",
    ),
    "late": ("补报，晚 {days} 天", "late by {days} day(s)"),
    "over": ("超额", "over target"),
    "overdue_cols": (
        "单位|周期|截止时间|已报/最低|逾期天数",
        "unit|period|due|count/min|days late",
    ),
    "no_overdue": ("没有逾期单位。", "No overdue units."),
    "campaign_over": (
        "活动已结束，不再发送任何消息。",
        "The campaign is over; nothing more is sent.",
    ),
    "preview_head": (
        "下一批：{at}，共 {n} 条（已处理完毕、不再发送的 {final} 条未列出）",
        "Next batch: {at}, {n} message(s) ({final} already final, not listed)",
    ),
    "preview_cols": (
        "时间|类型|渠道|收件人|单位|周期|原因",
        "at|kind|channel|recipient|units|periods|why",
    ),
    "why.reminder": ("截止前提醒（{step}）：尚未报送", "reminder ({step}): not yet submitted"),
    "why.overdue": (
        "逾期提醒（{step}）：已过截止时间仍未报送",
        "overdue ({step}): past due, not submitted",
    ),
    "why.escalation": (
        "督办（{step}）：逾期后通知单位负责人",
        "escalation ({step}): the unit's head is told",
    ),
    "why.digest": ("逾期汇总：辖区内有逾期单位", "digest: overdue units in scope"),
    "why.notice": ("活动通知（{step}）", "notice ({step})"),
    "by_state": ("按状态统计：{counts}", "by state: {counts}"),
    "messages_cols": (
        "状态|计划时间|类型|渠道|收件人|键|原因",
        "state|planned|kind|channel|recipient|key|reason",
    ),
    "waits_sms_window": ("等待短信发送时段，{at} 发送", "waits for the SMS sending window: {at}"),
    "waits_until": ("等待发送时间 {at}", "waits until {at}"),
    "since_until": ("--since 必须早于 --until", "--since must be before --until"),
    "unknown_person": ("未知人员 {value}", "unknown person {value}"),
    "no_message": ("没有键或编号为 {key} 的消息", "no message with key or id {key}"),
    "not_rendered": (
        "（尚未渲染：内容在发送时生成）",
        "(not rendered yet: the text is made at send time)",
    ),
    "attempts_title": ("发送尝试（{n} 次）", "Attempts ({n})"),
    "attempts_cols": ("时间|结果|错误|服务商编号|耗时（毫秒）", "at|outcome|error|provider id|ms"),
    "f.field": ("项目", "field"),
    "f.value": ("内容", "value"),
    "f.key": ("键", "key"),
    "f.state": ("状态", "state"),
    "f.reason": ("原因", "reason"),
    "f.kind": ("类型", "kind"),
    "f.channel": ("渠道", "channel"),
    "f.recipient": ("收件人", "recipient"),
    "f.units": ("单位", "units"),
    "f.periods": ("周期", "periods"),
    "f.due": ("计划时间", "planned"),
    "f.sent_at": ("发送时间", "sent"),
    "f.subject": ("主题", "subject"),
    "schema_ok": ("数据库结构已是最新", "schema is up to date"),
    "until_needs_virtual": (
        "--until 只能与 --virtual-from 一起使用",
        "--until needs --virtual-from",
    ),
    "end_before_start": ("{option} 必须晚于开始时间", "{option} must be after the start"),
    "replaying": ("回放中……", "replaying…"),
    "replay_at": ("回放中：{at}", "replaying: {at}"),
    "virtual_done": (
        "虚拟运行 {start} → {end}：{cycles} 个周期；消息：{counts}",
        "virtual run {start} → {end}: {cycles} cycles; messages: {counts}",
    ),
    "sim_done": (
        "{cycles} 个周期，发送 {sent} 条消息；状态：{counts}",
        "{cycles} cycles, {sent} messages sent; states: {counts}",
    ),
    "sim_files": ("时间线：{timeline}  发件箱：{outbox}", "timeline: {timeline}  outbox: {outbox}"),
    "length": ("长度须在 {lo} 到 {hi} 个字符之间", "must be {lo} to {hi} characters long"),
    "one_of": ("可选值：{values}", "must be one of: {values}"),
    "submitted": (
        "已记录报送 #{id}：{unit} {obligation}@{period} ×{n}",
        "recorded submission {id}: {unit} {obligation}@{period} ×{n}",
    ),
    "retracted": ("已撤销报送 {ids}", "retracted submission(s) {ids}"),
    "importing": ("正在导入 {file}", "importing {file}"),
    "import_done": (
        "已导入（编码 {encoding}）：共 {rows} 行，新增 {new}，已记录 {already}，冲突 {conflicting}",
        "imported ({encoding}): {rows} rows, {new} new, {already} already recorded, "
        "{conflicting} conflicting",
    ),
    "import_dry": (
        "试运行，未写入（编码 {encoding}）：共 {rows} 行，将新增 {new}，已记录 {already}，冲突 {conflicting}",
        "dry run, nothing written ({encoding}): {rows} rows, {new} new, {already} already "
        "recorded, {conflicting} conflicting",
    ),
    "audit_title": ("报送台账（{n} 条）", "Submissions ledger ({n})"),
    "audit_cols": (
        "编号|单位|事项|周期|数量|报送时间|来源|记录人|状态",
        "id|unit|obligation|period|count|submitted|source|recorded by|state",
    ),
    "retracted_at": ("已撤销（{at}）", "retracted ({at})"),
    "active": ("有效", "active"),
    "validate_ok": (
        "OK：{key}：{obligations} 个事项，{occurrences} 个周期（{submittable} 个需报送），"
        "{units} 个单位，{people} 人",
        "OK: {key}: {obligations} obligations, {occurrences} occurrences ({submittable} to "
        "submit), {units} units, {people} people",
    ),
    "bad_time": (
        "{option}：无法识别的时间 {value}（如 2023-06-26T09:00+08:00 或 2023/6/26 9:00）",
        "{option}: not a time: {value} (e.g. 2023-06-26T09:00+08:00)",
    ),
    "channels_error": ("渠道配置 {where}：{msg}", "channels file {where}: {msg}"),
    "db_unsupported": (
        "不支持的数据库 URL {url}（支持 postgresql:// 与 sqlite:///）",
        "unsupported database URL {url} (postgresql:// or sqlite:///)",
    ),
    "db_unreachable": (
        "无法连接数据库 {url}：{reason}",
        "cannot reach the database {url}: {reason}",
    ),
    "internal": ("内部错误 {kind}：{msg}", "internal error {kind}: {msg}"),
    "error": ("错误", "error"),
    "warning": ("警告", "warning"),
    "problems": ("{n} 个问题：", "{n} problem(s):"),
    "debug_hint": ("（加 --debug 查看调用栈）", "(add --debug for the traceback)"),
    # global options
    "app.help": (
        "活动日历、报送台账与提醒服务。",
        "Campaign calendar, submissions ledger and reminders.",
    ),
    "opt.schedule": (
        "活动日程 YAML（环境变量 SERVICE_SCHEDULE）。",
        "Schedule YAML (env SERVICE_SCHEDULE).",
    ),
    "opt.contacts": (
        "通讯录文件夹（SERVICE_CONTACTS）。",
        "Directory folder (env SERVICE_CONTACTS).",
    ),
    "opt.templates": (
        "模板文件夹（SERVICE_TEMPLATES）。",
        "Templates folder (env SERVICE_TEMPLATES).",
    ),
    "opt.channels": (
        "渠道配置 YAML（SMTP/短信，SERVICE_CHANNELS_FILE）。",
        "Channels YAML (SMTP/SMS) (env SERVICE_CHANNELS_FILE).",
    ),
    "opt.state_dir": ("状态文件夹（SERVICE_STATE_DIR）。", "State folder (env SERVICE_STATE_DIR)."),
    "opt.database_url": (
        "数据库 URL（默认状态文件夹中的 SQLite，SERVICE_DATABASE_URL）。",
        "Database URL (default SQLite in the state folder) (env SERVICE_DATABASE_URL).",
    ),
    "opt.concurrency": (
        "同时发送的消息数（默认 8，SERVICE_DISPATCH_CONCURRENCY）。",
        "Messages sent at once (8, env SERVICE_DISPATCH_CONCURRENCY).",
    ),
    "opt.unrecorded": (
        "已发送但尚未记录的消息上限：限制崩溃后的重发（默认 32，SERVICE_DISPATCH_UNRECORDED）。",
        "Sent but not yet recorded, at most: bounds resends after a crash "
        "(32, env SERVICE_DISPATCH_UNRECORDED).",
    ),
    "opt.lang": (
        "输出语言：zh 或 en（默认随 LANG）。",
        "Output language: zh or en (default from LANG).",
    ),
    "opt.debug": ("出错时显示 Python 调用栈。", "Show the Python traceback on errors."),
    "opt.at": (
        "评估时刻（如 2023-06-26T09:00，默认现在）。",
        "Moment to evaluate (e.g. 2023-06-26T09:00); default now.",
    ),
    "opt.json": ("输出 JSON（供其他程序使用）。", "Print JSON (for other programs)."),
    "opt.unit": ("单位 id 或名称。", "Unit id or name."),
    "opt.obligation": ("事项键。", "Obligation key."),
    "opt.period": ("周期，如 2023-W25 或 2023-07。", "Period key, e.g. 2023-W25 or 2023-07."),
    "opt.actor": ("记录人。", "Who records it."),
    "opt.submitted_at": (
        "报送时间（如 2023-06-20T10:00 或 2023/6/20 10:00，默认现在）。",
        "When it was submitted (e.g. 2023-06-20T10:00); default now.",
    ),
    "opt.sub_id": ("指定的报送编号。", "A specific submission id."),
    "opt.all": ("撤销该周期全部有效报送。", "Retract every active submission."),
    "opt.reason": ("原因（记入审计）。", "Reason (audited)."),
    "opt.dry_run": ("只检查并统计，不写入。", "Check and count only; write nothing."),
    "opt.limit": ("最多显示条数（最近的）。", "Show at most this many (the latest)."),
    "arg.import_file": (
        "CSV（UTF-8 或 GBK/GB18030）或 XLSX：单位、事项、周期、数量、报送时间",
        "CSV (UTF-8 or GBK/GB18030) or XLSX: unit, obligation, period, count, at",
    ),
    "opt.scope": ("单位 id 或名称：只看其辖区。", "A unit id or name: only its subtree."),
    "opt.person": ("收件人 id 或姓名。", "Recipient id or name."),
    "opt.since": ("计划时间不早于此时刻。", "Planned at or after this moment."),
    "opt.until": ("计划时间早于此时刻。", "Planned before this moment."),
    "opt.virtual_from": (
        "在虚拟时钟上从此时刻开始回放。",
        "Replay on a virtual clock from this moment.",
    ),
    "opt.until_run": (
        "与 --virtual-from 一起：到此时刻停止。",
        "With --virtual-from: stop at this moment.",
    ),
    "opt.pace": (
        "与 --virtual-from 一起：每步等待的真实秒数（0–60）。",
        "With --virtual-from: real seconds per step (0-60).",
    ),
    "opt.tick": ("安全检查间隔（秒，1–86400）。", "Safety tick in seconds (1-86400)."),
    "opt.sim_from": ("回放开始时刻。", "Start of the replay."),
    "opt.sim_to": ("回放结束时刻。", "End of the replay."),
    "opt.sim_out": (
        "输出文件夹（发件箱、messages.jsonl、数据库）。",
        "Output folder (outbox, messages.jsonl, database).",
    ),
    "opt.sim_subs": (
        "报送 CSV/XLSX（单位、事项、周期、数量、报送时间）。",
        "Submissions CSV/XLSX (unit, obligation, period, count, at).",
    ),
    "arg.key": (
        "消息的键或编号（见 service messages）。",
        "The message's key or id (see service messages).",
    ),
    "opt.offline": (
        "跳过联网检查（SMTP 登录、短信凭据）。",
        "Skip the network checks (SMTP login, SMS credentials).",
    ),
    # commands
    "cmd.validate": (
        "检查日程、通讯录和模板，列出每个问题的位置。",
        "Check the schedule, the directory and the templates; list every located problem.",
    ),
    "cmd.calendar": (
        "全部事项周期：截止时间、类型、应报单位数。",
        "Every occurrence: obligation, period, due moment, kind, units owing it.",
    ),
    "cmd.submit": ("记录一次报送。", "Record a submission."),
    "cmd.retract": (
        "撤销一次报送（重新打开该周期），留有审计记录。",
        "Retract the latest submission of an occurrence (re-opens it); audited.",
    ),
    "cmd.import": (
        "从 CSV/XLSX 导入报送：全部成功或全部不导入；重复导入不重复记录。",
        "Import submissions from CSV/XLSX: all rows or none; re-importing records nothing twice.",
    ),
    "cmd.audit": (
        "台账历史：每次报送与撤销。",
        "The ledger's history: every submission and retraction.",
    ),
    "cmd.status": (
        "各单位各周期：已完成 / 待报送 / 逾期，及报送进度。",
        "For each unit and open occurrence: done / outstanding / overdue with quota progress.",
    ),
    "cmd.overdue": (
        "按事项列出逾期单位，可限定辖区。",
        "Overdue units grouped by obligation, limited to a scope.",
    ),
    "cmd.migrate": (
        "创建或升级数据库结构（其他命令也会自动执行）。",
        "Create or upgrade the database schema (also done automatically by other commands).",
    ),
    "cmd.run": (
        "运行守护进程：按时计划并发送提醒、汇总和通知。",
        "Run the daemon: plan and send reminders, digests and notices as they fall due.",
    ),
    "cmd.simulate": (
        "在虚拟时钟上快速回放活动，输出到文件发件箱。",
        "Replay the campaign on a virtual clock, in seconds, into a file outbox.",
    ),
    "cmd.preview": (
        "下一批将发送什么、发给谁、为什么（不写入也不发送）。",
        "What goes out next, to whom, and why (nothing is written or sent).",
    ),
    "cmd.messages": (
        "发件箱：每条消息的状态与原因。",
        "The outbox: every message with its state and reason.",
    ),
    "cmd.show": (
        "一条消息：渲染内容和每次发送尝试。",
        "One message: its rendered text and every attempt.",
    ),
    "cmd.doctor": (
        "全面检查配置（与守护进程使用的完全一致），失败时退出码为 1。",
        "Check the whole configuration as the daemon will use it; exit 1 on any failure.",
    ),
}
