"""Count the package's functions that return `Any` and its parameters typed `Any` (issue 32).

Reads every module under plugins/patient_ml with Python's `ast` (nothing is imported) and counts:

- functions (and methods, lambdas excluded) whose return annotation is exactly `Any`
  (`Any` or `typing.Any`, also as a string annotation);
- parameters (positional-only, positional, keyword-only, `*args`, `**kwargs`) annotated exactly
  `Any`.

`dict[str, Any]`, `list[Any]` and the like are not counted: only a bare `Any`.

    python include/count_any.py [--list] [--root plugins/patient_ml]
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PACKAGE = ROOT / "plugins" / "patient_ml"


def is_any(annotation: ast.expr | None) -> bool:
    """Whether an annotation is exactly `Any` (`Any`, `typing.Any`, `"Any"`)."""
    if annotation is None:
        return False
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        try:
            annotation = ast.parse(annotation.value, mode="eval").body
        except SyntaxError:
            return False
    if isinstance(annotation, ast.Name):
        return annotation.id == "Any"
    if isinstance(annotation, ast.Attribute):
        return (
            annotation.attr == "Any"
            and isinstance(annotation.value, ast.Name)
            and annotation.value.id in {"typing", "t"}
        )
    return False


def find_any(tree: ast.AST) -> Iterator[tuple[str, int, str]]:
    """(kind, line, name) of each `-> Any` ("return") and `Any` parameter ("param")."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if is_any(node.returns):
            yield "return", node.lineno, node.name
        arguments = node.args
        params = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
        if arguments.vararg is not None:
            params.append(arguments.vararg)
        if arguments.kwarg is not None:
            params.append(arguments.kwarg)
        for param in params:
            if is_any(param.annotation):
                yield "param", param.lineno, f"{node.name}({param.arg})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print each location")
    parser.add_argument("--root", type=Path, default=DEFAULT_PACKAGE)
    args = parser.parse_args(argv)

    returns: list[str] = []
    params: list[str] = []
    for path in sorted(args.root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        try:
            shown = path.relative_to(ROOT)
        except ValueError:
            shown = path
        for kind, line, name in find_any(tree):
            (returns if kind == "return" else params).append(f"{shown}:{line}: {name}")

    if args.list:
        for location in returns:
            print(f"-> Any  {location}")
        for location in params:
            print(f"param   {location}")
    print(f"functions returning Any: {len(returns)}")
    print(f"parameters typed Any: {len(params)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
