"""Project policy for Dockerfiles that hadolint does not enforce.

hadolint checks general best practice (and runs in .ci/deploy-lint.sh too), but it accepts
an image that runs as root when no USER line exists, has no HEALTHCHECK, or is a single
stage with the compiler still in it.  These are the rules of docs/deployment.md:

* multi-stage: at least two FROM lines, and the final stage copies from an earlier one;
* every base image pinned by an explicit tag or digest, never ``latest``;
* the final stage runs as a non-root user (its last USER, by name or UID);
* a HEALTHCHECK (not ``NONE``) in the final stage;
* no ``ADD`` of a URL (unverified download);
* ``apt-get install`` with ``--no-install-recommends`` and the package lists removed in the
  same RUN; no compiler installed in the final stage;
* exec-form (JSON) ENTRYPOINT, so signals reach the process;
* the OCI labels ``org.opencontainers.image.{title,version,revision,created,licenses}``;
* no ENV/ARG that looks like a secret with a value baked in.

Usage: python .ci/dockerfile_check.py [Dockerfile ...]   (exit 1 and one line per problem)
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

REQUIRED_LABELS = (
    "org.opencontainers.image.title",
    "org.opencontainers.image.version",
    "org.opencontainers.image.revision",
    "org.opencontainers.image.created",
    "org.opencontainers.image.licenses",
)
ROOT_USERS = {"root", "0"}
COMPILER_PACKAGES = {"gcc", "g++", "clang", "build-essential", "make", "cc", "cpp"}
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|CREDENTIAL)", re.I)
_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


@dataclass(frozen=True)
class Instruction:
    line: int  # first physical line, 1-based
    keyword: str  # upper case
    args: str  # the rest, continuation lines joined with spaces


@dataclass
class Stage:
    index: int
    image: str
    name: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)


def parse(text: str) -> list[Instruction]:
    """Split a Dockerfile into instructions: comments dropped, ``\\`` continuations joined.

    Blank and comment lines inside a continued instruction are skipped, as Docker does.
    """
    out: list[Instruction] = []
    buf: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # blank lines and comments (parser directives too), also inside a
            # continued instruction, as Docker does
        if not buf:
            start = number
        if stripped.endswith("\\"):
            buf.append(stripped[:-1].strip())
            continue
        buf.append(stripped)
        joined = " ".join(part for part in buf if part)
        buf = []
        keyword, _, args = joined.partition(" ")
        out.append(Instruction(start, keyword.upper(), args.strip()))
    if buf:
        joined = " ".join(part for part in buf if part)
        keyword, _, args = joined.partition(" ")
        out.append(Instruction(start, keyword.upper(), args.strip()))
    return out


def _global_args(instructions: list[Instruction]) -> dict[str, str]:
    """ARG defaults declared before the first FROM (the only ones FROM can use)."""
    values: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "FROM":
            break
        if ins.keyword == "ARG":
            name, sep, default = ins.args.partition("=")
            if sep:
                values[name.strip()] = default.strip().strip("\"'")
    return values


def stages(instructions: list[Instruction]) -> list[Stage]:
    result: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            image = words[0] if words else ""
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            result.append(Stage(len(result), image, name, ins.line))
        elif result:
            result[-1].instructions.append(ins)
    return result


def _expand(value: str, args: dict[str, str]) -> str:
    return _VAR.sub(lambda m: args.get(m.group(1), m.group(0)), value)


def _image_problem(image: str, stage_names: set[str]) -> str | None:
    if image.lower() in stage_names or image == "scratch":
        return None
    if "$" in image:
        return f"base image {image!r} depends on an ARG without a pinned default"
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"base image {image!r} has no tag (pin it, e.g. python:3.11.14-slim-bookworm)"
    tag = last.split(":", 1)[1]
    if tag == "latest":
        return f"base image {image!r} uses the moving 'latest' tag"
    return None


def _labels(instructions: list[Instruction]) -> set[str]:
    keys: set[str] = set()
    for ins in instructions:
        if ins.keyword != "LABEL":
            continue
        try:
            words = shlex.split(ins.args)
        except ValueError:
            words = ins.args.split()
        for word in words:
            key, sep, _ = word.partition("=")
            if sep:
                keys.add(key.strip("\"'"))
    return keys


def _check_run(ins: Instruction, final: bool) -> list[str]:
    problems: list[str] = []
    # one RUN may hold several commands; look at each apt-get/apt install
    for command in re.split(r"&&|;|\|\|", ins.args):
        words = command.split()
        if len(words) < 2 or words[0] not in ("apt-get", "apt") or "install" not in words:
            continue
        if "--no-install-recommends" not in words:
            problems.append(f"line {ins.line}: apt-get install without --no-install-recommends")
        packages = {w.split("=", 1)[0] for w in words[words.index("install") + 1 :]}
        compilers = sorted(packages & COMPILER_PACKAGES)
        if final and compilers:
            problems.append(
                f"line {ins.line}: the final stage installs build tools {', '.join(compilers)} "
                "(build in an earlier stage and copy the result)"
            )
        if "/var/lib/apt/lists" not in ins.args:
            problems.append(
                f"line {ins.line}: apt-get install without removing /var/lib/apt/lists in the "
                "same RUN (the package lists stay in the layer)"
            )
    return problems


def check_text(text: str) -> list[str]:
    """All policy problems of a Dockerfile's text; empty means it passes."""
    instructions = parse(text)
    problems: list[str] = []
    all_stages = stages(instructions)
    if not all_stages:
        return ["no FROM instruction"]
    if len(all_stages) < 2:
        problems.append("single-stage build: build in one stage, copy the result into a clean one")
    args = _global_args(instructions)
    names: set[str] = set()
    for stage in all_stages:
        problem = _image_problem(_expand(stage.image, args), names)
        if problem:
            problems.append(f"line {stage.line}: {problem}")
        if stage.name:
            names.add(stage.name.lower())
    final = all_stages[-1]
    if len(all_stages) >= 2 and not any(
        ins.keyword == "COPY" and "--from=" in ins.args for ins in final.instructions
    ):
        problems.append("the final stage copies nothing from an earlier stage (COPY --from=)")
    users = [ins for ins in final.instructions if ins.keyword == "USER"]
    if not users:
        problems.append("the final stage has no USER: the container would run as root")
    else:
        user = users[-1].args.split(":", 1)[0].strip()
        if user in ROOT_USERS:
            problems.append(f"line {users[-1].line}: the final stage runs as root (USER {user})")
    health = [ins for ins in final.instructions if ins.keyword == "HEALTHCHECK"]
    if not health:
        problems.append("the final stage has no HEALTHCHECK")
    elif health[-1].args.strip().upper() == "NONE":
        problems.append(f"line {health[-1].line}: HEALTHCHECK NONE disables the health check")
    entrypoints = [ins for ins in final.instructions if ins.keyword == "ENTRYPOINT"]
    if entrypoints:
        try:
            parsed = json.loads(entrypoints[-1].args)
        except ValueError:
            parsed = None
        if not isinstance(parsed, list):
            problems.append(
                f"line {entrypoints[-1].line}: ENTRYPOINT in shell form (signals go to /bin/sh, "
                'not the program): use ["program", ...]'
            )
    missing = [key for key in REQUIRED_LABELS if key not in _labels(final.instructions)]
    if missing:
        problems.append(f"the final stage lacks the OCI labels {', '.join(missing)}")
    for stage in all_stages:
        for ins in stage.instructions:
            if ins.keyword == "ADD" and re.search(r"\bhttps?://", ins.args):
                problems.append(f"line {ins.line}: ADD of a URL (use a verified download)")
            if ins.keyword == "RUN":
                problems.extend(_check_run(ins, stage is final))
            if ins.keyword in ("ENV", "ARG"):
                problems.extend(_secret_problems(ins))
    return problems


def _secret_problems(ins: Instruction) -> list[str]:
    try:
        words = shlex.split(ins.args)
    except ValueError:
        words = ins.args.split()
    if ins.keyword == "ENV" and len(words) >= 2 and "=" not in words[0]:
        words = [f"{words[0]}={' '.join(words[1:])}"]  # legacy "ENV KEY value"
    problems = []
    for word in words:
        name, sep, value = word.partition("=")
        if sep and value and SECRET_NAME.search(name):
            problems.append(
                f"line {ins.line}: {ins.keyword} {name} bakes a secret-looking value into the "
                "image (pass it at run time)"
            )
    return problems


def main(argv: list[str]) -> int:
    paths = [Path(p) for p in argv] or [Path("Dockerfile")]
    failed = False
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
            failed = True
            continue
        problems = check_text(text)
        for problem in problems:
            print(f"{path}: {problem}", file=sys.stderr)
        if problems:
            failed = True
        else:
            print(f"{path}: Dockerfile policy OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
