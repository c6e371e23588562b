"""Error messages for gin mistakes on the command line: which macro is missing (with an
example flag), a hint for gin's own errors, and gin syntax errors located by file and line
(or by flag). Used by medmt5.cli.gin_utils.parse_gin."""
from __future__ import annotations

import io
import os
import re
import tokenize
from collections.abc import Sequence

# An example value per well-known macro, shown when a required one is missing.
MACRO_EXAMPLES = {
    "MODEL_DIR": "\"'/tmp/medmt5_run'\"",
    "MIXTURE_OR_TASK_NAME": "\"'medmt5_pretrain'\"",
    "MIXTURE_OR_TASK_MODULE": "\"'my_tasks'\"",
    "TASK_FEATURE_LENGTHS": "\"{'inputs': 1024, 'targets': 229}\"",
    "TRAIN_STEPS": "1000",
    "BATCH_SIZE": "64",
    "INITIAL_CHECKPOINT_PATH": "\"'/path/to/model_dir_or_hf_dir'\"",
    "CHECKPOINT_PATH": "\"'/tmp/medmt5_run'\"",
    "EVAL_PERIOD": "500",
    "DROPOUT_RATE": "0.1",
    "LEARNING_RATE": "1e-3",
    "PROMPT_LENGTH": "100",
    "PROMPT_FILE": "\"'/path/to/prompt.npy'\"",
    "OUTPUT_FILE": "\"'/tmp/predictions.jsonl'\"",
    "EVAL_TASKS": "\"['abstrct_en']\"",
}


def missing_macro_message(names: Sequence[str], program: str) -> str:
    lines = [f"Missing required gin macro{'s' if len(names) > 1 else ''}: {', '.join(names)}.",
             "Set it on the command line or in a --gin_file, e.g.:"]
    example = " ".join(f"--gin.{n}={MACRO_EXAMPLES.get(n, 'VALUE')}" for n in names)
    lines.append(f"  python -m {program} --gin_file=... {example}")
    return "\n".join(lines)


def hint_for(err: Exception, program: str, gin_dirs: Sequence[str]) -> str:
    """gin's error message `err` with a hint on what to change; `gin_dirs`: where the shipped
    gin files are."""
    text = str(err)
    m = re.search(r"(\w+)/macro\.value set to `%gin\.REQUIRED`", text)
    if m:
        return missing_macro_message([m.group(1)], program)
    m = re.search(r"No bindings specified for '(\w+)/gin\.macro'", text)
    if m:
        return (f"{text}\nThe config uses macro %{m.group(1)} but never defines it. "
                + missing_macro_message([m.group(1)], program).split("\n", 1)[1])
    m = re.search(r"(\S+) set to `%gin\.REQUIRED`", text)
    if m:
        return f"{text}\nBind it in a gin file or with --gin.{m.group(1)}=VALUE."
    if "No configurable matching" in text or "doesn't have a parameter named" in text:
        return (f"{text}\nHint: check the spelling against the gin files in "
                f"{list(gin_dirs)}; configurables from other modules need an "
                "`import module.name` line in a gin file. Macros are UPPER_CASE "
                "(--gin.MODEL_DIR=...), parameters are configurable.param "
                "(--gin.T5Config.dropout_rate=0.1).")
    if "Unable to open file" in text:
        return (f"{text}\nHint: `include` looks in the gin search path; add the folder with "
                "--gin_search_paths=DIR.")
    return f"{text}\nHint: gin values are Python literals: strings need inner quotes, " \
           "e.g. --gin.MODEL_DIR=\"'/tmp/run'\"."


def _unclosed_bracket(text: str):
    """(error line, line of the innermost bracket left open) if `text` does not tokenize."""
    opened = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.OP and tok.string in "([{":
                opened.append((tok.string, tok.start[0]))
            elif tok.type == tokenize.OP and tok.string in ")]}" and opened:
                opened.pop()
    except tokenize.TokenError as e:
        line = e.args[1][0] if len(e.args) > 1 and e.args[1] else text.count("\n") + 1
        return line, opened[-1] if opened else None
    return None


def _token_error_location(path: str, paths: Sequence[str], seen=None):
    """(file, line, open bracket) of the first tokenize error in gin file `path` or a file it
    includes."""
    seen = set() if seen is None else seen
    if path in seen or not os.path.isfile(path):
        return None
    seen.add(path)
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    bad = _unclosed_bracket(text)
    if bad:
        return path, bad[0], bad[1]
    for m in re.finditer(r"^\s*include\s+['\"]([^'\"]+)['\"]", text, re.M):
        name = m.group(1)
        for c in [name] + [os.path.join(p, name) for p in (os.path.dirname(path), *paths)]:
            if os.path.isfile(c):
                found = _token_error_location(os.path.abspath(c), paths, seen)
                if found:
                    return found
                break
    return None


def syntax_message(err: BaseException, source: str, paths: Sequence[str]) -> str:
    """A gin syntax error in `source` (a gin file path, or the --gin. flag) as one message
    naming the file (or flag) and line."""
    if isinstance(err, tokenize.TokenError):
        if source.startswith("--"):
            return (f"{source}: the value is incomplete (an unclosed bracket or quote): "
                    "close every (, [, { and quote")
        path, line, bracket = _token_error_location(source, paths) or (source, None, None)
        if bracket:
            return (f"{path}:{bracket[1]}: gin syntax error: the '{bracket[0]}' opened on line "
                    f"{bracket[1]} is never closed (the file ends at line {line} inside it)")
        return (f"{path}{f':{line}' if line else ''}: gin syntax error: the file ends inside "
                "an unclosed bracket or string")
    loc = err.args[1] if isinstance(err, SyntaxError) and len(err.args) > 1 else None
    filename = getattr(loc, "filename", None) or getattr(err, "filename", None)
    line = getattr(loc, "line_num", None) or getattr(err, "lineno", None)
    content = (getattr(loc, "line_content", None) or "").rstrip("\n")
    msg = err.args[0] if err.args else str(err)
    if source.startswith("--"):
        text = f"{source}: gin cannot parse this binding ({msg})"
        key, _, value = source[len("--gin."):].partition("=") if source.startswith(
            "--gin.") else ("", "", "")
        if key and value and not value.strip().startswith(("'", '"', "[", "{", "(", "%", "@")):
            text += (f". Strings need inner quotes: --gin.{key}=\"'{value}'\" (the outer "
                     "quotes are for the shell, the inner ones make it a gin string)")
        return text
    where = f"{filename or source}:{line}" if line else (filename or source)
    return f"{where}: gin syntax error: {msg}" + (f"\n    {content}" if content else "")
