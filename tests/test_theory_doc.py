"""docs/THEORY.md against the code that cites it: rule entries, cited sections, provenance, verdicts, examples.

The code is the oracle: the rule ids come from ``prune_landscape.theory`` (``rule_ids()`` / ``RULES``) and
from the ids written in the rule modules; the provenance and verdict of each rule are read with ``ast`` from its
``Rule(...)`` declaration and the ``rule.finding(...)`` calls of its check; the ``>>>`` examples of the doc run
against the package.
"""

from __future__ import annotations

import ast
import doctest
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import prune_landscape.theory as theory

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "THEORY.md"
THEORY_SOURCES = sorted((REPO / "prune_landscape" / "theory").glob("*.py"))
RULE_ID = re.compile(r"(?:LIN-\d+d?|NL-\d+|RELU-\d+|SMOOTH|WD|DEFAULT)")
PREFIXED_RULE_ID = re.compile(r"\b(?:LIN-\d+d?|NL-\d+|RELU-\d+)\b")
SECTION_CITATION = re.compile(r"THEORY\.md(?:'s)?,?\s+sections?\s+(\d+)")
FIELDS = ("Hypotheses", "Conclusion", "Provenance", "Code", "Example")


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def doc_sections(text: str) -> dict[int, str]:
    """Section number -> title, from ``## N. Title`` headings."""
    return {int(m.group(1)): m.group(2).strip() for m in re.finditer(r"^## (\d+)\. (.+)$", text, re.M)}


def doc_rule_entries(text: str) -> dict[str, str]:
    """Rule id -> the text of its ``### ID: title`` entry (up to the next heading)."""
    entries = {}
    parts = re.split(r"^(#{2,3} .*)$", text, flags=re.M)
    for heading, body in zip(parts[1::2], parts[2::2]):
        match = re.match(r"^### ([A-Z][A-Z0-9-]*[a-z]?): ", heading)
        if match:
            entries[match.group(1)] = body
    return entries


def implemented_rule_ids() -> set[str]:
    """Rule ids as the package declares them: ``rule_ids()`` when it exists, and the ids of ``RULES`` entries
    that carry one (``Rule(id, ...)`` values)."""
    ids: set[str] = set()
    if hasattr(theory, "rule_ids"):
        ids |= set(theory.rule_ids())
    for rule in getattr(theory, "RULES", ()):
        rule_id = getattr(rule, "id", None)
        if isinstance(rule_id, str):
            ids.add(rule_id)
    return ids


def _string_constants(path: Path) -> set[str]:
    return {node.value for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)}


def rule_ids_in_theory_source() -> set[str]:
    """Every string literal in ``prune_landscape/theory/*.py`` that is exactly a rule id."""
    return {s for path in THEORY_SOURCES for s in _string_constants(path) if RULE_ID.fullmatch(s)}


def _attribute_name(node: ast.expr) -> str | None:
    return node.attr if isinstance(node, ast.Attribute) else None


def findings_in_source() -> dict[str, dict[str, set[str]]]:
    """Rule id -> {"provenance": {...}, "verdict": {...}}, read from the rule declarations.

    A rule is declared as ``Rule("ID", citation, Provenance.Y, check)``: the provenance is the declaration's,
    the verdicts are the second argument of the ``rule.finding(axis, Verdict.X, ...)`` calls in ``check``
    (``rule.undecided(...)`` findings are UNKNOWN by construction and skipped for the verdict)."""
    found: dict[str, dict[str, set[str]]] = {}
    for path in THEORY_SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        checks = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Rule"
                    and len(node.args) >= 3):
                continue
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str) and RULE_ID.fullmatch(first.value)):
                continue
            entry = found.setdefault(first.value, {"provenance": set(), "verdict": set()})
            if _attribute_name(node.args[2]):
                entry["provenance"].add(_attribute_name(node.args[2]))
            check = checks.get(node.args[3].id) if len(node.args) >= 4 and isinstance(node.args[3], ast.Name) else None
            for call in ast.walk(check) if check is not None else ():
                if (isinstance(call, ast.Call) and _attribute_name(call.func) == "finding" and len(call.args) >= 2
                        and _attribute_name(call.args[1])):
                    entry["verdict"].add(_attribute_name(call.args[1]))
    return found


def _source_files() -> list[Path]:
    files = sorted((REPO / "prune_landscape").rglob("*.py"))
    files += sorted((REPO / "tests").rglob("*.py")) + sorted((REPO / "benchmarks").rglob("*.py"))
    return files + [REPO / "README.md"]


# ---------------------------------------------------------------------------------------------- entries
def test_doc_has_the_numbered_sections():
    sections = doc_sections(_doc())
    assert sorted(sections)[:6] == [1, 2, 3, 4, 5, 6], f"expected sections 1-6, got {sections}"


def test_every_implemented_rule_has_one_complete_entry():
    declared = implemented_rule_ids()
    in_source = rule_ids_in_theory_source()
    assert len(declared) >= 19 and "DEFAULT" in declared, declared
    assert in_source >= declared - {"DEFAULT"}, f"ids declared but never written in theory/: {declared - in_source}"
    entries = doc_rule_entries(_doc())
    assert set(entries) == declared | in_source, (
        f"docs/THEORY.md entries {sorted(entries)} vs rules implemented {sorted(declared | in_source)}: "
        f"missing {sorted((declared | in_source) - set(entries))}, stale {sorted(set(entries) - declared - in_source)}")
    for rule, body in entries.items():
        absent = [f for f in FIELDS if f"**{f}.**" not in body]
        assert not absent, f"{rule}: its entry lacks {absent}"
        assert ">>> " in body, f"{rule}: its entry has no runnable example"


def test_every_rule_id_named_in_the_package_is_documented():
    documented = set(doc_rule_entries(_doc()))
    for path in sorted((REPO / "prune_landscape").rglob("*.py")):
        named = set(PREFIXED_RULE_ID.findall(path.read_text(encoding="utf-8")))
        assert named <= documented, f"{path.relative_to(REPO)} names {sorted(named - documented)}, not in docs/THEORY.md"


def test_every_cited_section_exists():
    sections = doc_sections(_doc())
    citations = 0
    for path in _source_files():
        for match in SECTION_CITATION.finditer(path.read_text(encoding="utf-8")):
            citations += 1
            assert int(match.group(1)) in sections, (
                f"{path.relative_to(REPO)} cites THEORY.md section {match.group(1)}; the doc has {sorted(sections)}")
    assert citations >= 15  # the package really cites sections (20 on the day this test was written)


def test_provenance_and_verdicts_match_the_code():
    entries = doc_rule_entries(_doc())
    code = findings_in_source()
    # If the rules stop being declared as Rule("ID", citation, Provenance.Y, check) values, this scan must follow them.
    assert len(code) >= 17, f"the ast scan found findings for only {sorted(code)}"
    for rule, facts in code.items():
        provenance_line = re.search(r"\*\*Provenance\.\*\* (READ|DERIVED|RECALLED)", entries[rule])
        assert provenance_line, f"{rule}: the Provenance field must start with READ, DERIVED or RECALLED"
        assert provenance_line.group(1) in facts["provenance"], (
            f"{rule}: the doc says {provenance_line.group(1)}, the code uses {sorted(facts['provenance'])}")
        conclusion = re.search(r"\*\*Conclusion\.\*\*(.*?)(?=\n- \*\*)", entries[rule], re.S).group(1)
        for verdict in facts["verdict"]:
            assert verdict in conclusion, f"{rule}: the code concludes {verdict}, the doc's Conclusion does not say so"


def test_summary_table_matches_the_entries():
    text = _doc()
    rows = re.findall(r"^\| ([A-Z][A-Z0-9-]*[a-z]?) \|.*\| (READ|DERIVED|RECALLED) \|$", text, re.M)
    entries = doc_rule_entries(text)
    assert [r for r, _ in rows] == list(entries), "the section 3 table must list the entries in the same order"
    for rule, provenance in rows:
        assert re.search(rf"\*\*Provenance\.\*\* {provenance}\b", entries[rule]), f"{rule}: table says {provenance}"


def test_papers_are_cited_in_full():
    references = _doc().split("## 7. References", 1)[1]
    for key, year, words in (("LSZ", "2020", "Dachao Lin, Ruoyu Sun, Zhihua Zhang"), ("LDS", "2022", "SIAM Journal on Optimization"),
                             ("LRG", "2023", "Quoc-Tung Le, Elisa Riccietti, Rémi Gribonval"),
                             ("ZZHSL", "2021", "Jiawei Zhang, Yushun Zhang, Mingyi Hong, Ruoyu Sun, Zhi-Quan Luo"),
                             ("SLN", "2021", "On the Landscape of Sparse Linear"), ("PRV", "2021", "Foundations of Computational")):
        entry = re.search(rf"\*\*\[{key}\]\*\*(.*?)(?=\n- \*\*\[|\Z)", references, re.S)
        assert entry and year in entry.group(1) and words in " ".join(entry.group(1).split()), key
    cited = set(re.findall(r"\[([A-Z]{2,6})\]", _doc().split("## 7. References", 1)[0]))
    listed = set(re.findall(r"\*\*\[([A-Z]{2,6})\]\*\*", references))
    assert cited <= listed, f"cited but not listed in section 7: {sorted(cited - listed)}"


# --------------------------------------------------------------------------------------------- examples
def test_the_worked_examples_run():
    text = _doc()
    globs: dict = {}
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    failures: list[str] = []
    examples = 0
    for block in re.finditer(r"^```python\n(.*?)^```$", text, re.S | re.M):
        line = text.count("\n", 0, block.start(1))  # 0-based line of the block's first line in the doc
        test = doctest.DocTestParser().get_doctest(block.group(1), globs, "docs/THEORY.md", str(DOC), line)
        examples += len(test.examples)
        runner.run(test, out=failures.append, clear_globs=False)
        globs = test.globs  # DocTest copies its globals: carry them on, the blocks share section 3's setup
    assert examples >= 40
    assert runner.failures == 0, "".join(failures)


# ------------------------------------------------------------------------------------------------ links
def test_readme_links_the_doc():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    prose = re.sub(r"```.*?```", "", readme, flags=re.S)  # program output in code blocks is quoted verbatim
    bare = [m.start() for m in re.finditer(r"(?<![\[/])THEORY\.md", prose)]
    assert not bare, f"README prose mentions THEORY.md without linking docs/THEORY.md at offsets {bare}"
    assert "(docs/THEORY.md)" in readme


def test_the_sdist_ships_the_doc(tmp_path):
    if shutil.which("tar") is None:
        pytest.skip("no tar")
    tree = tmp_path / "src"
    tree.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy2(REPO / name, tree / name)
    for name in ("prune_landscape", "conf", "recipes", "docs"):
        shutil.copytree(REPO / name, tree / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    built = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path / "dist")], cwd=tree,
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    (archive,) = (tmp_path / "dist").glob("prune_landscape-*.tar.gz")
    with tarfile.open(archive) as tar:
        members = {Path(*Path(m).parts[1:]).as_posix(): m for m in tar.getnames()}
        assert "docs/THEORY.md" in members, sorted(members)
        assert tar.extractfile(members["docs/THEORY.md"]).read() == DOC.read_bytes()
