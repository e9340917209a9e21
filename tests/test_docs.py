"""The docs answer without reading source: every public name scenarios may use from mdm_world is in the scenario
guide's reference, the guide's links resolve, and no user-facing text cites SPEC (a document users don't have)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap
from pathlib import Path

import pytest

import mdm_world
from mdm_world import procedure, roots

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# Names scenarios use beyond mdm_world.__all__: the modules they import from directly.
EXTRA_MODULES = {"procedure": procedure, "roots": roots}


def _assigned_in_init(cls: type) -> set[str]:
    """Attributes a class sets on self in its own __init__ (instance attributes dir() cannot see)."""
    init = cls.__dict__.get("__init__")
    if not inspect.isfunction(init) or dataclasses.is_dataclass(cls):  # a dataclass's __init__ has no source
        return set()
    names = set()
    for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(init)))):
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        for target in targets:
            for item in (target.elts if isinstance(target, ast.Tuple) else [target]):
                if isinstance(item, ast.Attribute) and isinstance(item.value, ast.Name) and item.value.id == "self":
                    names.add(item.attr)
    return names


def _members(cls: type) -> set[str]:
    """Public methods, properties, fields and instance attributes of a class, inherited ones from mdm_world."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("mdm_world"):
            continue
        names |= {name for name in vars(klass) if not name.startswith("_")}
        if dataclasses.is_dataclass(klass):
            names |= {item.name for item in dataclasses.fields(klass)}
        names |= _assigned_in_init(klass)
    return {name for name in names if not name.startswith("_")}


def public_names() -> list[str]:
    """`Name`, `Class.member`, `procedure.function` and `roots.function`: what the reference must cover."""
    out = []
    for name in mdm_world.__all__:
        value = getattr(mdm_world, name)
        if inspect.ismodule(value):
            continue
        out.append(name)
        if inspect.isclass(value):
            out += [f"{name}.{member}" for member in sorted(_members(value))]
    for prefix, module in EXTRA_MODULES.items():
        for name, value in vars(module).items():
            defined_here = getattr(value, "__module__", None) == module.__name__
            constant = name.isupper() and isinstance(value, str | int | float)
            if name.startswith("_") or not (defined_here or constant):
                continue
            out.append(f"{prefix}.{name}")
            if inspect.isclass(value):
                out += [f"{prefix}.{name}.{member}" for member in sorted(_members(value))]
    return out


def _reference() -> str:
    text = (DOCS / "scenarios.md").read_text()
    return text[text.index("## Reference"):]


@pytest.mark.parametrize("name", public_names())
def test_every_public_scenario_name_is_in_the_reference(name):
    # Documented means the name opens an inline code span in the reference: `Context.enroll(...)`, `World`, ...
    assert re.search(r"`" + re.escape(name) + r"(?![\w.])", _reference()), f"{name} is not in docs/scenarios.md"


def test_the_reference_names_nothing_that_does_not_exist():
    documented = set(re.findall(r"^#+ `([\w.]+)", _reference(), flags=re.MULTILINE))
    documented |= set(re.findall(r"^- `([\w.]+)", _reference(), flags=re.MULTILINE))
    known = set(public_names()) | set(EXTRA_MODULES)
    assert documented <= known, sorted(documented - known)


def test_links_between_the_docs_resolve():
    for page in [*DOCS.glob("*.md"), ROOT / "README.md"]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_no_user_facing_text_cites_spec():
    user_facing = [*DOCS.glob("*.md"), ROOT / "README.md", *(ROOT / "mdmsim").glob("*.py"),
                   *(ROOT / "scenarios").glob("*.py"), *(ROOT / "mdm_world").glob("demo*.py")]
    for path in user_facing:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            # A citation: "SPEC 7", "SPEC section 2", "SPEC.md" (a bare word like a METAVAR is not one).
            cited = re.search(r"\bSPEC(\.md\b|\s+(section\s+)?\d)", line)
            assert not cited, f"{path.relative_to(ROOT)}:{number}: {line.strip()}"


def test_the_tutorials_code_is_the_library_file():
    """The tutorial's steps 3 and 4 are copied from scenarios/exchange_signing_10_2.py, which test_scenarios runs."""
    library = (ROOT / "scenarios" / "exchange_signing_10_2.py").read_text()
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "scenarios.md").read_text(), flags=re.DOTALL)
    code = [block for block in blocks if "def " in block]
    assert len(code) >= 2
    for block in code:
        for line in block.strip().splitlines():
            assert line in library, f"tutorial line not in the library file: {line!r}"
