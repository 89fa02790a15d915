"""The flags an installed ComfyUI declares, read from its comfy/cli_args.py without running it.

Importing cli_args.py would run ComfyUI's code (it parses sys.argv, and newer releases import
comfy.options and more) in the launcher's process, as root. Instead the file is parsed with `ast`
and its argparse calls are followed as argparse would run them:

- `argparse.ArgumentParser(...)` (or `ArgumentParser(...)`): allow_abbrev, prefix_chars,
  add_help, parents; a later `parser.allow_abbrev = False` counts too;
- `add_argument` on the parser, on argument groups and mutually exclusive groups (groups of
  groups, groups held in variables or chained: `parser.add_mutually_exclusive_group().add_argument`),
  through an alias (`add = parser.add_argument`), with several option strings, `*names`, `dest`,
  `action` (BooleanOptionalAction adds `--no-X`), `nargs`, `choices`;
- module-level `for` loops over literal lists, and module-level helper functions called with the
  parser (their parameters bound to the call's arguments);
- names bound to literals at module level (`LOG_LEVELS = (...)`), f-strings and `+` of literals.

An option declared under `if`, `while`, `try`'s handlers or a loop over something computed is
*conditional*: argparse may or may not have it. Conditional flags count when a token is resolved
(so a prefix the release might read as --listen is refused), never when the launcher picks a flag
of its own to pass. The parser read is the one `parse_args` (or `parse_known_args`, which lets
unknown flags through) is called on, else the only one. Anything the reader cannot follow where
flag names are concerned raises UnreadableFlags, and the launcher falls back to its tables.
"""

from __future__ import annotations

import ast
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NO_VALUE_ACTIONS = frozenset(
    {"store_true", "store_false", "store_const", "append_const", "count", "help", "version", "BooleanOptionalAction"}
)
GROUP_METHODS = frozenset({"add_argument_group", "add_mutually_exclusive_group"})
PARSE_METHODS = {"parse_args": False, "parse_intermixed_args": False, "parse_known_args": True}
PARSE_METHODS |= {"parse_known_intermixed_args": True}
_MAX_CALL_DEPTH = 8


class UnreadableFlags(Exception):
    """cli_args.py cannot be read, or declares its flags in a way the reader cannot follow."""


@dataclass(frozen=True)
class Option:
    """One add_argument call, as argparse records it."""

    strings: tuple[str, ...]  # its option strings, "--no-X" of a BooleanOptionalAction included
    dest: str
    action: str  # "store", "store_true", ... or the name of a custom Action class
    nargs: int | str | None
    choices: tuple[Any, ...] | None
    conditional: bool  # declared where argparse may or may not get to it
    line: int

    @property
    def takes_value(self) -> bool:
        """Whether the flag consumes arguments (`--cpu` no, `--port N` and `--listen [IP]` yes)."""
        return self.action not in NO_VALUE_ACTIONS and self.nargs != 0


@dataclass(frozen=True)
class DeclaredFlags:
    """What argparse will accept on the command line of the installed ComfyUI."""

    path: Path
    options: tuple[Option, ...]
    allow_abbrev: bool
    prefix_chars: str
    tolerates_unknown: bool  # parse_known_args: an unknown flag is ignored, not exit 2

    @property
    def flags(self) -> frozenset[str]:
        """Every option string argparse may know (conditional ones included)."""
        return frozenset(string for option in self.options for string in option.strings)

    @property
    def certain(self) -> frozenset[str]:
        """The option strings argparse always has."""
        return frozenset(string for option in self.options if not option.conditional for string in option.strings)

    def option(self, flag: str) -> Option | None:
        return next((option for option in self.options if flag in option.strings), None)


class _Unknown(Exception):
    """A value the reader cannot compute without running the file."""


@dataclass
class _Parser:
    allow_abbrev: bool = True
    prefix_chars: str = "-"
    add_help: bool = True
    options: list[Option] = field(default_factory=list)
    parse_call: bool | None = None  # None: never parsed; else whether unknown flags are tolerated


@dataclass
class _Scope:
    objects: dict[str, _Parser]  # names bound to a parser or a group (the group's parser)
    aliases: dict[str, _Parser]  # names bound to `<parser or group>.add_argument`
    values: dict[str, Any]  # names bound to literal values


class _Reader:
    def __init__(self, tree: ast.Module) -> None:
        self.parsers: list[_Parser] = []
        self.functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
        self.depth = 0

    # -- statements ----------------------------------------------------------------------

    def block(self, statements: list[ast.stmt], scope: _Scope, conditional: bool) -> None:
        for statement in statements:
            self.statement(statement, scope, conditional)

    def statement(self, node: ast.stmt, scope: _Scope, conditional: bool) -> None:
        if isinstance(node, ast.If | ast.While):
            self.calls(node.test, scope, conditional)
            self.block(node.body, scope, True)
            self.block(node.orelse, scope, True)
        elif isinstance(node, ast.For):
            self.loop(node, scope, conditional)
        elif isinstance(node, ast.With):
            self.block(node.body, scope, conditional)
        elif isinstance(node, ast.Try):
            self.block(node.body, scope, conditional)
            for handler in node.handlers:
                self.block(handler.body, scope, True)
            self.block(node.orelse, scope, True)
            self.block(node.finalbody, scope, conditional)
        elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            self.assign(targets, node.value, scope, conditional)
        elif isinstance(node, ast.Expr):
            self.calls(node.value, scope, conditional)

    def loop(self, node: ast.For, scope: _Scope, conditional: bool) -> None:
        try:
            items = list(self.value(node.iter, scope))
        except (_Unknown, TypeError):
            self.block(node.body, scope, True)  # over something computed: it may run any number of times
            return
        for item in items:
            self.bind(node.target, item, scope)
            self.block(node.body, scope, conditional)
        self.block(node.orelse, scope, conditional)

    def bind(self, target: ast.expr, item: Any, scope: _Scope) -> None:
        if isinstance(target, ast.Name):
            scope.values[target.id] = item
        elif isinstance(target, ast.Tuple | ast.List) and isinstance(item, tuple | list):
            for part, value in zip(target.elts, item, strict=False):
                self.bind(part, value, scope)

    def assign(self, targets: list[ast.expr], value: ast.expr, scope: _Scope, conditional: bool) -> None:
        bound = self.parser_of(value, scope, conditional)
        alias = self.add_argument_owner(value, scope)
        for target in targets:
            if isinstance(target, ast.Attribute) and target.attr == "allow_abbrev":
                self.set_allow_abbrev(target, value, scope)
            if not isinstance(target, ast.Name):
                continue
            scope.objects.pop(target.id, None)
            scope.aliases.pop(target.id, None)
            scope.values.pop(target.id, None)
            if bound is not None:
                scope.objects[target.id] = bound
            elif alias is not None:
                scope.aliases[target.id] = alias
            else:
                with contextlib.suppress(_Unknown):
                    scope.values[target.id] = self.value(value, scope)
        if bound is None:
            self.calls(value, scope, conditional)

    def set_allow_abbrev(self, target: ast.Attribute, value: ast.expr, scope: _Scope) -> None:
        parser = self.owner(target.value, scope)
        if parser is None:
            return
        try:
            parser.allow_abbrev = bool(self.value(value, scope))
        except _Unknown:
            raise UnreadableFlags(f"line {target.lineno}: allow_abbrev is set to a computed value") from None

    # -- calls -----------------------------------------------------------------------------

    def calls(self, node: ast.expr, scope: _Scope, conditional: bool) -> None:
        """Every add_argument, parse and helper call in an expression, innermost first."""
        for call in _calls_in(node):
            self.call(call, scope, conditional)

    def call(self, node: ast.Call, scope: _Scope, conditional: bool) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in scope.aliases:
            self.add_argument(scope.aliases[func.id], node, scope, conditional)
        elif isinstance(func, ast.Name) and func.id in self.functions:
            self.helper(self.functions[func.id], node, scope, conditional)
        elif isinstance(func, ast.Attribute):
            owner = self.owner(func.value, scope)
            if owner is None:
                return
            if func.attr == "add_argument":
                self.add_argument(owner, node, scope, conditional)
            elif func.attr in PARSE_METHODS and not conditional:
                owner.parse_call = bool(owner.parse_call) or PARSE_METHODS[func.attr]
            elif func.attr in PARSE_METHODS and owner.parse_call is None:
                owner.parse_call = PARSE_METHODS[func.attr]

    def helper(self, function: ast.FunctionDef, node: ast.Call, scope: _Scope, conditional: bool) -> None:
        """A module-level function called with the parser: its body, with its parameters bound."""
        if self.depth >= _MAX_CALL_DEPTH:
            raise UnreadableFlags(f"line {node.lineno}: {function.name} calls itself too deeply to follow")
        inner = _Scope(dict(scope.objects), dict(scope.aliases), dict(scope.values))
        params = [arg.arg for arg in function.args.posonlyargs + function.args.args]
        for name, argument in zip(params, node.args, strict=False):
            self.bind_argument(name, argument, scope, inner)
        if function.args.vararg:
            rest = node.args[len(params) :]
            try:
                inner.values[function.args.vararg.arg] = tuple(self.value(arg, scope) for arg in rest)
            except _Unknown:
                inner.values.pop(function.args.vararg.arg, None)
        for keyword in node.keywords:
            if keyword.arg:
                self.bind_argument(keyword.arg, keyword.value, scope, inner)
        self.depth += 1
        try:
            self.block(function.body, inner, conditional)
        finally:
            self.depth -= 1

    def bind_argument(self, name: str, argument: ast.expr, scope: _Scope, inner: _Scope) -> None:
        owner = self.owner(argument, scope)
        if owner is not None:
            inner.objects[name] = owner
            return
        try:
            inner.values[name] = self.value(argument, scope)
        except _Unknown:
            inner.values.pop(name, None)

    def parser_of(self, node: ast.expr, scope: _Scope, conditional: bool) -> _Parser | None:
        """The parser a new ArgumentParser or group call stands for (None: neither)."""
        if not isinstance(node, ast.Call):
            return None
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if name == "ArgumentParser":
            return self.new_parser(node, scope)
        if name in GROUP_METHODS and isinstance(func, ast.Attribute):
            self.calls(func.value, scope, conditional)
            return self.owner(func.value, scope)
        return None

    def owner(self, node: ast.expr, scope: _Scope) -> _Parser | None:
        """The parser an expression is, or is a group of."""
        if isinstance(node, ast.Name):
            return scope.objects.get(node.id)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in GROUP_METHODS:
            return self.owner(node.func.value, scope)
        return None

    def add_argument_owner(self, node: ast.expr, scope: _Scope) -> _Parser | None:
        if isinstance(node, ast.Attribute) and node.attr == "add_argument":
            return self.owner(node.value, scope)
        return None

    def new_parser(self, node: ast.Call, scope: _Scope) -> _Parser:
        parser = _Parser()
        for keyword in node.keywords:
            if keyword.arg in ("allow_abbrev", "prefix_chars", "add_help", "parents"):
                self.parser_setting(parser, keyword, scope)
        self.parsers.append(parser)
        return parser

    def parser_setting(self, parser: _Parser, keyword: ast.keyword, scope: _Scope) -> None:
        if keyword.arg == "parents":
            if not isinstance(keyword.value, ast.List | ast.Tuple):
                raise UnreadableFlags(f"line {keyword.value.lineno}: parents= is computed")
            for parent_node in keyword.value.elts:
                parent = self.owner(parent_node, scope)
                if parent is None:
                    raise UnreadableFlags(f"line {parent_node.lineno}: a parent parser the reader does not know")
                parser.options.extend(option for option in parent.options if option.dest != "help")
            return
        try:
            setting = self.value(keyword.value, scope)
        except _Unknown:
            raise UnreadableFlags(f"line {keyword.value.lineno}: {keyword.arg}= is computed") from None
        if keyword.arg == "prefix_chars":
            parser.prefix_chars = str(setting)
        elif keyword.arg == "allow_abbrev":
            parser.allow_abbrev = bool(setting)
        else:
            parser.add_help = bool(setting)

    def add_argument(self, parser: _Parser, node: ast.Call, scope: _Scope, conditional: bool) -> None:
        names: list[str] = []
        for argument in node.args:
            try:
                value = self.value(argument.value if isinstance(argument, ast.Starred) else argument, scope)
            except _Unknown:
                raise UnreadableFlags(
                    f"line {node.lineno}: add_argument with a flag name computed at run time"
                ) from None
            names += [str(v) for v in value] if isinstance(argument, ast.Starred) else [str(value)]
        if not names or not names[0] or names[0][0] not in parser.prefix_chars:
            return  # a positional argument: no flag
        settings = self.keywords(node, scope)
        action = settings.get("action", "store")
        strings = list(names)
        if action == "BooleanOptionalAction":
            strings += [f"--no-{name[2:]}" for name in names if name.startswith("--")]
        parser.options.append(
            Option(
                strings=tuple(strings),
                dest=str(settings.get("dest") or _default_dest(names, parser.prefix_chars)),
                action=str(action),
                nargs=settings.get("nargs"),
                choices=_choices(settings.get("choices")),
                conditional=conditional,
                line=node.lineno,
            )
        )

    def keywords(self, node: ast.Call, scope: _Scope) -> dict[str, Any]:
        settings: dict[str, Any] = {}
        for keyword in node.keywords:
            if keyword.arg == "action":
                settings["action"] = _action_name(keyword.value, scope, self)
            elif keyword.arg in ("dest", "nargs", "choices"):
                try:
                    settings[keyword.arg] = self.value(keyword.value, scope)
                except _Unknown:
                    settings[keyword.arg] = None
        return settings

    # -- values ------------------------------------------------------------------------------

    def value(self, node: ast.expr, scope: _Scope) -> Any:
        """A literal the expression stands for, or _Unknown."""
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in scope.values:
                return scope.values[node.id]
            raise _Unknown(node.id)
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            items: list[Any] = []
            for element in node.elts:
                if isinstance(element, ast.Starred):
                    items += list(self.value(element.value, scope))
                else:
                    items.append(self.value(element, scope))
            return tuple(items) if isinstance(node, ast.Tuple) else items
        if isinstance(node, ast.JoinedStr):
            return "".join(self.formatted(part, scope) for part in node.values)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self.value(node.left, scope) + self.value(node.right, scope)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.Not):
            operand = self.value(node.operand, scope)
            return -operand if isinstance(node.op, ast.USub) else not operand
        if isinstance(node, ast.Attribute) and node.attr == "SUPPRESS":
            return "==SUPPRESS=="
        raise _Unknown(ast.dump(node)[:60])

    def formatted(self, part: ast.expr, scope: _Scope) -> str:
        if isinstance(part, ast.FormattedValue):
            if part.conversion != -1 or part.format_spec is not None:
                raise _Unknown("a formatted value")
            return str(self.value(part.value, scope))
        return str(self.value(part, scope))


def _calls_in(node: ast.expr) -> Iterator[ast.Call]:
    """Calls in evaluation order (arguments and receivers before the call), lambdas skipped."""
    if isinstance(node, ast.Lambda):
        return
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.expr):
            yield from _calls_in(child)
    if isinstance(node, ast.Call):
        yield node


def _action_name(node: ast.expr, scope: _Scope, reader: _Reader) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr  # argparse.BooleanOptionalAction, module.CustomAction
    if isinstance(node, ast.Name) and node.id not in scope.values:
        return node.id  # a custom Action class
    try:
        return str(reader.value(node, scope))
    except _Unknown:
        return "unknown"


def _choices(value: Any) -> tuple[Any, ...] | None:
    if isinstance(value, list | tuple | set | frozenset):
        return tuple(value)
    return None


def _default_dest(names: list[str], prefix_chars: str) -> str:
    """argparse's dest: the first long option string, else the first, without prefixes, - as _."""
    long = next((name for name in names if len(name) > 1 and name[1] in prefix_chars), names[0])
    return long.lstrip(prefix_chars).replace("-", "_")


def _help_option(parser: _Parser) -> Option:
    prefix = "-" if "-" in parser.prefix_chars else parser.prefix_chars[0]
    return Option((prefix + "h", prefix * 2 + "help"), "help", "help", 0, None, False, 0)


def read_declared_flags(path: Path) -> DeclaredFlags:
    """The flags the cli_args.py at `path` declares; UnreadableFlags says why when it cannot tell."""
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UnreadableFlags(f"cannot read it: {error}") from None
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as error:
        raise UnreadableFlags(f"line {error.lineno}: not Python this reader can parse ({error.msg})") from None
    reader = _Reader(tree)
    reader.block(tree.body, _Scope({}, {}, {}), conditional=False)
    parser = _the_parser(reader.parsers)
    options = ([_help_option(parser)] if parser.add_help else []) + parser.options
    return DeclaredFlags(path, tuple(options), parser.allow_abbrev, parser.prefix_chars, bool(parser.parse_call))


def _the_parser(parsers: list[_Parser]) -> _Parser:
    parsed = [parser for parser in parsers if parser.parse_call is not None]
    if len(parsed) == 1:
        return parsed[0]
    if not parsed and len(parsers) == 1:
        return parsers[0]
    if not parsers:
        raise UnreadableFlags("it makes no argparse.ArgumentParser")
    raise UnreadableFlags(f"it makes {len(parsers)} parsers and the reader cannot tell which one reads sys.argv")
