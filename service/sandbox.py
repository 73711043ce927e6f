"""A Jinja2 sandbox whose renders are bounded in time and in the text they build.

The stock sandbox stops a template from reaching Python internals, but not from burning
CPU or memory: nested ``range`` loops, ``'x' * 10**9``, ``s|replace('', s)``, doubling a
string with ``~`` or a capture block. Every such construct goes through a hook here:

- the code generator wraps every ``for`` iterable (one deadline check per iteration),
  every ``~`` concatenation and every output (counted against the render's budget), and
  puts a deadline check before every ``include``;
- the sandbox's ``call``, ``getattr``, ``getitem`` and intercepted operators check the
  deadline; operators, filters and methods that can build a large value from small ones
  (``*``, ``**``, ``%``, ``center``, ``replace``, ``join``, ``indent``, ``format``…)
  are refused *before* they build it when the result would exceed the budget;
- ``lipsum`` is gone; ``range`` keeps Jinja's 100,000 cap.

The limits are cooperative (checked in those hooks, on the rendering thread), so a render
that exceeds them raises :class:`TemplateRenderLimit` at a template line and nothing keeps
running afterwards.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from string import Formatter
from typing import Any

from jinja2 import Template, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import TemplateRuntimeError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import _PassArg

DEFAULT_SECONDS = 1.0
DEFAULT_MAX_CHARS = 4_000_000
MAX_INT_BITS = 16_384  # ~4,900 decimal digits: more than Python prints (4,300)


def _capped_range(*args: int) -> range:
    """Jinja's ``safe_range`` (100,000 items at most), over the cap a render limit like the
    others rather than an OverflowError: a data-sized loop fails its message, located."""
    from jinja2.sandbox import MAX_RANGE, safe_range

    try:
        return safe_range(*args)
    except OverflowError:
        raise TemplateRenderLimit(f"range 过大 / range larger than {MAX_RANGE}") from None


class TemplateRenderLimit(TemplateRuntimeError):
    """A render took too long or built too much text; the template line is in the traceback."""

    filename: str | None = None  # set when the limit is hit outside the template's frames


@dataclass(frozen=True)
class RenderLimits:
    """Per render: wall time in seconds, and characters built (output + intermediate values)."""

    seconds: float = DEFAULT_SECONDS
    max_chars: int = DEFAULT_MAX_CHARS


def cpu_clock() -> float:
    """The clock render deadlines are on: this thread's CPU time. A render starved of CPU
    by other processes is not failed for it; one that burns CPU is."""
    return time.thread_time()


class _Meter:
    """The budget of one render. ``deadline`` is a cheap wall-clock checkpoint: only when
    it passes is the (slower) CPU clock read, and the checkpoint moved on by the CPU time
    still left — under CPU contention wall time runs ahead of the render's own time."""

    __slots__ = ("cpu_deadline", "deadline", "left", "limits")

    def __init__(self, limits: RenderLimits, cpu_deadline: float | None = None) -> None:
        self.limits = limits
        now = cpu_clock()
        own = now + limits.seconds
        self.cpu_deadline = own if cpu_deadline is None else min(own, cpu_deadline)
        self.deadline = time.monotonic() + (self.cpu_deadline - now)
        self.left = limits.max_chars

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            left = self.cpu_deadline - cpu_clock()
            if left < 0:
                raise TemplateRenderLimit(
                    f"模板渲染超过时间上限 {self.limits.seconds:g} 秒 / "
                    f"render exceeded {self.limits.seconds:g} s of CPU time"
                )
            self.deadline = time.monotonic() + left

    def need(self, chars: int) -> None:
        """Refuse a value of ``chars`` characters before or after it is built."""
        if chars > self.left:
            self.over()
        self.left -= chars
        self.tick()

    def over(self) -> None:
        raise TemplateRenderLimit(
            f"模板渲染生成的文本超过上限 {self.limits.max_chars} 字符 / "
            f"render would build more than {self.limits.max_chars} characters"
        )

    def charge(self, value: Any) -> None:
        """Count a value just built (or about to be kept) against the budget."""
        self.need(_size(value, self.left, self.tick))


_METER: ContextVar[_Meter | None] = ContextVar("render_meter", default=None)


def _meter(env: BoundedEnvironment) -> _Meter:
    # Outside a render (Jinja folds constant filter calls at compile time) the static
    # checks still apply, against a fresh budget.
    return _METER.get() or _Meter(env.limits)


_CONTAINERS = (list, tuple, dict, set, frozenset)
# Names ``getattr`` finds on any exact dict (its methods and dunders); nothing else is.
_DICT_ATTRIBUTES = frozenset(dir(dict))


def _size(
    value: Any, limit: int = DEFAULT_MAX_CHARS, tick: Callable[[], None] | None = None
) -> int:
    """Characters and items of ``value`` as if every shared part were copied (stops past
    ``limit``): ``[l, l]`` nested forty times is small in memory but exponential to print,
    compare or hash, so it must be charged for what it expands to."""
    if isinstance(value, str | bytes):
        return len(value)
    if not isinstance(value, _CONTAINERS):
        return 0
    total, stack, steps = 0, [value], 0
    while stack and total <= limit:
        item = stack.pop()
        steps += 1
        if tick is not None and not steps % 8192:
            tick()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, dict):
            total += 1 + len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, _CONTAINERS):
            total += 1 + len(item)
            stack.extend(item)
    return total


def _check_int_args(args: Iterable[Any], limit: int) -> None:
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > limit:
            raise TemplateRenderLimit(
                f"参数 {arg} 超过上限 {limit} / argument {arg} exceeds {limit}"
            )


_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(\*|\d+)?(?:\.(\*|\d+))?")
_NUMBER = re.compile(r"\d+")


def _printf_width(fmt: str) -> int:
    """The largest width/precision of a %-format string; ``*`` widths are refused."""
    widest = 0
    for m in _PRINTF.finditer(fmt):
        for part in m.groups():
            if part == "*":
                raise TemplateRenderLimit("不支持 * 宽度 / '*' widths are not allowed")
            if part:
                widest = max(widest, int(part))
    return widest


def _format_width(fmt: str) -> int:
    """The largest number in the format specs of a ``str.format`` string."""
    widest = 0
    for _, _, spec, _ in Formatter().parse(fmt):
        if spec and "{" in spec:
            raise TemplateRenderLimit("格式中不支持嵌套字段 / nested format fields not allowed")
        widest = max([widest, *(int(n) for n in _NUMBER.findall(spec or ""))])
    return widest


def _str_method_bound(obj: Any, name: str, args: tuple[Any, ...]) -> int | None:
    """An upper bound of the result of a ``str``/``bytes`` method that can grow its input."""
    n = len(obj)
    if name in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
        return max(n, args[0])
    if name == "expandtabs":
        tab = args[0] if args and isinstance(args[0], int) else 8
        tabs: int = obj.count("\t" if isinstance(obj, str) else b"\t")
        return n + tabs * max(tab, 0)
    if name == "replace" and len(args) >= 2:
        old, new = _size(args[0]), _size(args[1])
        return n if new <= old else n + (n + 1) * new
    if name == "join" and args:
        items = args[0]
        return sum(_size(i) for i in items) + n * max(len(items) - 1, 0)
    return None


# Filters implemented in Python (regular expressions, textwrap, pprint) that run for
# seconds to minutes on a few megabytes (wordwrap is quadratic in a long word): their
# input is limited to what a message can reasonably hold.
SLOW_FILTERS = frozenset(
    {"wordwrap", "urlize", "title", "striptags", "wordcount", "pprint", "xmlattr", "truncate"}
)
SLOW_FILTER_INPUT = 50_000


# Filters that return a number in constant time (a ``len``) or one pass over their
# input: nothing to bound, and ``length`` is in every loop header of the templates.
_UNGUARDED_FILTERS = frozenset({"length", "count"})


def _guard_filter(env: BoundedEnvironment, name: str, func: Callable[..., Any]) -> Any:
    offset = 0 if _PassArg.from_obj(func) is None else 1
    slow = name in SLOW_FILTERS

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        meter = _meter(env)
        meter.tick()
        limit = env.limits.max_chars
        _check_int_args([*args[offset + 1 :], *kwargs.values()], limit)
        value = args[offset] if len(args) > offset else None
        rest = args[offset + 1 :]
        if slow and _size(value, SLOW_FILTER_INPUT) > SLOW_FILTER_INPUT:
            raise TemplateRenderLimit(
                f"过滤器 {name} 的输入超过 {SLOW_FILTER_INPUT} 字符 / "
                f"the {name} filter takes at most {SLOW_FILTER_INPUT} characters"
            )
        bound = None
        if name == "join" and value is not None and not isinstance(value, str):
            value = list(value)
            args = (*args[:offset], value, *rest)
            sep = rest[0] if rest else kwargs.get("d", "")
            bound = sum(len(str(v)) for v in value) + _size(sep) * max(len(value) - 1, 0)
        elif name in ("replace", "center") and isinstance(value, str):
            bound = _str_method_bound(value, name, tuple(rest) or tuple(kwargs.values()))
        elif name == "indent" and isinstance(value, str):
            width = rest[0] if rest else kwargs.get("width", 4)
            width = len(width) if isinstance(width, str) else int(width)
            bound = len(value) + (value.count("\n") + 1) * width
        elif name == "format" and isinstance(value, str):
            bound = len(value) + _printf_width(value) * (len(rest) + len(kwargs) + 1)
        if bound is not None:
            meter.need(bound)
            return func(*args, **kwargs)
        result = func(*args, **kwargs)
        meter.charge(result)
        return result

    return guarded


class _BoundedCodeGenerator(CodeGenerator):
    """Routes loops, ``~`` and output through the environment's guards."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        node.iter = nodes.Call(
            nodes.EnvironmentAttribute("guard_iter"), [node.iter], [], None, None
        ).set_lineno(node.iter.lineno)
        super().visit_For(node, frame)

    def visit_Call(self, node: nodes.Call, frame: Frame, forward_caller: bool = False) -> None:
        # The loop guard is called directly, not through the sandbox's ``call`` hook
        # (which checks and charges what a template calls; this call is our own).
        # Templates cannot name environment attributes: only visit_For makes this node.
        callee = node.node
        if isinstance(callee, nodes.EnvironmentAttribute) and callee.name == "guard_iter":
            self.write("environment.guard_iter(")
            self.visit(node.args[0], frame)
            self.write(")")
            return
        super().visit_Call(node, frame, forward_caller=forward_caller)

    def _guarded(self, visit: Callable[..., None], node: nodes.Node, frame: Frame) -> None:
        self.write("environment.guard_value(")
        visit(node, frame)
        self.write(")")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self._guarded(super().visit_List, node, frame)

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self._guarded(super().visit_Dict, node, frame)

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx == "load":
            self._guarded(super().visit_Tuple, node, frame)
        else:
            super().visit_Tuple(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.guard_value(")
        super().visit_Concat(node, frame)
        self.write(")")

    def visit_Include(self, node: nodes.Include, frame: Frame) -> None:
        self.writeline("environment.guard_tick()", node)
        super().visit_Include(node, frame)

    # Output into a buffer (macros, call and filter blocks, ``{% set %}`` blocks) is
    # counted where it is produced; what the template yields is counted as it is yielded
    # (BoundedEnvironment.render_bounded), which keeps the common path cheap.
    _buffered = False

    def visit_Output(self, node: nodes.Output, frame: Frame) -> None:
        self._buffered = frame.buffer is not None
        super().visit_Output(node, frame)

    def _output_const_repr(self, group: Iterable[Any]) -> str:
        text = super()._output_const_repr(group)
        return f"environment.guard_value({text})" if self._buffered else text

    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        if self._buffered:
            self.write("environment.guard_value(")
        super()._output_child_pre(node, frame, finalize)

    def _output_child_post(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        super()._output_child_post(node, frame, finalize)
        if self._buffered:
            self.write(")")


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox with time and size limits; render with :meth:`render_bounded`."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+", "//"})

    def __init__(self, *args: Any, limits: RenderLimits | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits or RenderLimits()
        self.globals.pop("lipsum", None)
        self.globals["range"] = _capped_range
        self.filters = {
            name: f if name in _UNGUARDED_FILTERS else _guard_filter(self, name, f)
            for name, f in self.filters.items()
        }

    @contextmanager
    def metered(self, deadline: float | None = None) -> Iterator[_Meter]:
        """Renders inside count against one budget; ``deadline`` is on :func:`cpu_clock`."""
        meter = _Meter(self.limits, deadline)
        token = _METER.set(meter)
        try:
            yield meter
        finally:
            _METER.reset(token)

    def render_bounded(
        self, template: Template, ctx: dict[str, Any], deadline: float | None = None
    ) -> str:
        """``template.render(ctx)`` within the limits, else TemplateRenderLimit."""
        parts: list[str] = []
        append = parts.append
        with self.metered(deadline) as meter:
            try:
                for chunk in template.root_render_func(template.new_context(ctx)):
                    meter.left -= len(chunk)
                    if meter.left < 0:
                        meter.over()
                    append(chunk)
            except TemplateRenderLimit as exc:
                if exc.filename is None:
                    exc.filename = template.filename  # for a limit hit outside its frames
                self.handle_exception()
            except Exception:
                self.handle_exception()  # Jinja maps the traceback to template lines
        return "".join(parts)

    # -- hooks the generated code calls ------------------------------------------------
    def guard_tick(self) -> None:
        _meter(self).tick()

    def guard_value(self, value: Any) -> Any:
        meter = _meter(self)
        if isinstance(value, str):  # the common case (every output), kept cheap
            meter.left -= len(value)
            if meter.left < 0:
                meter.over()
        else:
            meter.charge(value)
        return value

    def guard_iter(self, iterable: Any) -> Iterator[Any]:
        meter = _meter(self)
        for item in iterable:
            meter.tick()
            yield item

    # -- sandbox hooks -----------------------------------------------------------------
    def getattr(self, obj: Any, attribute: str) -> Any:
        meter = _METER.get()  # the hottest hook: inlined tick
        if meter is not None and time.monotonic() > meter.deadline:
            meter.tick()
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            # What the stock hook ends up doing for a plain dict (message contexts are
            # dicts), without first raising and catching an AttributeError: a name that
            # is no attribute of dict is looked up as a key, unchecked, as there.
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        meter = _METER.get()
        if meter is not None and time.monotonic() > meter.deadline:
            meter.tick()
        return super().getitem(obj, argument)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        meter = _meter(__self)
        meter.tick()
        _check_int_args([*args, *kwargs.values()], __self.limits.max_chars)
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str | bytes):
            if __obj.__name__ == "join" and args and not isinstance(args[0], list | tuple):
                args = (list(args[0]), *args[1:])
            bound = _str_method_bound(owner, __obj.__name__, args)
            if bound is not None:
                meter.need(bound)
                return super().call(__context, __obj, *args, **kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        meter.charge(result)
        return result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        fmt: str = value.__self__

        @functools.wraps(wrapper)
        def bounded(*args: Any, **kwargs: Any) -> str:
            meter = _meter(self)
            meter.need(len(fmt) + _format_width(fmt) * max(fmt.count("{"), 1))
            result = wrapper(*args, **kwargs)
            meter.need(len(result))
            return result

        return bounded

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        meter = _meter(self)
        meter.tick()
        checked = False
        if operator == "*":
            checked = self._check_product(meter, left, right)
        elif operator == "**" and _is_int(left) and _is_int(right) and right > 0:
            if max(left.bit_length(), 1) * right > MAX_INT_BITS:
                raise TemplateRenderLimit(f"整数过大 / {left} ** {right} is too large")
        elif operator == "%" and isinstance(left, str):
            parts = len(right) if isinstance(right, tuple | dict) else 1
            meter.need(len(left) + _printf_width(left) * (parts + 1))
            checked = True
        result = super().call_binop(context, operator, left, right)
        if not checked:
            meter.charge(result)
        return result

    @staticmethod
    def _check_product(meter: _Meter, left: Any, right: Any) -> bool:
        """Refuse a product too large to build; True when the result is already charged."""
        if _is_int(left) and _is_int(right):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise TemplateRenderLimit("整数过大 / integer product is too large")
            return True
        for seq, times in ((left, right), (right, left)):
            if _is_int(times) and isinstance(seq, str | bytes | list | tuple):
                meter.need(_size(seq, meter.left, meter.tick) * max(times, 0))
                return True
        return False


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
