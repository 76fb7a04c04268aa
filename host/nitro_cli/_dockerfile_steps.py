"""Carrying out a parsed Dockerfile without a Docker engine: one handler per instruction.

What each instruction does here (docs.docker.com/reference/dockerfile; moby/buildkit
``frontend/dockerfile/dockerfile2llb``):

- ``ARG`` before the first ``FROM`` is global (usable in ``FROM``, inherited by a same-named ``ARG`` in the
  stage); in the stage it is a variable for later substitutions, never part of the image's Env. A
  ``build_args`` value replaces a declared ARG's default. ``TARGETPLATFORM``, ``TARGETOS``,
  ``TARGETARCH``, ``BUILDPLATFORM``... are predefined as linux/amd64 (global scope; in the stage once
  declared). ENV wins over ARG of the same name.
- ``FROM [--platform=linux/amd64] image [AS name]``: the base is recorded, never pulled, so its files, Env,
  CMD and ENTRYPOINT are unknown: the image starts empty, with Env ``PATH=`` :data:`DEFAULT_PATH` (what
  buildkit gives a base without one). Only one stage: a second ``FROM`` is refused.
- ``COPY``/``ADD`` of local files: ``--chmod`` (octal) is applied to the files (Docker applies it to the
  copied directories too, which makes ``--chmod=644`` directories untraversable; here they stay 0o755),
  ``--chown`` accepted and ignored (the image is root's), ``--link`` accepted (no effect on content).
  ``COPY --from``, ``--parents``, ``--exclude``, ADD of a URL or git repository, and ADD of a local tar
  archive (Docker would unpack it) are refused. Several sources, or a wildcard, need a destination
  ending in ``/``.
- ``WORKDIR`` (relative to the previous one) creates the directory. ``ENV`` (``K V`` and ``K=V ...``,
  values substituted with the variables as they were before the line), ``LABEL``, ``USER``, ``EXPOSE``
  (ranges expanded), ``VOLUME``, ``STOPSIGNAL``, ``SHELL``, ``HEALTHCHECK`` and ``MAINTAINER`` are recorded
  in the image config.
- ``CMD``/``ENTRYPOINT``: exec form as given; shell form becomes the SHELL (default ``/bin/sh -c``) plus the
  text. ``ENTRYPOINT`` clears the CMD only when no CMD was set in this Dockerfile (Docker clears the
  base image's CMD, which is unknown here anyway). No substitution in CMD, ENTRYPOINT, RUN, SHELL.
- ``RUN`` is not executed: ``(line, text)`` is kept for the caller to report. ``ONBUILD`` is refused.
- nitro-cli writes the argv and Env one per line into the ``cmd`` and ``env`` files the enclave's init
  reads with ``getline``, so a newline or NUL in an argument or a variable is refused here.
"""

from __future__ import annotations

import posixpath
import re
import stat
from collections.abc import Callable, Mapping

from host.nitro_cli._build_context import BuildContext, ContextEntry, NotFoundError
from host.nitro_cli._dockerfile_parse import (
    DockerfileError,
    Instruction,
    ParsedDockerfile,
    StepError,
    exec_form,
    parse_flags,
    split_words,
)
from host.nitro_cli._dockerfile_shell import process_word
from host.nitro_cli._dockerfile_values import (
    bounded,
    check_line_safe,
    check_signal,
    check_text,
    healthcheck,
    is_archive,
    octal_mode,
    ports,
)
from host.nitro_cli._dockerignore import go_clean, has_glob
from host.nitro_cli._image_tree import LINK_MODE, ImageTree

__all__ = ["DEFAULT_PATH", "DEFAULT_SHELL", "PREDEFINED_ARGS", "Builder"]

#: The PATH buildkit puts in an image config that has none (``system.DefaultPathEnv``).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHELL = ("/bin/sh", "-c")
PREDEFINED_ARGS: Mapping[str, str] = {
    f"{side}{suffix}": value
    for side in ("TARGET", "BUILD")
    for suffix, value in (("PLATFORM", "linux/amd64"), ("OS", "linux"), ("ARCH", "amd64"), ("VARIANT", ""))
}
_COPY_FLAGS = frozenset({"from", "chown", "chmod", "link", "parents", "exclude"})
_ADD_FLAGS = frozenset({"chown", "chmod", "link", "checksum", "keep-git-dir", "exclude", "unpack"})
_HEALTH_FLAGS = frozenset({"interval", "timeout", "start-period", "start-interval", "retries"})
_URL_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://|git@")
_STAGE_RE = re.compile(r"[a-z][a-z0-9_.-]*")


class Builder:
    """Runs the instructions of one Dockerfile against a build context and records the image config."""

    def __init__(
        self, parsed: ParsedDockerfile, context: BuildContext, build_args: Mapping[str, str]
    ) -> None:
        self.parsed = parsed
        self.context = context
        self.build_args = dict(build_args)
        self.tree = ImageTree()
        self.base: str | None = None
        self.stage: str | None = None
        self.global_args: dict[str, str | None] = {}
        self.args: dict[str, str | None] = {}
        self.env: dict[str, str] = {"PATH": DEFAULT_PATH}
        self.cmd: list[str] | None = None
        self.cmd_set = False
        self.entrypoint: list[str] | None = None
        self.shell: list[str] | None = None
        self.workdir = ""
        self.user = ""
        self.author = ""
        self.labels: dict[str, str] = {}
        self.ports: dict[str, None] = {}
        self.volumes: dict[str, None] = {}
        self.stop_signal: str | None = None
        self.healthcheck: dict[str, object] | None = None
        self.not_executed: list[tuple[int, str]] = []
        self._handlers: dict[str, Callable[[Instruction], None]] = {
            "ADD": self._add, "ARG": self._arg, "CMD": self._cmd, "COPY": self._copy,
            "ENTRYPOINT": self._entrypoint, "ENV": self._env, "EXPOSE": self._expose, "FROM": self._from,
            "HEALTHCHECK": self._healthcheck, "LABEL": self._label, "MAINTAINER": self._maintainer,
            "ONBUILD": self._onbuild, "RUN": self._run, "SHELL": self._shell, "STOPSIGNAL": self._stopsignal,
            "USER": self._user, "VOLUME": self._volume, "WORKDIR": self._workdir,
        }  # fmt: skip

    def run(self) -> None:
        """Carry out every instruction; raise a located :class:`DockerfileError` at the first refusal."""
        name = self.parsed.name
        for inst in self.parsed.instructions:
            where = f"{name}:{inst.lineno}: {inst.keyword}"
            if self.base is None and inst.keyword not in ("ARG", "FROM"):
                raise DockerfileError(f"{where} before the first FROM (no build stage in current context)")
            if not inst.args:
                raise DockerfileError(f"{where} requires at least one argument")
            try:
                self._handlers[inst.keyword](inst)
            except StepError as exc:
                raise DockerfileError(f"{where}: {exc}") from None
            except DockerfileError as exc:
                raise DockerfileError(f"{name}:{inst.lineno}: {exc}") from None
        if self.base is None:
            raise DockerfileError(f"{name}: no FROM instruction")

    # -- substitution --------------------------------------------------------------------------------

    def variables(self) -> dict[str, str]:
        """What ``$NAME`` sees now: the stage's ARGs, overridden by ENV."""
        found = {key: value for key, value in self.args.items() if value is not None}
        found.update(self.env)
        return found

    def expand(self, word: str, variables: Mapping[str, str] | None = None) -> str:
        env = self.variables() if variables is None else variables
        return process_word(word, env, escape=self.parsed.escape)

    def _pairs(self, inst: Instruction) -> list[tuple[str, str]]:
        """``K V`` or ``K=V ...`` (buildkit's ``parseNameVal``), before substitution."""
        words = split_words(inst.args, self.parsed.escape)
        if not words:
            raise StepError("requires at least one argument")
        if "=" not in words[0]:
            parts = re.split(r"[\t\v\f\r ]+", inst.args, maxsplit=1)
            if len(parts) < 2:
                raise StepError("must have two arguments")
            return [(parts[0], parts[1])]
        pairs = []
        for word in words:
            key, sep, value = word.partition("=")
            if not sep:
                raise StepError(
                    f"Syntax error - can't find = in {word[:80]!r}. Must be of the form: name=value"
                )
            pairs.append((key, value))
        return pairs

    # -- instructions --------------------------------------------------------------------------------

    def _arg(self, inst: Instruction) -> None:
        parse_flags(inst, frozenset())
        in_stage = self.base is not None
        for word in split_words(inst.args, self.parsed.escape):
            raw_key, sep, raw_value = word.partition("=")
            scope = self.variables() if in_stage else self._global_variables()
            key = self.expand(raw_key, scope)
            if not key:
                raise StepError("ARG names can not be blank")
            value: str | None
            if key in self.build_args:
                value = self.build_args[key]
            elif sep:
                value = self.expand(raw_value, scope)
            elif in_stage and self.global_args.get(key) is not None:
                value = self.global_args[key]
            else:
                value = PREDEFINED_ARGS.get(key) if in_stage else None
            bounded(self.args if in_stage else self.global_args, key)
            (self.args if in_stage else self.global_args)[key] = value

    def _global_variables(self) -> dict[str, str]:
        found = dict(PREDEFINED_ARGS)
        found.update({key: value for key, value in self.global_args.items() if value is not None})
        return found

    def _from(self, inst: Instruction) -> None:
        if self.base is not None:
            raise DockerfileError(
                "a second FROM (a multi-stage build) is not supported without a Docker engine"
            )
        flags = parse_flags(inst, frozenset({"platform"}))
        scope = self._global_variables()
        platform = flags.get("platform")
        if platform is not None and self.expand(platform, scope) not in ("linux/amd64", "linux/x86_64"):
            raise StepError(f"--platform={platform[:40]}: only linux/amd64 images are built here")
        words = inst.args.split()
        if len(words) not in (1, 3) or (len(words) == 3 and words[1].lower() != "as"):
            raise StepError("FROM requires either one or three arguments")
        base = self.expand(words[0], scope)
        if not base:
            raise StepError(f"base name ({words[0][:80]}) should not be blank")
        if len(words) == 3:
            if not _STAGE_RE.fullmatch(words[2].lower()):
                raise StepError(f"invalid name for build stage: {words[2][:80]!r}")
            self.stage = words[2].lower()
        self.base = base

    def _copy(self, inst: Instruction) -> None:
        self._copy_or_add(inst, add=False)

    def _add(self, inst: Instruction) -> None:
        self._copy_or_add(inst, add=True)

    def _copy_or_add(self, inst: Instruction, *, add: bool) -> None:
        flags = parse_flags(inst, _ADD_FLAGS if add else _COPY_FLAGS)
        if "from" in flags:
            raise StepError("--from (another stage or image) is not supported without a Docker engine")
        for name in ("parents", "exclude", "checksum", "keep-git-dir", "unpack"):
            if name in flags:
                raise StepError(f"--{name} is not supported without a Docker engine")
        chmod = octal_mode(self.expand(flags["chmod"] or "")) if "chmod" in flags else None
        words = exec_form(inst.args)
        words = [
            check_text(self.expand(word), "a path")
            for word in (inst.args.split() if words is None else words)
        ]
        if len(words) < 2:
            raise StepError("requires at least two arguments: a source and a destination")
        sources, dest = words[:-1], words[-1]
        found: list[tuple[str, str, list[ContextEntry]]] = []  # (name it lands under, context path, what)
        for source in sources:
            if _URL_RE.match(source):
                what = "a URL or git source" if add else "a URL (COPY takes none)"
                raise StepError(
                    f"{source[:200]}: {what} needs the network, which the simulation does not use"
                )
            if not has_glob(source):
                path = self.context.resolve(source)
                found.append((posixpath.basename(go_clean(source)), path, self.context.collect(path)))
                continue
            matched = False
            for match in self.context.glob(source):
                path = self.context.resolve(match)
                try:  # an ignored directory that "!" patterns re-include nothing from is not there
                    found.append((posixpath.basename(match), path, self.context.collect(path)))
                except NotFoundError:
                    continue
                matched = True
            if not matched:
                raise StepError(f"{source[:200]}: no source files match in the build context")
        into_dir = dest.endswith(("/", "/.")) or dest in ("", ".")
        if (len(sources) > 1 or len(found) > 1) and not into_dir:
            raise StepError(
                f"When using {inst.keyword} with more than one source file, the destination must be a "
                "directory and end with a /"
            )
        target = go_clean(posixpath.join(self.workdir or "/", dest)).lstrip("/")
        for name, context_path, entries in found:
            if len(entries) == 1 and entries[0].path == "" and entries[0].kind != "dir":
                if add and is_archive(entries[0].data):
                    raise StepError(
                        f"{context_path[:200]} is a tar archive, which ADD would unpack: not supported"
                    )
                here = (
                    f"{target}/{name}"
                    if target and (into_dir or self.tree.is_dir(target))
                    else target or name
                )
                self._place(here, entries[0], chmod)
                continue
            self.tree.mkdir(target)
            for entry in entries:
                self._place(f"{target}/{entry.path}" if target else entry.path, entry, chmod)

    def _place(self, path: str, entry: ContextEntry, chmod: int | None) -> None:
        if entry.kind == "dir":
            self.tree.mkdir(path)
        elif entry.kind == "link":
            self.tree.put(path, LINK_MODE, entry.data)
        else:
            mode = chmod if chmod is not None else 0o755 if entry.executable else 0o644
            self.tree.put(path, stat.S_IFREG | mode, entry.data)

    def _workdir(self, inst: Instruction) -> None:
        parse_flags(inst, frozenset())
        path = check_text(self.expand(inst.args), "WORKDIR")
        if not path:
            raise StepError("WORKDIR requires exactly one argument")
        self.workdir = go_clean(posixpath.join(self.workdir or "/", path))
        self.tree.mkdir(self.workdir.lstrip("/"))

    def _env(self, inst: Instruction) -> None:
        parse_flags(inst, frozenset())
        before = self.variables()  # ENV A=1 B=$A: B sees A as it was before this line
        for raw_key, raw_value in self._pairs(inst):
            key, value = self.expand(raw_key, before), self.expand(raw_value, before)
            if not key:
                raise StepError("ENV names can not be blank")
            check_line_safe(f"{key}={value}", "the variable")
            bounded(self.env, key)
            self.env[key] = value

    def _label(self, inst: Instruction) -> None:
        parse_flags(inst, frozenset())
        for raw_key, raw_value in self._pairs(inst):
            key, value = self.expand(raw_key), self.expand(raw_value)
            if not key:
                raise StepError("LABEL names can not be blank")
            check_text(key + value, "the label")
            bounded(self.labels, key)
            self.labels[key] = value

    def _user(self, inst: Instruction) -> None:
        parse_flags(inst, frozenset())
        self.user = self.expand(inst.args)
        check_text(self.user, "USER")

    def _maintainer(self, inst: Instruction) -> None:
        parse_flags(inst, frozenset())
        check_text(inst.args, "MAINTAINER")
        self.author = inst.args

    def _expose(self, inst: Instruction) -> None:
        parse_flags(inst, frozenset())
        for word in inst.args.split():
            for port in ports(self.expand(word)):
                bounded(self.ports, port)
                self.ports[port] = None

    def _volume(self, inst: Instruction) -> None:
        parse_flags(inst, frozenset())
        words = exec_form(inst.args)
        for word in inst.args.split() if words is None else words:
            path = self.expand(word)
            if not path:
                raise StepError("VOLUME specified can not be an empty string")
            check_text(path, "VOLUME")
            bounded(self.volumes, path)
            self.volumes[path] = None

    def _stopsignal(self, inst: Instruction) -> None:
        parse_flags(inst, frozenset())
        self.stop_signal = check_signal(self.expand(inst.args))

    def _shell(self, inst: Instruction) -> None:
        parse_flags(inst, frozenset())
        words = exec_form(inst.args)
        if not words:
            raise StepError("SHELL requires the arguments to be in JSON form, with at least one element")
        self.shell = [check_line_safe(word, "SHELL") for word in words]

    def _command(self, inst: Instruction) -> list[str]:
        parse_flags(inst, frozenset())
        words = exec_form(inst.args)
        if words is None:
            words = [*(self.shell or DEFAULT_SHELL), inst.args]
        return [check_line_safe(word, f"the {inst.keyword}") for word in words]

    def _cmd(self, inst: Instruction) -> None:
        self.cmd = self._command(inst)
        self.cmd_set = True

    def _entrypoint(self, inst: Instruction) -> None:
        self.entrypoint = self._command(inst)
        if not self.cmd_set:
            self.cmd = None

    def _healthcheck(self, inst: Instruction) -> None:
        self.healthcheck = healthcheck(inst.args, parse_flags(inst, _HEALTH_FLAGS))

    def _run(self, inst: Instruction) -> None:
        self.not_executed.append((inst.lineno, inst.text))

    def _onbuild(self, inst: Instruction) -> None:
        raise DockerfileError("ONBUILD is not supported without a Docker engine")
