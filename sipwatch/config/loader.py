"""Load the configuration: file, then environment overrides, then validation against the schema."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from sipwatch.config.locator import locate_keys
from sipwatch.config.problems import (
    AlreadyRecorded,
    BadValue,
    ConfigError,
    ConfigProblem,
    describe_got,
    did_you_mean,
    format_number,
    type_phrase,
)
from sipwatch.config.schema import (
    CONFIG_PATH_ENV,
    DEFAULT_CONFIG_PATHS,
    GENERIC_ENV_PREFIX,
    Config,
    ConfigMeta,
    KeyPath,
    SchemaField,
    SettingMeta,
    format_path,
    is_table_type,
    schema_fields,
    table_array_item,
    unwrap_optional,
)
from sipwatch.config.secrets import Secret

# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _all_setting_paths(cls: type, prefix: KeyPath = ()) -> Iterator[tuple[KeyPath, SchemaField]]:
    """Every setting path of the schema (arrays of tables as ``x[0]``)."""
    for sf in schema_fields(cls):
        path = (*prefix, sf.name)
        item = table_array_item(sf.type)
        if is_table_type(sf.type):
            yield from _all_setting_paths(sf.type, path)
        elif item is not None:
            yield path, sf
            yield from _all_setting_paths(item, (*path, 0))
        else:
            yield path, sf


def env_aliases() -> dict[str, KeyPath]:
    """Named environment variables -> the setting they override."""
    return {sf.meta.env: path for path, sf in _all_setting_paths(Config) if sf.meta.env}


def generic_env_name(path: KeyPath) -> str:
    return GENERIC_ENV_PREFIX + "__".join(str(p).upper() for p in path)


class _Loader:
    def __init__(self, source: str | None, environ: Mapping[str, str]) -> None:
        self.source = source
        self.environ = environ
        self.problems: list[ConfigProblem] = []
        self.warnings: list[str] = []
        self.data: dict[str, Any] = {}
        self.lines: dict[KeyPath, int] = {}
        # where a value came from, when not the file: path -> (where, line)
        self.overrides: dict[KeyPath, tuple[str, int | None]] = {}

    # -- problem reporting ------------------------------------------------------------------

    def where(self, path: KeyPath) -> tuple[str, int | None]:
        for n in range(len(path), -1, -1):
            prefix = path[:n]
            if prefix in self.overrides:
                return self.overrides[prefix]
            if prefix in self.lines and self.source is not None:
                return self.source, self.lines[prefix]
        return (self.source or "configuration"), None

    def error(self, path: KeyPath, message: str) -> None:
        where, line = self.where(path)
        self.problems.append(ConfigProblem(where, line, format_path(path), message))

    def origin_note(self, path: KeyPath) -> str | None:
        if path in self.overrides:
            where, line = self.overrides[path]
            return where + (f":{line}" if line else "")
        if path in self.lines and self.source is not None:
            return f"{self.source}:{self.lines[path]}"
        return None

    # -- layers -----------------------------------------------------------------------------

    def read_file(self, path: Path) -> None:
        try:
            text = path.read_bytes().decode("utf-8")
        except OSError as exc:
            self.problems.append(
                ConfigProblem(str(path), None, "", f"cannot read the file: {exc.strerror}")
            )
            return
        except UnicodeDecodeError:
            self.problems.append(ConfigProblem(str(path), None, "", "the file is not UTF-8"))
            return
        self.parse_text(text)

    def parse_text(self, text: str) -> None:
        try:
            self.data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            line = _decode_error_line(exc)
            self.problems.append(
                ConfigProblem(self.source or "<config>", line, "", f"invalid TOML: {exc}")
            )
            return
        self.lines = locate_keys(text)

    def apply_environment(self) -> None:
        applied: dict[KeyPath, str] = {}
        for name in sorted(self.environ):
            if name.startswith(GENERIC_ENV_PREFIX):
                parts = name[len(GENERIC_ENV_PREFIX) :].split("__")
                path: KeyPath = tuple(int(p) if p.isdigit() else p.lower() for p in parts)
                if self.apply_env(name, path, self.environ[name]):
                    applied[path] = name
        for name, path in env_aliases().items():
            if name not in self.environ:
                continue
            if path in applied:
                self.problems.append(
                    ConfigProblem(
                        f"environment variable {name}",
                        None,
                        format_path(path),
                        f"also set by {applied[path]}; set only one of them",
                    )
                )
                continue
            self.apply_env(name, path, self.environ[name])
        docker_host = self.environ.get("DOCKER_HOST", "")
        sources = self.data.get("sources", {})
        docker = sources.get("docker", {}) if isinstance(sources, dict) else None
        if docker_host and isinstance(docker, dict) and "url" not in docker:
            self.set_value(("sources", "docker", "url"), docker_host, "DOCKER_HOST")

    def apply_env(self, name: str, path: KeyPath, raw: str) -> bool:
        where = f"environment variable {name}"
        try:
            leaf_type = self.schema_type_at(path)
        except BadValue as exc:
            self.problems.append(ConfigProblem(where, None, format_path(path), str(exc)))
            return False
        inner, _ = unwrap_optional(leaf_type)
        value: Any
        if raw == "":
            value = None  # an empty variable means "unset": back to the default
        elif inner is str or inner is Secret or get_origin(inner) is Literal:
            value = raw
        elif get_origin(inner) is tuple:
            value = _parse_toml_value(raw)
            if not isinstance(value, list):
                value = [item.strip() for item in raw.split(",") if item.strip()]
        else:
            value = _parse_toml_value(raw)
            if value is None:
                value = raw  # conversion reports "expected an integer, got string ..."
        try:
            self.set_value(path, value, name)
        except BadValue as exc:
            self.problems.append(ConfigProblem(where, None, format_path(path), str(exc)))
            return False
        return True

    def schema_type_at(self, path: KeyPath) -> Any:
        """The type of the setting at ``path``; BadValue (with a suggestion) if there is none."""
        tp: Any = Config
        for i, part in enumerate(path):
            here = format_path(path[:i]) or "the top level"
            item = table_array_item(tp)
            if item is not None:
                if not isinstance(part, int):
                    raise BadValue(
                        f"{here} is an array of tables; give an index, e.g. "
                        f"{generic_env_name((*path[:i], 0))}__..."
                    )
                tp = item
                continue
            if get_origin(tp) is Mapping:
                tp = get_args(tp)[1]
                continue
            if not is_table_type(tp) or isinstance(part, int):
                raise BadValue(f"{here} is not a table")
            names = [sf.name for sf in schema_fields(tp)]
            match = {sf.name: sf.type for sf in schema_fields(tp)}.get(str(part))
            if match is None:
                hint = difflib.get_close_matches(str(part), names, n=1, cutoff=0.6)
                msg = f"unknown key '{part}' in {here}"
                if hint:
                    msg += f"; did you mean {generic_env_name((*path[:i], hint[0]))}?"
                raise BadValue(msg)
            tp = match
        if is_table_type(tp) or table_array_item(tp) is not None or get_origin(tp) is Mapping:
            raise BadValue("names a table, not a setting; name one of its keys")
        return tp

    def is_setting(self, path: KeyPath) -> bool:
        try:
            self.schema_type_at(path)
        except BadValue:
            return False
        return True

    def set_value(self, path: KeyPath, value: Any, env_name: str) -> None:
        node: Any = self.data
        for i, part in enumerate(path[:-1]):
            if isinstance(part, int):
                if not isinstance(node, list) or part >= len(node):
                    size = len(node) if isinstance(node, list) else 0
                    raise BadValue(
                        f"{format_path(path[: i + 1])} does not exist (the file defines {size}); "
                        "the environment can only change existing array entries"
                    )
                node = node[part]
            else:
                if not isinstance(node, dict):
                    raise BadValue(f"{format_path(path[:i])} is not a table in the file")
                node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise BadValue(f"{format_path(path[:-1])} is not a table in the file")
        leaf = path[-1]
        assert isinstance(leaf, str)
        # env beats file: setting x or x_file discards the other one from the file
        sibling = leaf[: -len("_file")] if leaf.endswith("_file") else f"{leaf}_file"
        if self.is_setting((*path[:-1], sibling)):
            node.pop(sibling, None)
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
        for known in [p for p in (*self.lines, *self.overrides) if p[: len(path)] == path]:
            self.lines.pop(known, None)
            self.overrides.pop(known, None)
        self.overrides[path] = (f"environment variable {env_name}", None)

    def read_secret_files(self, cls: type, node: Any, path: KeyPath) -> None:
        """Resolve ``x_file`` keys into ``x`` before validation, so the value read is checked
        exactly like an inline one."""
        if not isinstance(node, dict):
            return
        for sf in schema_fields(cls):
            sub = (*path, sf.name)
            value = node.get(sf.name)
            item = table_array_item(sf.type)
            if is_table_type(sf.type):
                self.read_secret_files(sf.type, value, sub)
            elif item is not None and isinstance(value, list):
                for i, element in enumerate(value):
                    self.read_secret_files(item, element, (*sub, i))
            elif sf.meta.file_for and isinstance(value, str):
                target = sf.meta.file_for
                if target in node:
                    self.error(sub, f"set either '{target}' or '{sf.name}', not both")
                    continue
                try:
                    content = Path(value).read_text(encoding="utf-8").strip()
                except (OSError, UnicodeDecodeError) as exc:
                    reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                    self.error(sub, f"cannot read secret file '{value}': {reason}")
                    continue
                if not content:
                    self.error(sub, f"secret file '{value}' is empty")
                    continue
                node[target] = content
                where, line = self.where(sub)
                location = where + (f":{line}" if line else "")
                self.overrides[(*path, target)] = (f"{location} ({sf.name} '{value}')", None)

    # -- conversion -------------------------------------------------------------------------

    def build(self, cls: type, raw: Any, path: KeyPath) -> Any:
        if not isinstance(raw, dict):
            raise BadValue(f"expected a table, {describe_got(raw, False)}")
        fields = schema_fields(cls)
        names = [sf.name for sf in fields]
        failed = False
        for key in raw:
            if key not in names:
                self.error((*path, key), "unknown key" + self.key_hint(key, names, path))
                failed = True
        kwargs: dict[str, Any] = {}
        for sf in fields:
            sub = (*path, sf.name)
            if sf.name not in raw:
                if sf.required:
                    self.error(sub, f"missing required key (expected {type_phrase(sf.type)})")
                    failed = True
                continue
            try:
                kwargs[sf.name] = self.convert_field(sf, raw[sf.name], sub)
            except BadValue as exc:
                self.error(sub, str(exc))
                failed = True
            except AlreadyRecorded:
                failed = True
        if failed:
            raise AlreadyRecorded
        return cls(**kwargs)

    def key_hint(self, key: str, names: list[str], path: KeyPath) -> str:
        hint = did_you_mean(key, names)
        if hint:
            return hint
        elsewhere = sorted(
            format_path(p) for p, _ in _all_setting_paths(Config) if p[-1] == key and p[:-1] != path
        )
        if elsewhere:
            return f"; '{key}' belongs in {' or '.join(elsewhere)}"
        return f" (known keys: {', '.join(names)})"

    def convert_field(self, sf: SchemaField, raw: Any, path: KeyPath) -> Any:
        meta = sf.meta
        if meta.parse is not None:
            try:
                value = meta.parse(raw)
            except ValueError as exc:
                raise BadValue(f"{exc}, {describe_got(raw, bool(meta.mask))}") from None
        else:
            value = self.convert(sf.type, raw, path, meta)
        if isinstance(value, int | float) and not isinstance(value, bool):
            got_text = describe_got(raw, False)
            if meta.positive and value <= 0:
                raise BadValue(f"expected a number > 0, {got_text}")
            if meta.minimum is not None and value < meta.minimum:
                raise BadValue(f"expected a number >= {format_number(meta.minimum)}, {got_text}")
            if meta.maximum is not None and value > meta.maximum:
                raise BadValue(f"expected a number <= {format_number(meta.maximum)}, {got_text}")
        if meta.check is not None:
            try:
                value = meta.check(value)
            except ValueError as exc:
                raise BadValue(str(exc)) from None
        return value

    def convert(self, tp: Any, raw: Any, path: KeyPath, meta: SettingMeta) -> Any:
        tp, _ = unwrap_optional(tp)
        origin = get_origin(tp)
        secret = bool(meta.mask)
        if tp is bool:
            if isinstance(raw, bool):
                return raw
        elif tp is int:
            if isinstance(raw, int) and not isinstance(raw, bool):
                return raw
        elif tp is float:
            if isinstance(raw, int | float) and not isinstance(raw, bool):
                return float(raw)
        elif tp is str:
            if isinstance(raw, str):
                return raw
        elif tp is Secret:
            if isinstance(raw, str):
                if not raw:
                    raise BadValue("expected a non-empty string")
                return Secret(raw)
        elif origin is Literal:
            choices = get_args(tp)
            if isinstance(raw, str):
                if raw.lower() in choices:
                    return raw.lower()
                raise BadValue(
                    f"expected {type_phrase(tp)}, {describe_got(raw, secret)}"
                    + did_you_mean(raw.lower().replace("_", "-"), choices)
                )
        elif origin is tuple:
            if isinstance(raw, list):
                return self.convert_items(get_args(tp)[0], raw, path, meta)
        elif origin is Mapping:
            if isinstance(raw, dict):
                return self.convert_mapping(get_args(tp)[1], raw, path, meta)
        elif is_table_type(tp):
            return self.build(tp, raw, path)
        raise BadValue(f"expected {type_phrase(tp)}, {describe_got(raw, secret)}")

    def convert_items(self, tp: Any, raw: list[Any], path: KeyPath, meta: SettingMeta) -> Any:
        items = []
        failed = False
        for i, element in enumerate(raw):
            try:
                items.append(self.convert(tp, element, (*path, i), meta))
            except BadValue as exc:
                self.error((*path, i), str(exc))
                failed = True
            except AlreadyRecorded:
                failed = True
        if failed:
            raise AlreadyRecorded
        return tuple(items)

    def convert_mapping(
        self, tp: Any, raw: dict[str, Any], path: KeyPath, meta: SettingMeta
    ) -> Any:
        out = {}
        failed = False
        for key, element in raw.items():
            if meta.keys is not None and key not in meta.keys:
                self.error(
                    (*path, key),
                    "unknown key"
                    + (did_you_mean(key, meta.keys) or f" (known keys: {', '.join(meta.keys)})"),
                )
                failed = True
                continue
            try:
                out[key] = self.convert(tp, element, (*path, key), meta)
            except BadValue as exc:
                self.error((*path, key), str(exc))
                failed = True
        if failed:
            raise AlreadyRecorded
        return types.MappingProxyType(out)

    # -- whole-config rules -----------------------------------------------------------------

    def finish(self, config: Config) -> Config:
        targets = []
        seen: dict[str, int] = {}
        for i, target in enumerate(config.alerts.targets):
            path: KeyPath = ("alerts", "targets", i)
            if target.url is None:
                self.error((*path, "url"), "missing required key (expected url or url_file)")
            name = target.name or f"target{i + 1}"
            if name in seen:
                self.error(
                    (*path, "name"),
                    f"duplicate target name '{name}' (also alerts.targets[{seen[name]}])",
                )
            seen[name] = i
            targets.append(dataclasses.replace(target, name=name))
        alerts = dataclasses.replace(config.alerts, targets=tuple(targets))

        rem = config.remediation
        if rem.mode != "off" and config.database.url is None:
            self.error(
                ("remediation", "mode"),
                f'"{rem.mode}" needs the jambonz database: set database.url (or SIPWATCH_DB_URL)',
            )
        if rem.mode != "off" and not (rem.allow_users or rem.allow_realms):
            self.warnings.append(
                f'remediation.mode is "{rem.mode}" but remediation.allow_users and '
                "allow_realms are empty, so no user will be changed"
            )
        src = config.sources
        if not (
            src.docker.enabled
            or src.files
            or src.stdin
            or src.kubernetes.enabled is True
            or src.hep.listen
        ):
            self.warnings.append(
                "no log source is enabled (sources.docker.enabled = false, "
                "sources.kubernetes.enabled = false, no sources.files, sources.stdin = false, "
                "no sources.hep.listen); only `sipwatch replay` will have input"
            )
        if config.database.url is not None and config.jambonz.encryption_secret is None:
            self.warnings.append(
                "jambonz.encryption_secret is not set: client passwords in the database "
                "cannot be checked, so bad-password failures cannot be told apart"
            )
        return dataclasses.replace(config, alerts=alerts)

    def origins(self) -> dict[str, str]:
        result = {}
        for path in {*self.lines, *self.overrides}:
            note = self.origin_note(path)
            if note is not None:
                result[format_path(path)] = note
        return result


def _decode_error_line(exc: tomllib.TOMLDecodeError) -> int | None:
    line = getattr(exc, "lineno", None)
    if isinstance(line, int):
        return line
    m = re.search(r"line (\d+)", str(exc))
    return int(m.group(1)) if m else None


def _parse_toml_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return None


def find_config_file(
    path: str | os.PathLike[str] | None,
    environ: Mapping[str, str],
    search_paths: Sequence[Path] = DEFAULT_CONFIG_PATHS,
) -> tuple[Path | None, bool]:
    """The file to load and whether it was asked for explicitly (then it must exist)."""
    if path is not None:
        return Path(path), True
    if environ.get(CONFIG_PATH_ENV):
        return Path(environ[CONFIG_PATH_ENV]), True
    for candidate in search_paths:
        if candidate.is_file():
            return candidate, False
    return None, False


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    search_paths: Sequence[Path] = DEFAULT_CONFIG_PATHS,
) -> Config:
    """Load, override from the environment and validate.  Raises ConfigError.

    ``path`` None means $SIPWATCH_CONFIG, else the first of ``search_paths`` that exists,
    else no file (built-in defaults).  ``environ`` defaults to ``os.environ``.
    """
    env = os.environ if environ is None else environ
    file, explicit = find_config_file(path, env, search_paths)
    if file is not None and explicit and not file.exists():
        via = f" (from ${CONFIG_PATH_ENV})" if path is None else ""
        raise ConfigError([ConfigProblem(str(file), None, "", f"file not found{via}")])
    loader = _Loader(str(file) if file is not None else None, env)
    if file is not None:
        loader.read_file(file)
    return _finish_loading(loader)


def parse_config(
    text: str, *, source: str = "<config>", environ: Mapping[str, str] | None = None
) -> Config:
    """Like ``load_config`` for TOML text already in memory (tests, ``--config -``)."""
    loader = _Loader(source, {} if environ is None else environ)
    loader.parse_text(text)
    return _finish_loading(loader)


def _finish_loading(loader: _Loader) -> Config:
    if loader.problems:  # unreadable file or invalid TOML: nothing more to check
        raise ConfigError(loader.problems)
    loader.apply_environment()
    loader.read_secret_files(Config, loader.data, ())
    config: Config | None = None
    try:
        config = typing.cast(Config, loader.build(Config, loader.data, ()))
    except AlreadyRecorded:
        pass
    except BadValue as exc:
        loader.error((), str(exc))
    if config is not None:
        config = loader.finish(config)
    if loader.problems or config is None:
        # environment problems first, then the file's in line order
        file_first = sorted(
            loader.problems, key=lambda p: (p.where == loader.source, p.where, p.line or 0)
        )
        raise ConfigError(file_first)
    meta = ConfigMeta(
        source=loader.source,
        origins=types.MappingProxyType(loader.origins()),
        warnings=tuple(loader.warnings),
    )
    return dataclasses.replace(config, meta=meta)
