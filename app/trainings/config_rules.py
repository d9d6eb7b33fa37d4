"""The rules of the config.json format: limits, patterns and the validated field types.

`app.trainings.config` builds the `TrainingConfig` model from these types.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from app.errors import Invalid
from app.procs.environ import RESERVED_ENV_NAMES, RESERVED_ENV_PREFIXES

MAX_CONFIG_BYTES = 32 * 1024  # json5 is pure Python: ~0.5 s at this size, ~10 ms for Xihe's
MAX_HYPERPARAMETERS = 20
MAX_INPUTS = 10
MAX_OUTPUTS = 10
MAX_ENV_VARIABLES = 20
MAX_ARG_NAME = 20  # hyperparameter, input and output names (Xihe: keys up to 20)
MAX_ARG_VALUE = 40  # hyperparameter values (Xihe: values up to 40)
MAX_ENV_NAME = 64  # MindSpore's own variables (MS_COMPILER_CACHE_ENABLE, ...) exceed 20
MAX_ENV_VALUE = 256
MAX_CODE_DIR = 50
MAX_BOOT_FILE = 50
MAX_DIR = 100  # output_dir, log_url
MAX_INPUT_URL = 255
MAX_DESCRIPTION = 100
JOB_NAME_MIN, JOB_NAME_MAX = 5, 50

HYPERPARAMETER_KEYS = ("hypeparameters", "hyperparameters")

JOB_NAME_PATTERN = rf"^[A-Za-z0-9_-]{{{JOB_NAME_MIN},{JOB_NAME_MAX}}}$"
IDENTIFIER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
_NO_DOT_SEGMENTS = r"(?!(?:.*/)?\.{1,2}(?:/|$))"
PATH_PATTERN = rf"^(?!/){_NO_DOT_SEGMENTS}(?!.*//)[A-Za-z0-9_./-]+$"
BOOT_FILE_PATTERN = (rf"^{_NO_DOT_SEGMENTS}(?:[A-Za-z0-9_.-]+/)*"
                     r"[A-Za-z0-9_-][A-Za-z0-9_.-]*\.py$")
INPUT_URL_PATTERN = (rf"^{_NO_DOT_SEGMENTS}"
                     r"(datasets|models)/([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+)"
                     r"(?:/((?:[^/\\\x00-\x1f\x7f]+/)*[^/\\\x00-\x1f\x7f]*))?$")
_PATH_CHARS = re.compile(r"[A-Za-z0-9_./-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# --- field rules -----------------------------------------------------------------------

def fail(message: str) -> PydanticCustomError:
    return PydanticCustomError("config", "{message}", {"message": message})


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string",
             list: "a list", dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _text(max_len: int, *, min_len: int = 0, allow_newlines: bool = False
          ) -> Callable[[str], str]:
    def check(value: str) -> str:
        if len(value) > max_len:
            raise fail(f"at most {max_len} characters allowed, got {len(value)}")
        if len(value) < min_len:
            raise fail("must not be empty" if min_len == 1
                        else f"at least {min_len} characters needed, got {len(value)}")
        found = _CONTROL.findall(value.replace("\n", "").replace("\t", "")
                                 if allow_newlines else value)
        if found:
            raise fail(f"must not contain control characters (found {found[0]!r})")
        return value
    return check


def _path_problem(value: str) -> str | None:
    if "\\" in value:
        return "use '/' to separate folders, not '\\'"
    if value.startswith("/"):
        return "must be relative to the repository root; remove the leading '/'"
    bad = sorted({c for c in value if not _PATH_CHARS.fullmatch(c)})
    if bad:
        return f"may contain only letters, digits and _ . / - (found {''.join(bad)!r})"
    segments = (value[:-1] if value.endswith("/") else value).split("/")
    if ".." in segments:
        return "must stay inside the repository: '..' is not allowed"
    if "." in segments:
        return "must not contain '.' segments; write the path without them"
    if "" in segments:
        return "must not contain empty segments ('//')"
    return None


def _directory(max_len: int, *, empty_ok: bool) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value == "":
            if empty_ok:
                return value
            raise fail("must not be empty; give a folder such as train/output/")
        if value in (".", "./", "/"):
            raise fail('use "" for the repository root' if empty_ok
                        else "give a folder inside the repository, such as train/output/")
        if len(value) > max_len:
            raise fail(f"at most {max_len} characters allowed, got {len(value)}")
        problem = _path_problem(value)
        if problem:
            raise fail(problem)
        return value if value.endswith("/") else value + "/"
    return check


def _check_boot_file(value: str) -> str:
    if value == "":
        raise fail("must not be empty; give the .py file to run, such as train.py")
    if len(value) > MAX_BOOT_FILE:
        raise fail(f"at most {MAX_BOOT_FILE} characters allowed, got {len(value)}")
    problem = _path_problem(value)
    if problem:
        raise fail(problem)
    base = value.rsplit("/", 1)[-1]
    if base.startswith("."):
        raise fail(f"must be a Python file, not a hidden file, got {value!r}")
    if not base.endswith(".py") or len(base) <= 3:
        raise fail(f"must be a Python file ending in .py, got {value!r}")
    return value


def _check_arg_name(value: str) -> str:
    if not re.fullmatch(IDENTIFIER_PATTERN, value) or len(value) > MAX_ARG_NAME:
        raise fail(f"must be 1-{MAX_ARG_NAME} letters, digits or _, not starting with a digit "
                    f"(it becomes the --{value or 'NAME'}=VALUE argument), got {value!r}")
    if value == "help":
        raise fail("'help' is not allowed: --help makes the boot file print usage and exit")
    return value


def _check_env_name(value: str) -> str:
    if not re.fullmatch(IDENTIFIER_PATTERN, value) or len(value) > MAX_ENV_NAME:
        raise fail(f"environment variable names must be 1-{MAX_ENV_NAME} letters, digits or _, "
                    f"not starting with a digit, got {value!r}")
    if value in RESERVED_ENV_NAMES or value.startswith(RESERVED_ENV_PREFIXES):
        raise fail(f"{value!r} is set by the platform and cannot be overridden (reserved: "
                    f"{', '.join(sorted(RESERVED_ENV_NAMES))} and {RESERVED_ENV_PREFIXES[0]}*)")
    return value


def _scalar_to_text(value: Any) -> Any:
    if value is None or isinstance(value, list | dict):
        raise fail(f"must be a string or a number, got {json_type(value)}")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise fail(f"must be a finite number or a string, got {value}")
        return repr(value)
    return value


def _check_job_name(value: str) -> str:
    if not JOB_NAME_MIN <= len(value) <= JOB_NAME_MAX or not re.fullmatch(JOB_NAME_PATTERN, value):
        raise fail(f"must be {JOB_NAME_MIN}-{JOB_NAME_MAX} characters of letters, digits, _ "
                    f"and -, got {value!r} ({len(value)} characters)")
    return value


def _schema(**keywords: Any) -> Any:
    return Field(json_schema_extra=keywords)


def _scalar_schema(max_len: int, min_len: int = 0) -> WithJsonSchema:
    string = {"type": "string", "minLength": min_len, "maxLength": max_len}
    return WithJsonSchema({"anyOf": [string,
                                     {"type": "number"}, {"type": "boolean"}]})


JobName = Annotated[str, AfterValidator(_check_job_name), _schema(pattern=JOB_NAME_PATTERN)]
ShortText = Annotated[str, AfterValidator(_text(100, min_len=1)), _schema(minLength=1,
                                                                             maxLength=100)]
Description = Annotated[str, AfterValidator(_text(MAX_DESCRIPTION, allow_newlines=True)),
                        _schema(maxLength=MAX_DESCRIPTION)]
CodeDir = Annotated[str, AfterValidator(_directory(MAX_CODE_DIR, empty_ok=True)),
                    _schema(maxLength=MAX_CODE_DIR, pattern=f"^$|{PATH_PATTERN}")]
OutputDir = Annotated[str, AfterValidator(_directory(MAX_DIR, empty_ok=False)),
                      _schema(maxLength=MAX_DIR, pattern=PATH_PATTERN)]
LogDir = Annotated[str, AfterValidator(_directory(MAX_DIR, empty_ok=True)),
                   _schema(maxLength=MAX_DIR, pattern=f"^$|{PATH_PATTERN}")]
BootFile = Annotated[str, AfterValidator(_check_boot_file),
                     _schema(maxLength=MAX_BOOT_FILE, pattern=BOOT_FILE_PATTERN)]
ArgName = Annotated[str, AfterValidator(_check_arg_name),
                    _schema(maxLength=MAX_ARG_NAME, pattern=IDENTIFIER_PATTERN,
                            **{"not": {"const": "help"}})]
ArgValue = Annotated[str, BeforeValidator(_scalar_to_text),
                     AfterValidator(_text(MAX_ARG_VALUE, min_len=1)),
                     _scalar_schema(MAX_ARG_VALUE, 1)]
EnvName = Annotated[str, AfterValidator(_check_env_name)]
EnvValue = Annotated[str, BeforeValidator(_scalar_to_text), AfterValidator(_text(MAX_ENV_VALUE)),
                     _scalar_schema(MAX_ENV_VALUE)]


@dataclass(frozen=True)
class InputRef:
    """The dataset or model an `input_url` names, and the path inside it ("" = all of it)."""

    kind: Literal["datasets", "models"]
    owner: str
    name: str
    subpath: str = ""

    @property
    def url(self) -> str:
        """The canonical `input_url` form."""
        tail = f"/{self.subpath}" if self.subpath else "/"
        return f"{self.kind}/{self.owner}/{self.name}{tail}"


INPUT_URL_SHAPE = "datasets/<owner>/<name>[/<path>] or models/<owner>/<name>[/<path>]"


def _input_url_problem(value: str) -> str | None:
    if len(value) > MAX_INPUT_URL:
        return f"at most {MAX_INPUT_URL} characters allowed, got {len(value)}"
    if _CONTROL.search(value) or "\\" in value:
        return "must not contain control characters or '\\'"
    parts = value.split("/", 3)
    if len(parts) < 3 or parts[0] not in ("datasets", "models"):
        return f"must look like {INPUT_URL_SHAPE}, got {value!r}"
    for label, part in (("owner", parts[1]), ("name", parts[2])):
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", part) or part in (".", ".."):
            return (f"the {parts[0][:-1]} {label} {part!r} may contain only letters, digits "
                    "and _ . -")
    sub = parts[3] if len(parts) == 4 else ""
    segments = (sub[:-1] if sub.endswith("/") else sub).split("/") if sub else []
    if ".." in segments:
        return f"must stay inside the {parts[0][:-1]}: '..' is not allowed"
    if "." in segments:
        return "must not contain '.' segments; write the path without them"
    if "" in segments:
        return "must not contain empty segments ('//')"
    return None


def parse_input_url(value: str) -> InputRef:
    """Split an `input_url` into kind, owner, name and path; `Invalid` if malformed."""
    problem = _input_url_problem(value)
    if problem is not None:
        raise Invalid(f"input_url: {problem}", fields=[{"field": "input_url", "message": problem}])
    kind, owner, name, *rest = value.split("/", 3)
    subpath = rest[0].rstrip("/") if rest else ""
    return InputRef("datasets" if kind == "datasets" else "models", owner, name, subpath)


def _check_input_url(value: str) -> str:
    problem = _input_url_problem(value)
    if problem is not None:
        raise fail(problem)
    return value


InputUrl = Annotated[str, AfterValidator(_check_input_url),
                     _schema(maxLength=MAX_INPUT_URL, pattern=INPUT_URL_PATTERN)]


