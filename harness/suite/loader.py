"""Load a suite file: YAML with line numbers, schema validation, then resolution.

Every problem in a file is collected and raised once as a ConfigError whose lines read
`FILE:LINE: KEY.PATH: message`. Lines come from the YAML node marks: the document is composed
into nodes first, and each pydantic error location is walked down that node tree.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from harness.errors import ConfigError
from harness.suite.expectations import Expectation, parse_expectation
from harness.suite.regions import get_preset
from harness.suite.resolved import (
    BootstrapSettings,
    Preprocessing,
    Regions,
    SearchSettings,
    Suite,
)
from harness.suite.schema import ExpectationEntry, SuiteFile

log = logging.getLogger(__name__)


# --- YAML -------------------------------------------------------------------------------------

_BOOL, _INT, _FLOAT = (f"tag:yaml.org,2002:{kind}" for kind in ("bool", "int", "float"))
_YAML_11_ONLY = {_BOOL, _INT, _FLOAT, "tag:yaml.org,2002:timestamp"}


class _SuiteYamlLoader(yaml.SafeLoader):
    """SafeLoader that reads booleans, integers and floats as YAML 1.2's core schema does.

    PyYAML follows YAML 1.1, where `5e-3` is a string (a float needs a dot), `yes` and `off`
    are booleans, `0123` is octal and `1:30` is 90. In a suite each of these would be a silent
    surprise, so plain scalars resolve by the YAML 1.2 rules instead, and dates stay strings.
    """


_SuiteYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _YAML_11_ONLY]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_SuiteYamlLoader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
# The integer resolver comes first: a plain `10` also matches the float pattern.
_SuiteYamlLoader.add_implicit_resolver(
    _INT,
    re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)
_SuiteYamlLoader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _construct_bool(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> bool:
    return loader.construct_scalar(node).lower() == "true"


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return int(text, 10)


def _construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    text = loader.construct_scalar(node).lower()
    if text.endswith(".inf"):
        return float("-inf") if text.startswith("-") else float("inf")
    if text == ".nan":
        return float("nan")
    return float(text)


_SuiteYamlLoader.add_constructor(_BOOL, _construct_bool)
_SuiteYamlLoader.add_constructor(_INT, _construct_int)
_SuiteYamlLoader.add_constructor(_FLOAT, _construct_float)


def _yaml_error(path: Path, error: yaml.YAMLError) -> ConfigError:
    mark = getattr(error, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
    problem = getattr(error, "problem", None) or str(error)
    context = getattr(error, "context", None)
    context_mark = getattr(error, "context_mark", None)
    if context and context_mark:
        problem = f"{context} (line {context_mark.line + 1}): {problem}"
    elif context:
        problem = f"{context}: {problem}"
    if "another document" in problem:
        fix = "A suite file is one YAML document; remove the second `---` and what follows."
    elif "'\\t'" in problem:
        fix = "Indent with spaces; YAML does not allow tabs there."
    else:
        fix = (
            "Fix the syntax there: indentation, a missing ':' after a key, or an unclosed "
            "quote or bracket."
        )
    return ConfigError(f"{where}: malformed YAML: {problem}. {fix}")


def _compose(path: Path, text: str) -> yaml.Node | None:
    loader = _SuiteYamlLoader(text)
    try:
        return loader.get_single_node()
    except yaml.YAMLError as error:
        raise _yaml_error(path, error) from None
    finally:
        loader.dispose()


def _construct(path: Path, node: yaml.Node) -> Any:
    loader = _SuiteYamlLoader("")
    try:
        return loader.construct_document(node)
    except yaml.YAMLError as error:
        raise _yaml_error(path, error) from None
    finally:
        loader.dispose()


# --- Error locations --------------------------------------------------------------------------

Loc = tuple[typing.Union[str, int], ...]


@dataclass(frozen=True)
class _Problem:
    loc: Loc
    message: str
    line: int | None = None  # set when the location alone is ambiguous (a duplicate key)


def _join_key_path(segments: list[str]) -> str:
    return "".join(segments).lstrip(".") or "(top level)"


def _locate(root: yaml.Node, loc: Loc) -> tuple[int, str]:
    """Return the 1-based line and the displayed key path of a pydantic error location."""
    node: yaml.Node = root
    key_node: yaml.Node | None = None
    path_segments: list[str] = []
    for part in loc:
        if part == "[key]":
            return (key_node or node).start_mark.line + 1, _join_key_path(path_segments)
        if isinstance(node, yaml.MappingNode):
            pair = next(
                (
                    (key, value)
                    for key, value in node.value
                    if isinstance(key, yaml.ScalarNode) and key.value == str(part)
                ),
                None,
            )
            if pair is None:
                # A missing key: name it in the path but point at the mapping that lacks it.
                line_node = key_node or node
                return line_node.start_mark.line + 1, _join_key_path(path_segments + [f".{part}"])
            key_node, node = pair
            path_segments.append(f".{part}")
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                break
            key_node, node = None, node.value[part]
            path_segments.append(f"[{part}]")
        else:
            # A scalar written in place of a mapping (an expectation given as a string): the
            # remaining parts are the schema's own field names, not keys in the file.
            break
    is_collection = isinstance(node, (yaml.MappingNode, yaml.SequenceNode))
    line_node = key_node if is_collection and key_node is not None else node
    return line_node.start_mark.line + 1, _join_key_path(path_segments)


def _duplicate_keys(node: yaml.Node, loc: Loc = ()) -> list[_Problem]:
    """Find keys set twice in one mapping, which PyYAML would otherwise resolve silently."""
    problems: list[_Problem] = []
    if isinstance(node, yaml.MappingNode):
        first_lines: dict[str, int] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            line = key.start_mark.line + 1
            if key.value in first_lines:
                problems.append(
                    _Problem(
                        loc + (key.value, "[key]"),
                        f"duplicate key {key.value!r}, already set on line "
                        f"{first_lines[key.value]}; keep only one of them",
                        line=line,
                    )
                )
            else:
                first_lines[key.value] = line
            problems.extend(_duplicate_keys(value, loc + (key.value,)))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            problems.extend(_duplicate_keys(item, loc + (index,)))
    return problems


# --- Messages for pydantic errors -------------------------------------------------------------

_EXPECTED_TYPE = {
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping of keys to values",
    "model_type": "a mapping of keys to values",
    "model_attributes_type": "a mapping of keys to values",
}
_BOUND_SYMBOL = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<",
                 "less_than_equal": "<="}
_BOUND_CONTEXT = {"greater_than": "gt", "greater_than_equal": "ge", "less_than": "lt",
                  "less_than_equal": "le"}


def _describe(value: Any) -> str:
    if value is None:
        return "an empty value (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _type_hint(kind: str, value: Any, loc: Loc) -> str:
    if loc == ("regions",) and isinstance(value, str):
        return f"; write `regions: {{preset: {value}}}`"
    if kind == "list_type" and loc and loc[-1] == "expect" and isinstance(value, str):
        return f"; write a list, e.g. `expect: [{value!r}]`"
    if kind in ("int_type", "float_type") and isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return "; remove the quotes"
    if kind in ("int_type", "int_from_float") and isinstance(value, float):
        return "; write a whole number without a decimal point"
    return ""


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def _allowed_keys(loc: Loc, schema: type[BaseModel] = SuiteFile) -> list[str]:
    """Return the keys `schema` allows in the mapping at `loc`, or [] if unknown."""
    annotation: Any = schema
    for part in loc:
        annotation = _unwrap_optional(annotation)
        origin = typing.get_origin(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return []
            annotation = field.annotation
        elif origin is dict:
            annotation = typing.get_args(annotation)[1]
        elif origin is list:
            annotation = typing.get_args(annotation)[0]
        else:
            return []
    annotation = _unwrap_optional(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _pydantic_message(error: dict[str, Any], schema: type[BaseModel] = SuiteFile) -> str:
    kind = error["type"]
    loc = tuple(error["loc"])
    value = error.get("input")
    context = error.get("ctx") or {}
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1], schema)
        return f"unknown key {loc[-1]!r}; allowed keys here: {', '.join(allowed)}"
    if kind == "missing":
        return f"missing required key {loc[-1]!r}"
    if loc and loc[-1] == "[key]" and kind == "string_type":
        return f"keys here must be strings, got {_describe(value)}; quote the key"
    if loc == ("version",):
        return f"unsupported suite version {value!r}; this LatentGate reads `version: 1`"
    if kind in _EXPECTED_TYPE:
        return f"expected {_EXPECTED_TYPE[kind]}, got {_describe(value)}{_type_hint(kind, value, loc)}"
    if kind == "literal_error":
        return f"expected {context['expected']}, got {_describe(value)}"
    if kind in _BOUND_SYMBOL:
        bound = context[_BOUND_CONTEXT[kind]]
        return f"must be {_BOUND_SYMBOL[kind]} {bound}, got {value!r}"
    if kind == "value_error":
        return str(context["error"])
    return str(error["msg"])


# --- Checks that span several keys ------------------------------------------------------------

def _expectation_list_problems(entries: list[ExpectationEntry], loc: Loc) -> list[_Problem]:
    """Flag two bounds on the same side of the same expression, e.g. two `x >= ...`."""
    problems: list[_Problem] = []
    seen: dict[tuple[str, bool, bool], str] = {}
    for index, entry in enumerate(entries):
        expectation = parse_expectation(entry.check)
        side = (expectation.metric, expectation.use_abs, expectation.is_lower_bound)
        if side in seen:
            problems.append(
                _Problem(
                    loc + (index,),
                    f"{entry.check!r} bounds the same side of {expectation.expression} as "
                    f"{seen[side]!r}; keep one of them",
                )
            )
        else:
            seen[side] = entry.check
    return problems


def _semantic_problems(suite_file: SuiteFile) -> list[_Problem]:
    problems = _expectation_list_problems(suite_file.defaults.expect, ("defaults", "expect"))
    if not suite_file.classes:
        problems.append(
            _Problem(("classes",), "the class list is empty; name at least one class to gate")
        )
    known = suite_file.classifier.classes
    for name, section in suite_file.classes.items():
        key_loc: Loc = ("classes", name, "[key]")
        if not name.strip():
            problems.append(_Problem(key_loc, "class names must not be empty"))
        if known is not None and name not in known:
            problems.append(
                _Problem(
                    key_loc,
                    f"class {name!r} is not in classifier.classes ({', '.join(known)}); fix "
                    "the name or add it to that list",
                )
            )
        if not section.expect and not suite_file.defaults.expect:
            problems.append(
                _Problem(
                    key_loc,
                    f"class {name!r} has no expectations; add `expect:` under it or "
                    "`defaults.expect`",
                )
            )
        problems.extend(_expectation_list_problems(section.expect, ("classes", name, "expect")))
    return problems


def _resolve_path(value: str, suite_dir: Path) -> Path:
    path = Path(os.path.expanduser(value))
    if not path.is_absolute():
        path = suite_dir / path
    return path.resolve()


def _path_problems(data: dict[str, Any], suite_dir: Path) -> list[_Problem]:
    """Check that the generator and identity paths exist, whether or not the schema passed."""
    problems: list[_Problem] = []
    for key, label in (("generator", "generator file"), ("identity", "identity model")):
        value = data.get(key)
        if not isinstance(value, str):
            continue  # a missing or non-string path is already a schema error
        path = _resolve_path(value, suite_dir)
        if not path.exists():
            note = "" if Path(value).is_absolute() else (
                f" (resolved from {value!r} against the suite file's folder)"
            )
            message = f"{label} not found: {path}{note}; fix the path or put the file there"
            problems.append(_Problem((key,), message))
        elif key == "generator" and not path.is_file():
            problems.append(_Problem((key,), f"{path} is a folder; expected a checkpoint file"))
        elif key == "identity" and path.is_file() and path.suffix.lower() != ".onnx":
            problems.append(
                _Problem(
                    (key,),
                    f"{path} is not an .onnx file; give an ArcFace .onnx file or an "
                    "InsightFace model folder",
                )
            )
        elif key == "identity" and path.is_dir() and not any(path.glob("*.onnx")):
            problems.append(
                _Problem(
                    (key,),
                    f"the folder {path} contains no .onnx file; an InsightFace model folder "
                    "holds its models as .onnx files",
                )
            )
    return problems


# --- Loading ----------------------------------------------------------------------------------

def _raise_problems(
    path: Path, root: yaml.Node, problems: list[_Problem], kind: str = "suite file"
) -> None:
    located = []
    for problem in problems:
        line, key_path = _locate(root, problem.loc)
        located.append((problem.line or line, key_path, problem.message))
    located.sort(key=lambda item: item[0])
    count = f"{len(located)} error" + ("s" if len(located) > 1 else "")
    lines = [f"invalid {kind} {path} ({count}):"]
    lines += [f"  {path}:{line}: {key_path}: {message}" for line, key_path, message in located]
    raise ConfigError("\n".join(lines))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"suite file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder; give the path of a suite .yaml file") from None


def load_suite(path: str | os.PathLike[str], *, check_paths: bool = True) -> Suite:
    """Read, validate and resolve a suite file.

    Raises ConfigError listing every problem in the file with its line. With `check_paths`, a
    missing generator or identity model is one of those problems. Without it, paths are
    resolved but not looked up, so a suite can be validated on a machine without the weights.
    """
    path = Path(path)
    data_bytes = _read(path)
    try:
        text = data_bytes.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not UTF-8 text (invalid byte at offset {error.start}); save the suite "
            "as UTF-8"
        ) from None

    root = _compose(path, text)
    if root is None:
        raise ConfigError(f"{path}: the suite file is empty; start from suites/example.yaml")
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(
            f"{path}:{root.start_mark.line + 1}: the top level must be a mapping of keys "
            "(version, generator, identity, regions, classes, ...)"
        )

    problems = _duplicate_keys(root)
    data = _construct(path, root)
    suite_file: SuiteFile | None = None
    try:
        suite_file = SuiteFile.model_validate(data)
    except ValidationError as error:
        problems += [
            _Problem(tuple(item["loc"]), _pydantic_message(item)) for item in error.errors()
        ]
    if suite_file is not None:
        problems += _semantic_problems(suite_file)
    if check_paths and isinstance(data, dict):
        problems += _path_problems(data, path.parent)
    if problems:
        _raise_problems(path, root, problems)
    assert suite_file is not None

    return _resolve(path, data_bytes, root, suite_file)


def _merged_expectations(
    suite_file: SuiteFile, class_entries: list[ExpectationEntry]
) -> tuple[Expectation, ...]:
    """Merge a class's expectations into the defaults.

    A class expectation replaces every default with the same metric and abs flag. It takes the
    position of the first default it replaces, and class expectations on other keys follow.
    """
    default_statistic = suite_file.defaults.statistic
    defaults = [
        _to_expectation(entry, default_statistic, "default")
        for entry in suite_file.defaults.expect
    ]
    own = [_to_expectation(entry, default_statistic, "class") for entry in class_entries]
    own_keys = {expectation.key for expectation in own}
    merged: list[Expectation] = []
    placed: set[tuple[str, bool]] = set()
    for default in defaults:
        if default.key not in own_keys:
            merged.append(default)
        elif default.key not in placed:
            merged.extend(expectation for expectation in own if expectation.key == default.key)
            placed.add(default.key)
    merged.extend(expectation for expectation in own if expectation.key not in placed)
    return tuple(merged)


def _to_expectation(entry: ExpectationEntry, default_statistic: str, source: str) -> Expectation:
    expectation = parse_expectation(entry.check, entry.statistic or default_statistic)
    return Expectation(
        metric=expectation.metric,
        use_abs=expectation.use_abs,
        op=expectation.op,
        threshold=expectation.threshold,
        statistic=expectation.statistic,
        source=source,
    )


def _resolve(path: Path, data_bytes: bytes, root: yaml.Node, suite_file: SuiteFile) -> Suite:
    suite_dir = path.parent

    regions = suite_file.regions
    preset = get_preset(regions.preset) if regions.preset else None
    face_crop = regions.face_crop or (preset.face_crop if preset else None)
    skin = regions.skin or (preset.skin if preset else None)
    assert face_crop is not None and skin is not None  # RegionsSection enforces this

    preprocessing = suite_file.classifier.preprocessing
    search = suite_file.search
    layers = None if search.layers == "all" else tuple(search.layers)
    layers_line = _locate(root, ("search", "layers"))[0] if layers is not None else None

    return Suite(
        path=path,
        sha256=hashlib.sha256(data_bytes).hexdigest(),
        name=suite_file.name or path.stem,
        description=suite_file.description,
        version=suite_file.version,
        generator=_resolve_path(suite_file.generator, suite_dir),
        identity=_resolve_path(suite_file.identity, suite_dir),
        classifier_classes=tuple(suite_file.classifier.classes)
        if suite_file.classifier.classes
        else None,
        preprocessing=None
        if preprocessing is None
        else Preprocessing(
            resolution=preprocessing.resolution,
            mean=tuple(preprocessing.mean),
            std=tuple(preprocessing.std),
        ),
        regions=Regions(preset=regions.preset, face_crop=tuple(face_crop), skin=tuple(skin)),
        allow_pickle=suite_file.classifier.allow_pickle,
        search=SearchSettings(
            num_samples=search.num_samples,
            seed=search.seed,
            truncation_psi=search.truncation_psi,
            steps=search.steps,
            learning_rate=search.learning_rate,
            lambda_id=search.lambda_id,
            lambda_l2=search.lambda_l2,
            layers=layers,
            alpha_max=search.alpha_max,
            num_frames=search.num_frames,
            bootstrap=BootstrapSettings(
                num_resamples=search.bootstrap.num_resamples,
                confidence=search.bootstrap.confidence,
                seed=search.bootstrap.seed,
            ),
        ),
        expectations={
            name: _merged_expectations(suite_file, section.expect)
            for name, section in suite_file.classes.items()
        },
        class_lines={
            name: _locate(root, ("classes", name, "[key]"))[0] for name in suite_file.classes
        },
        layers_line=layers_line,
    )
