"""The notice and page templates: the operator's folder over the defaults shipped in ``agent/templates``.

A notice ``NAME`` is ``NAME.txt.j2`` (first line ``Subject: ...``, then the plain-text body) plus an
optional ``NAME.html.j2`` (the HTML alternative). A page (``suspended_page``) is ``NAME.html.j2`` alone.
Files starting with ``_`` are partials for ``{% include %}``. When the operator's folder has any file of a
template, the whole template comes from there (an edited text never goes out beside a stale default HTML).

Every template is rendered in a sandbox (:class:`jinja2.sandbox.ImmutableSandboxedEnvironment`) with
:class:`jinja2.StrictUndefined`; HTML is autoescaped. :meth:`Templates.load` checks every file: syntax,
variables outside :data:`~agent.notices.context.VARIABLES`, and a trial render; a problem raises
:class:`TemplateError` naming the file and line.
"""

from __future__ import annotations

import difflib
import re
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from agent.notices.context import VARIABLES, sample_context

__all__ = ["PAGE", "RenderedNotice", "TemplateError", "Templates", "render_page"]

PACKAGE_TEMPLATES = Path(__file__).parent.with_name("templates")  # agent/templates
PAGE = "suspended_page"
TEXT_SUFFIX = ".txt.j2"
HTML_SUFFIX = ".html.j2"


class TemplateError(Exception):
    """A template cannot be used; ``problems`` has one ``file:line: what, and what to do`` per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class RenderedNotice:
    subject: str
    text: str
    html: str | None = None


@dataclass(frozen=True)
class _Template:
    name: str
    text: Path | None  # NAME.txt.j2
    html: Path | None  # NAME.html.j2


_SUBJECT = re.compile(r"^Subject:[ \t]*", re.IGNORECASE)


def _split(source: str) -> tuple[str, str] | None:
    """(subject source, body source) of a ``.txt.j2`` file; the body keeps its line numbers."""
    first, _, rest = source.partition("\n")
    match = _SUBJECT.match(first)
    if match is None:
        return None
    return first[match.end():], "\n" + rest


class _Loader(jinja2.BaseLoader):
    """Serves ``FILE`` (a whole file), ``FILE#subject`` and ``FILE#body`` (the parts of a text template)."""

    def __init__(self, files: Mapping[str, Path]) -> None:
        self.files = dict(files)

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Callable[[], bool]]:
        file, _, part = template.partition("#")
        path = self.files.get(file)
        if path is None:
            raise jinja2.TemplateNotFound(template)
        source = path.read_text(encoding="utf-8-sig")
        if part:
            parts = _split(source)
            if parts is None:
                raise jinja2.TemplateNotFound(template)
            source = parts[0] if part == "subject" else parts[1]
        return source, str(path), lambda: True


def _autoescape(name: str | None) -> bool:
    return name is not None and name.partition("#")[0].endswith((HTML_SUFFIX, ".html"))


def _finalize(value: Any) -> Any:
    return "" if value is None else value


def _template_line(exc: BaseException, path: Path) -> int | None:
    """The line of ``path`` where a render error was raised (jinja maps template frames to their file)."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == str(path):
            line = frame.lineno
    return line


class Templates:
    """The notice and page templates: the operator's folder over the packaged defaults, checked at load."""

    def __init__(self, env: jinja2.Environment, templates: Mapping[str, _Template]) -> None:
        self._env = env
        self._templates = dict(templates)
        # part -> its template and the names of its globals, looked up once per run
        self._compiled: dict[str, tuple[jinja2.Template, dict[str, Any]]] = {}

    @classmethod
    def load(cls, directory: Path | str | None = None) -> Templates:
        """Load and check every template. Raises :class:`TemplateError` listing every problem found."""
        dirs = [PACKAGE_TEMPLATES]
        if directory is not None:
            op = Path(directory)
            if not op.is_dir():
                raise TemplateError([f"{op}: templates folder not found; create it or leave it out to use "
                                     f"the default templates"])
            dirs.insert(0, op)
        files: dict[str, Path] = {}
        owner: dict[str, Path] = {}  # template name -> the folder it comes from
        for folder in reversed(dirs):  # later (operator) folders win
            by_name: dict[str, list[Path]] = {}
            for path in sorted(folder.iterdir()):
                if not path.is_file() or not path.name.endswith((TEXT_SUFFIX, HTML_SUFFIX)):
                    continue
                if path.name.startswith("_"):
                    files[path.name] = path
                    continue
                by_name.setdefault(path.name.rsplit(".", 2)[0], []).append(path)
            for name in by_name:
                owner[name] = folder
        problems = []
        for name, folder in sorted(owner.items()):
            if (folder != PACKAGE_TEMPLATES and not (folder / (name + TEXT_SUFFIX)).is_file()
                    and (PACKAGE_TEMPLATES / (name + TEXT_SUFFIX)).is_file()):
                problems.append(f"{folder / (name + HTML_SUFFIX)}: the notice {name!r} needs its text too: copy "
                                f"{PACKAGE_TEMPLATES / (name + TEXT_SUFFIX)} to {folder} (a template comes "
                                f"entirely from the templates folder or entirely from the defaults)")
        if problems:
            raise TemplateError(problems)
        templates: dict[str, _Template] = {}
        for name, folder in sorted(owner.items()):
            text, html = folder / (name + TEXT_SUFFIX), folder / (name + HTML_SUFFIX)
            templates[name] = _Template(name, text if text.is_file() else None, html if html.is_file() else None)
            for path in (text, html):
                if path.is_file():
                    files[path.name] = path
        env = ImmutableSandboxedEnvironment(
            loader=_Loader(files), undefined=jinja2.StrictUndefined, autoescape=_autoescape,
            finalize=_finalize, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        )
        result = cls(env, templates)
        result._check(files)
        return result

    # -- checks --

    def _check(self, files: Mapping[str, Path]) -> None:
        problems: list[str] = []
        known = set(VARIABLES) | set(self._env.globals)
        for file, path in sorted(files.items()):
            try:
                source = path.read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"{path}: cannot read: {exc}")
                continue
            parts = [file]
            if file.endswith(TEXT_SUFFIX) and not file.startswith("_"):
                if _split(source) is None:
                    problems.append(f"{path}:1: the first line must be 'Subject: ...' (the notice's subject), "
                                    f"followed by the text of the notice")
                    continue
                parts = [file + "#subject", file + "#body"]
            for part in parts:
                problems.extend(self._check_part(part, path, known))
        if problems:
            raise TemplateError(problems)
        sample = sample_context()
        for name, tpl in self._templates.items():
            try:
                if tpl.text is not None:
                    self.render(name, sample)
                else:
                    self.render_html(name, sample)
            except TemplateError as exc:
                problems.extend(exc.problems)
        if problems:
            raise TemplateError(problems)

    def _check_part(self, part: str, path: Path, known: set[str]) -> list[str]:
        assert self._env.loader is not None
        source = self._env.loader.get_source(self._env, part)[0]
        try:
            ast = self._env.parse(source, part, str(path))
            self._env.get_template(part)
        except jinja2.TemplateSyntaxError as exc:
            return [f"{path}:{exc.lineno}: syntax error: {exc.message}; fix the template (Jinja2 syntax)"]
        problems = []
        for var in sorted(meta.find_undeclared_variables(ast) - known):
            line = next((n.lineno for n in ast.find_all(nodes.Name) if n.name == var), None)
            hint = difflib.get_close_matches(var, list(VARIABLES), n=1)
            advice = f"did you mean '{hint[0]}'? " if hint else ""
            problems.append(f"{path}:{line}: unknown variable '{var}'; {advice}"
                            f"`arrears templates vars` lists the variables you can use")
        return problems

    # -- use --

    def names(self) -> list[str]:
        """The notice templates (those with a subject and text)."""
        return sorted(n for n, t in self._templates.items() if t.text is not None)

    def pages(self) -> list[str]:
        """The page templates (HTML only, such as ``suspended_page``)."""
        return sorted(n for n, t in self._templates.items() if t.text is None)

    def origin(self, name: str) -> list[Path]:
        """The files template ``name`` is read from."""
        tpl = self._get(name)
        return [p for p in (tpl.text, tpl.html) if p is not None]

    def require(self, names: Iterable[str]) -> None:
        """Raise :class:`TemplateError` naming every template of ``names`` that does not exist."""
        missing = sorted({n for n in names if n not in self._templates})
        if missing:
            raise TemplateError([f"template {n!r} not found; add {n}{TEXT_SUFFIX} to the templates folder or "
                                 f"use one of {', '.join(self.names())}" for n in missing])

    def _get(self, name: str) -> _Template:
        try:
            return self._templates[name]
        except KeyError:
            raise TemplateError([f"template {name!r} not found; the templates are "
                                 f"{', '.join(sorted(self._templates))}"]) from None

    def _variables(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """The environment's globals with ``context`` over them: what every part of one notice reads (made
        once per notice and shared by its parts, which cannot change it: a ``{% set %}`` writes to the
        part's own context)."""
        return {**self._env.globals, **context}

    def _render(self, part: str, path: Path, variables: dict[str, Any]) -> str:
        """``part`` rendered with ``variables`` (:meth:`_variables`): what ``Template.render`` does, without
        copying the variables and the globals into a new dict for every part."""
        try:
            found = self._compiled.get(part)
            if found is None:
                tpl = self._env.get_template(part)
                found = self._compiled[part] = (tpl, dict.fromkeys(tpl.globals))
            compiled, names = found
            ctx = self._env.context_class(self._env, variables, compiled.name, compiled.blocks, globals=names)
            try:
                return self._env.concat(compiled.root_render_func(ctx))
            except Exception:
                self._env.handle_exception()  # the traceback mapped to the template's lines
        except Exception as exc:  # the template's own code failed (range(10**9) is an OverflowError)
            line = _template_line(exc, path)
            where = f"{path}:{line}" if line is not None else str(path)
            raise TemplateError([f"{where}: {type(exc).__name__}: {str(exc).rstrip('.')}; fix the template"]) from exc

    def render(self, name: str, context: Mapping[str, Any]) -> RenderedNotice:
        tpl = self._get(name)
        if tpl.text is None:
            raise TemplateError([f"template {name!r} is a page, not a notice (it has no {name}{TEXT_SUFFIX})"])
        variables = self._variables(context)
        subject = self._render(tpl.text.name + "#subject", tpl.text, variables)
        text = self._render(tpl.text.name + "#body", tpl.text, variables).lstrip("\n")
        html = self._render(tpl.html.name, tpl.html, variables) if tpl.html is not None else None
        return RenderedNotice(subject=" ".join(subject.split()), text=text.rstrip() + "\n", html=html)

    def render_html(self, name: str, context: Mapping[str, Any]) -> str:
        tpl = self._get(name)
        if tpl.html is None:
            raise TemplateError([f"template {name!r} has no {name}{HTML_SUFFIX}"])
        return self._render(tpl.html.name, tpl.html, self._variables(context))


def render_page(templates: Templates, context: Mapping[str, Any], name: str = PAGE) -> str:
    """The suspended page's HTML. Variables missing from ``context`` are empty (a page may be generic)."""
    full: dict[str, Any] = dict.fromkeys(VARIABLES, "")
    full.update(context)
    return templates.render_html(name, full)
