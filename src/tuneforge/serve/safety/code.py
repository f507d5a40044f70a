"""Secrets and insecure code in generated answers, for routes marked `code`.

Two scanners: `rules` — regexes for well-known insecure calls in Python, JavaScript, shell, SQL and C
(CodeShield's approach, a subset of its CWEs) plus the PII detectors' secrets (API keys, private keys,
passwords in assignments), microseconds per block, any language; and `bandit` — bandit's AST checks run
in-process on Python blocks (milliseconds per block; `pip install bandit`). Fenced blocks are scanned;
an answer with no fence is scanned whole.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

from tuneforge.core.pii import find_pii
from tuneforge.core.safety_config import CodeGuardConfig
from tuneforge.serve.safety.verdict import Finding

SEVERITY = {"low": 0, "medium": 1, "high": 2}
FENCE = re.compile(r"^[ \t]*(```+|~~~+)[ \t]*([\w+#.-]*)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.M | re.S)


@dataclass(frozen=True)
class CodeRule:
    """An insecure pattern: a CWE, a severity and the regex that finds it."""

    name: str
    cwe: str
    severity: str
    pattern: re.Pattern[str]


def _rule(name: str, cwe: str, severity: str, pattern: str) -> CodeRule:
    return CodeRule(name, cwe, severity, re.compile(pattern, re.M))


RULES: tuple[CodeRule, ...] = (
    _rule("eval/exec of dynamic input", "CWE-95", "high",
          r"(?<![\w.])(?:eval|exec)\s*\(\s*(?!['\"][^'\"]*['\"]\s*\))"),
    _rule("shell command built from input", "CWE-78", "high",
          r"\b(?:os\.system|os\.popen|commands\.getoutput)\s*\(|subprocess\.\w+\([^)]*shell\s*=\s*True"
          r"|child_process\.exec(?:Sync)?\s*\(|\bRuntime\.getRuntime\(\)\.exec\s*\("),
    _rule("unsafe deserialisation", "CWE-502", "high",
          r"\b(?:pickle|cPickle|dill|marshal|shelve)\.loads?\s*\(|\byaml\.load\s*\((?![^)]*(?:Safe|Base)Loader)"
          r"|\bjsonpickle\.decode\s*\(|ObjectInputStream\s*\("),
    _rule("SQL built by string formatting", "CWE-89", "high",
          r"""(?i)\b(?:execute|executemany|raw|query)\s*\(\s*(?:f["']|["'][^"']*\b(?:select|insert|update|delete)"""
          r"""\b[^"']*["']\s*(?:%|\+|\.format\())"""),
    _rule("TLS verification disabled", "CWE-295", "high",
          r"\bverify\s*=\s*False\b|rejectUnauthorized\s*:\s*false|InsecureSkipVerify\s*:\s*true"
          r"|ssl\._create_unverified_context|CERT_NONE\b"),
    _rule("weak hash for security", "CWE-328", "medium", r"\bhashlib\.(?:md5|sha1)\s*\(|\bMD5\.Create\(|"
          r"createHash\(\s*['\"](?:md5|sha1)['\"]"),
    _rule("weak cipher or mode", "CWE-327", "medium", r"\b(?:DES|ARC4|Blowfish)\.new\s*\(|MODE_ECB\b|"
          r"\bAES/ECB\b|createCipher\s*\("),
    _rule("predictable randomness for secrets", "CWE-338", "medium",
          r"(?i)\b(?:token|secret|password|passwd|salt|nonce|otp|session_?id|api_?key)\w*\s*=\s*[^\n]*"
          r"\brandom\.(?:random|randint|choice|choices|getrandbits|sample)\b|Math\.random\(\)[^\n]*(?i:token|secret)"),
    _rule("insecure temporary file", "CWE-377", "medium", r"\btempfile\.mktemp\s*\(|\bos\.tempnam\s*\("),
    _rule("world-writable permissions", "CWE-732", "medium", r"\bchmod\s+(?:-R\s+)?0?777\b|os\.chmod\([^)]*0o?777"),
    _rule("remote script piped to a shell", "CWE-494", "high",
          r"\b(?:curl|wget)\b[^\n|]*\|\s*(?:sudo\s+)?(?:ba|z)?sh\b"),
    _rule("destructive shell command", "CWE-77", "high", r"\brm\s+-(?:rf|fr)\s+(?:/|~|\$HOME|\*)(?:\s|$)"),
    _rule("unbounded C string copy", "CWE-120", "high", r"\b(?:gets|strcpy|strcat|sprintf|vsprintf)\s*\("),
    _rule("DOM injection", "CWE-79", "medium", r"\.innerHTML\s*=|\bdocument\.write\s*\(|dangerouslySetInnerHTML"),
    _rule("debug mode in production", "CWE-489", "low", r"\bapp\.run\([^)]*debug\s*=\s*True|^\s*DEBUG\s*=\s*True\b"),
    _rule("binding every interface", "CWE-605", "low", r"['\"]0\.0\.0\.0['\"]"),
    _rule("hard-coded password", "CWE-798", "high",
          r"(?i)\b(?:password|passwd|pwd|secret|api_?key|token)\s*[:=]\s*['\"][^'\"\s]{6,}['\"]"),
)


@dataclass(frozen=True)
class CodeIssue:
    """One finding in one block: what, where (offsets in the scanned text), how bad."""

    name: str
    cwe: str
    severity: str
    start: int
    end: int
    scanner: str


def code_blocks(text: str) -> list[tuple[int, str, str]]:
    """(offset, language tag, code) of each fenced block; the whole text when it has no fence."""
    blocks = [(m.start(3), m.group(2).lower(), m.group(3)) for m in FENCE.finditer(text)]
    return blocks or [(0, "", text)]


def rule_issues(code: str, offset: int = 0) -> list[CodeIssue]:
    """Matches of the built-in rules and the PII detectors' secrets in `code`."""
    issues = [CodeIssue(r.name, r.cwe, r.severity, offset + m.start(), offset + m.end(), "rules")
              for r in RULES for m in r.pattern.finditer(code)]
    issues += [CodeIssue(f"secret in code ({kind.lower()})", "CWE-798", "high", offset + s, offset + e, "rules")
               for s, e, kind, _ in find_pii(code, ("SECRET", "CREDENTIALS"))]
    return issues


def _looks_python(lang: str, code: str) -> bool:
    if lang in ("python", "py", "python3", "py3"):
        return True
    return not lang and re.search(r"^\s*(?:def |import |from \w+ import |class \w+[:(])", code, re.M) is not None


def bandit_issues(code: str, offset: int = 0) -> list[CodeIssue]:
    """bandit's findings on a Python block, in-process; a block that does not parse has none."""
    try:
        from bandit.core import config as b_config
        from bandit.core import manager as b_manager
    except ImportError as exc:
        from tuneforge.core.errors import ConfigError

        raise ConfigError("safety code.scanner bandit needs bandit: `pip install bandit`") from exc
    manager = b_manager.BanditManager(b_config.BanditConfig(), "file", quiet=True)
    manager._parse_file("<answer>", io.BytesIO(code.encode()), [])  # bandit has no public API for a string
    lines = code.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    issues = []
    for issue in manager.get_issue_list():
        row = min(max(issue.lineno, 1), len(lines)) - 1 if lines else 0
        begin = offset + starts[row] if lines else offset
        end = offset + starts[row + 1] if lines else offset
        issues.append(CodeIssue(f"{issue.test_id} {issue.text}", f"CWE-{issue.cwe.id}" if issue.cwe else "",
                                issue.severity.lower(), begin, end, "bandit"))
    return issues


def scan_code(text: str, cfg: CodeGuardConfig) -> list[CodeIssue]:
    """Every issue at or above `cfg.min_severity` in `text`'s code blocks, with the configured scanners."""
    issues: list[CodeIssue] = []
    for offset, lang, code in code_blocks(text):
        if "rules" in cfg.scanner:
            issues += rule_issues(code, offset)
        if "bandit" in cfg.scanner and _looks_python(lang, code):
            issues += bandit_issues(code, offset)
    floor = SEVERITY[cfg.min_severity]
    return [i for i in issues if SEVERITY.get(i.severity, 0) >= floor]


def check_code(text: str, cfg: CodeGuardConfig) -> list[Finding]:
    """One finding per issue found (a `code` route's answer)."""
    if not cfg.enabled:
        return []
    return [Finding("code", cfg.action, f"{i.name} ({i.cwe}, {i.severity}, {i.scanner})", ((i.start, i.end),))
            for i in scan_code(text, cfg)]
