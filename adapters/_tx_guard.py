"""Refusing transaction control in a transactional step's SQL (SQLite and Postgres).

A transactional step's SQL runs inside the transaction that also records the
step's completion. A ``COMMIT`` there would make the step's writes durable
before (and whatever becomes of) its completion, and a ``ROLLBACK`` or ``BEGIN``
would end or confuse the transaction the engine still relies on. So the
connection handed to the step refuses such statements before they reach the
database: the step fails with :class:`~continuum_py.errors.ConfigurationError`
and its writes roll back with it.

The check reads only the first word of each statement in the text, skipping
comments, quoted strings and identifiers, and Postgres dollar-quoted bodies, so
``BEGIN`` inside a function body or a string is not mistaken for a statement.
"""

from __future__ import annotations

# First words of statements that begin, end or split the transaction. ``START``
# and ``ABORT`` are Postgres spellings; ``PREPARE TRANSACTION`` (two-phase
# commit) ends it too, while ``PREPARE name AS ...`` is an ordinary statement.
_CONTROL = frozenset(
    {"BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE"}
)


_SECOND = frozenset(
    {"TO", "TRANSACTION", "WORK", "IMMEDIATE", "EXCLUSIVE", "DEFERRED", "SAVEPOINT", "PREPARED"}
)


def control_statement(sql: str) -> str | None:
    """The first transaction control statement in ``sql`` (its leading words), or ``None``."""
    for words in _statements(sql):
        if not words:
            continue
        first, second = words[0], words[1] if len(words) > 1 else ""
        if first == "START" and second != "TRANSACTION":
            continue
        if first in _CONTROL or (first == "PREPARE" and second == "TRANSACTION"):
            # Name the statement by its keywords, not by the user's savepoint name.
            return f"{first} {second}" if second in _SECOND else first
    return None


def refusal_message(found: str) -> str:
    """Why ``found`` (a transaction control statement) was refused, and what to do."""
    return (
        f"{found!r} is not allowed in a transactional step: the engine owns its transaction, "
        "which commits the step's SQL together with the record of its completion. The step "
        "fails and its writes roll back; raise an exception to roll a step back"
    )


def ended_message() -> str:
    """Why a step whose SQL ended the engine's transaction fails."""
    return (
        "the transactional step's own SQL ended the engine's transaction (a transaction "
        "control statement, or an error that rolled it back, such as ON CONFLICT ROLLBACK), "
        "so its writes can no longer commit with its completion; the step fails"
    )


def _statements(sql: str) -> list[list[str]]:
    """The first two words (upper-cased) of each statement in ``sql``."""
    out: list[list[str]] = []
    words: list[str] = []  # of the current statement; "" for a literal, quoted name or symbol
    # Inside CREATE TRIGGER ... BEGIN ... END (SQLite) or BEGIN ATOMIC ... END
    # (Postgres), ';' separates the body's statements, not the text's.
    depth, creating, trigger = 0, False, False
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c.isspace():
            i += 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
        elif sql.startswith("/*", i):
            i = _block_comment_end(sql, i)
        elif c in "'\"`[":
            escapes = c == "'" and words[-1:] == ["E"] and sql[i - 1] in "eE"
            i = _quoted_end(sql, i, backslash=escapes)
            words.append("")
        elif c == "$" and (tag := _dollar_tag(sql, i)) is not None:
            j = sql.find(tag, i + len(tag))
            i = n if j < 0 else j + len(tag)
            words.append("")
        elif c == ";":
            if depth == 0:
                out.append(words[:2])
                words, creating, trigger = [], False, False
            i += 1
        elif c.isalpha() or c == "_":
            j = i + 1
            while j < n and (sql[j].isalnum() or sql[j] in "_$"):
                j += 1
            word = sql[i:j].upper()
            if not words and word == "CREATE":
                creating = True
            elif creating:
                if word == "TRIGGER":
                    trigger = True
                elif (
                    (word == "BEGIN" and trigger and depth == 0)
                    or (word == "ATOMIC" and words[-1:] == ["BEGIN"])
                    or (word == "CASE" and depth > 0)
                ):
                    depth += 1
                elif word == "END" and depth > 0:
                    depth -= 1
            words.append(word)
            i = j
        else:
            words.append("")
            i += 1
    out.append(words[:2])
    return out


def _block_comment_end(sql: str, i: int) -> int:
    # Postgres nests block comments; SQLite does not, but nesting only matters
    # for text that would be a syntax error there anyway.
    depth, n = 0, len(sql)
    while i < n:
        if sql.startswith("/*", i):
            depth += 1
            i += 2
        elif sql.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return n


def _quoted_end(sql: str, i: int, *, backslash: bool = False) -> int:
    close = "]" if sql[i] == "[" else sql[i]
    j, n = i + 1, len(sql)
    while j < n:
        ch = sql[j]
        if backslash and ch == "\\":
            j += 2
            continue
        if ch == close:
            if close != "]" and j + 1 < n and sql[j + 1] == close:
                j += 2  # a doubled quote stands for itself
                continue
            return j + 1
        j += 1
    return n


def _dollar_tag(sql: str, i: int) -> str | None:
    """``$$`` or ``$tag$`` opening a Postgres dollar-quoted string at ``i`` (``$1`` is not)."""
    j, n = i + 1, len(sql)
    if j < n and (sql[j].isalpha() or sql[j] == "_"):
        while j < n and (sql[j].isalnum() or sql[j] == "_"):
            j += 1
    return sql[i : j + 1] if j < n and sql[j] == "$" else None
