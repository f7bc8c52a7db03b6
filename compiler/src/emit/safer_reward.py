"""The reward of a saferc rubric, for trainers other than saferc.

Written by `saferc emit`, next to `reward_spec.json` (the compiled
rubrics, scorers and judges of one pipeline). This module scores a
completion exactly as `saferc run` does: the same criteria, scales,
penalties, format terms and `total`, the same built-in scorers, the same
questions to an HTTP judge. It needs only the Python standard library
(and the `tokenizers` package where verl hands over no token count).

Entry points:

- `trl_reward(prompts, completions, completion_ids=None, **columns)`: a TRL
  `GRPOTrainer` reward function (the dataset's `safer_row` column holds
  each prompt's row);
- `compute_score(data_source, solution_str, ground_truth, extra_info)`:
  verl's custom reward function (`extra_info["safer_row"]`);
- `score(row, text, tokens)`: one completion's scores as a dict;
- `python safer_reward.py score [--rubric NAME] < items.jsonl`: scores
  `{"row": {...}, "text": "...", "tokens": N}` lines, one JSON line out
  per line in (`saferc`'s tests compare these with its own scores);
- `python safer_reward.py rows SPLIT`: the rows a stage reads, as the
  trainer scripts load them.

`SAFER_REWARD_SPEC` names another spec file; `SAFER_DATA` replaces the
dataset file named in it (a cluster path).
"""

import decimal
import json
import math
import os
import random
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import base64
from concurrent.futures import ThreadPoolExecutor

SPEC_PATH = os.environ.get("SAFER_REWARD_SPEC") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "reward_spec.json"
)


class EvalError(Exception):
    """An expression that cannot be evaluated (as saferc's `EvalError`)."""


class Range:
    """An inclusive range `low..high`."""

    __slots__ = ("low", "high")

    def __init__(self, low, high):
        self.low, self.high = low, high

    def __eq__(self, other):
        return isinstance(other, Range) and self.low == other.low and self.high == other.high


# A name with no value here (saferc's `None` from `Env::var`).
UNKNOWN = object()


def rust_number(x):
    """`x` as Rust's `Display` writes an f64: `1`, `0.5`, `-0`, `1e20` in full."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    text = format(decimal.Decimal(repr(x)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


# Values: float (a number), bool, str, list, Range, None (a missing field).
def is_num(v):
    return isinstance(v, float)


def describe(v):
    if isinstance(v, bool):
        return "a boolean"
    if is_num(v):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, Range):
        return "a range"
    return "nothing (a missing field)"


def num(v, what):
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if is_num(v):
        return v
    raise EvalError(f"{what} should be a number, found {describe(v)}")


def truth(v, what):
    if isinstance(v, bool):
        return v
    if v is None:
        return False
    raise EvalError(f"{what} should be a condition, found {describe(v)}")


def text_of(v, what):
    if isinstance(v, str):
        return v
    raise EvalError(f"{what} should be a string, found {describe(v)}")


def from_json(v):
    """A JSON value as a run-time value (objects become None)."""
    if isinstance(v, bool) or isinstance(v, str) or v is None:
        return v
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, list):
        return [from_json(x) for x in v]
    return None


def same(a, b):
    """Structural equality as Rust's derived `PartialEq` on values."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if is_num(a) or is_num(b):
        return is_num(a) and is_num(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if isinstance(a, Range) and isinstance(b, Range):
        return a == b
    return a is None and b is None


def equal(a, b):
    if is_num(a) and is_num(b) and not isinstance(a, bool) and not isinstance(b, bool):
        return abs(a - b) <= sys.float_info.epsilon * max(abs(a), abs(b), 1.0)
    return same(a, b)


def contains(container, item):
    if isinstance(container, list):
        return any(equal(i, item) for i in container)
    if isinstance(container, Range):
        x = num(item, "the left side of `in`")
        return container.low <= x <= container.high
    if isinstance(container, str):
        return text_of(item, "the left side of `in`") in container
    if container is None:
        return False
    raise EvalError(
        "the right side of `in` should be a list, a range or a string, found "
        + describe(container)
    )


def divide(x, y):
    if y == 0.0:
        if x == 0.0 or math.isnan(x):
            return math.nan
        return math.copysign(math.inf, x) * math.copysign(1.0, y)
    return x / y


def remainder(x, y):
    if y == 0.0 or math.isinf(x) or math.isnan(x) or math.isnan(y):
        return math.nan
    if math.isinf(y):
        return x
    return math.fmod(x, y)


def nan_min(a, b):
    if math.isnan(a):
        return b
    if math.isnan(b):
        return a
    return min(a, b)


def nan_max(a, b):
    if math.isnan(a):
        return b
    if math.isnan(b):
        return a
    return max(a, b)


def clamp(x, lo, hi):
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x


SYMBOLS = {
    "or": "or", "and": "and", "eq": "==", "ne": "!=", "lt": "<", "le": "<=",
    "gt": ">", "ge": ">=", "in": "in", "not_in": "not in", "range": "..",
    "add": "+", "sub": "-", "mul": "*", "div": "/", "rem": "%",
}


def builtin(func, args):
    """A built-in function's value, or UNKNOWN when `func` is not one."""

    def one():
        if not args:
            raise EvalError(f"{func}() takes one argument")
        return args[0]

    if func == "index":
        if len(args) != 2:
            raise EvalError("an index takes a value and a position")
        base, i = args
        i = num(i, "an index")
        if not (math.isfinite(i) and i == math.floor(i)):
            raise EvalError(f"an index is a whole number, found {rust_number(i)}")

        def at(n):
            k = n + i if i < 0 else i
            return int(k) if 0 <= k < n else None

        if isinstance(base, list):
            k = at(len(base))
            return None if k is None else base[k]
        if isinstance(base, str):
            k = at(len(base))
            return None if k is None else base[k]
        if base is None:
            return None
        raise EvalError(f"`[...]` needs a list or a string, found {describe(base)}")
    if func == "len":
        v = one()
        if isinstance(v, (str, list)):
            return float(len(v))
        if v is None:
            return 0.0
        raise EvalError(f"len() needs a string or a list, found {describe(v)}")
    if func == "lower":
        return text_of(one(), "the argument of lower()").lower()
    if func == "upper":
        return text_of(one(), "the argument of upper()").upper()
    if func == "words":
        return float(len(text_of(one(), "the argument of words()").split()))
    if func == "contains":
        if len(args) != 2:
            raise EvalError("contains() takes a container and an item")
        return contains(args[0], args[1])
    if func == "abs":
        return abs(num(one(), "the argument of abs()"))
    if func in ("min", "max"):
        nums = [num(a, f"an argument of {func}()") for a in args]
        if not nums:
            raise EvalError(f"{func}() needs an argument")
        pick = nan_min if func == "min" else nan_max
        out = nums[0]
        for v in nums[1:]:
            out = pick(out, v)
        return out
    if func == "clamp":
        if len(args) != 3:
            raise EvalError("clamp() takes a value, a low and a high")
        lo = num(args[1], "clamp's low")
        return clamp(num(args[0], "clamp's value"), lo, nan_max(num(args[2], "clamp's high"), lo))
    return UNKNOWN


def evaluate(e, env):
    """Evaluates a plan expression (saferc's `safer_ir::plan::eval`)."""
    kind = e["kind"]
    if kind == "const":
        return value_of(e["value"])
    if kind == "var":
        v = env.var(e["name"])
        if v is UNKNOWN:
            raise EvalError(f"`{e['name']}` has no value here")
        return v
    if kind == "criterion":
        v = env.criterion(e["rubric"], e.get("criterion"))
        if v is UNKNOWN:
            name = e["rubric"] if e.get("criterion") is None else f"{e['rubric']}.{e['criterion']}"
            raise EvalError(f"`{name}` has no value here")
        return v
    if kind == "field":
        base = evaluate(e["base"], env)
        if base is None and e["base"]["kind"] == "var":
            v = env.var(f"{e['base']['name']}.{e['field']}")
            return None if v is UNKNOWN else v
        if base is None:
            return None
        raise EvalError(f"`.{e['field']}` needs an object, found {describe(base)}")
    if kind == "call":
        args = [evaluate(a, env) for a in e["args"]]
        named = {k: evaluate(v, env) for k, v in sorted(e["named"].items())}
        v = builtin(e["func"], args)
        if v is not UNKNOWN:
            return v
        return env.call(e["func"], args, named)
    if kind == "unary":
        v = evaluate(e["operand"], env)
        if e["op"] == "neg":
            return -num(v, "the operand of `-`")
        return not truth(v, "the operand of `not`")
    if kind == "binary":
        return binary(e["op"], e["lhs"], e["rhs"], env)
    if kind == "if":
        if truth(evaluate(e["cond"], env), "the condition of `if`"):
            return evaluate(e["then"], env)
        return evaluate(e["otherwise"], env)
    if kind == "list":
        return [evaluate(i, env) for i in e["items"]]
    raise EvalError(f"an expression of kind {kind!r} (this spec is newer than safer_reward.py)")


def value_of(v):
    """A constant as the plan writes it: a range is `{"low": .., "high": ..}`."""
    if isinstance(v, dict) and set(v) == {"low", "high"}:
        return Range(float(v["low"]), float(v["high"]))
    if isinstance(v, list):
        return [value_of(x) for x in v]
    return from_json(v)


def binary(op, lhs, rhs, env):
    sym = SYMBOLS[op]
    if op == "and":
        return truth(evaluate(lhs, env), "the left side of `and`") and truth(
            evaluate(rhs, env), "the right side of `and`"
        )
    if op == "or":
        return truth(evaluate(lhs, env), "the left side of `or`") or truth(
            evaluate(rhs, env), "the right side of `or`"
        )
    a, b = evaluate(lhs, env), evaluate(rhs, env)
    left, right = f"the left side of `{sym}`", f"the right side of `{sym}`"
    if op == "eq":
        return equal(a, b)
    if op == "ne":
        return not equal(a, b)
    if op in ("lt", "le", "gt", "ge"):
        x, y = num(a, left), num(b, right)
        return {"lt": x < y, "le": x <= y, "gt": x > y, "ge": x >= y}[op]
    if op in ("in", "not_in"):
        inside = contains(b, a)
        return inside if op == "in" else not inside
    if op == "range":
        return Range(num(a, left), num(b, right))
    if op == "add":
        if isinstance(a, str) and isinstance(b, str):
            return a + b
        return num(a, left) + num(b, right)
    if op == "sub":
        return num(a, left) - num(b, right)
    if op == "mul":
        return num(a, left) * num(b, right)
    if op == "div":
        return divide(num(a, left), num(b, right))
    if op == "rem":
        return remainder(num(a, left), num(b, right))
    raise EvalError(f"operator {op!r} (this spec is newer than safer_reward.py)")


# ---------------------------------------------------------------- rows


class Row:
    """A dataset row as saferc reads it: fields flattened to dotted names,
    the prompt from `question` (or `prompt`)."""

    def __init__(self, obj, origin="row"):
        if not isinstance(obj, dict):
            raise EvalError(f"{origin}: a row must be a JSON object")
        self.origin = origin
        self.fields = {}
        flatten("", obj, self.fields)
        prompt = None
        for key in ("question", "prompt"):
            if obj.get(key) is not None:
                prompt = obj[key]
                if not isinstance(prompt, str):
                    raise EvalError(f"{origin}: `{key}` must be text (the prompt)")
                break
        if prompt is None:
            raise EvalError(f"{origin}: missing field `question` (the prompt text; `prompt` also works)")
        self.prompt = prompt
        self.raw = obj

    def text(self, field):
        v = self.fields.get(field)
        if isinstance(v, bool):
            return "true" if v else "false"
        if is_num(v):
            return rust_number(v)
        if isinstance(v, str):
            return v
        return None

    def var(self, name):
        return self.fields.get(name)


def flatten(prefix, v, out):
    if isinstance(v, dict):
        for k, x in v.items():
            flatten(f"{prefix}.{k}" if prefix else k, x, out)
    else:
        out[prefix] = from_json(v)


# ---------------------------------------------------------- the scorers

INTRINSICS = (
    "think_answer_format", "refusal", "safe_response", "helpful_response", "regex",
    "length", "label_match", "category_match", "think_answer_consistency",
    "hallucinated_objects",
)

REFUSALS = (
    "i can't", "i cannot", "i can not", "i won't", "i will not", "i'm not able",
    "i am not able", "i'm unable", "i am unable", "i must decline", "i refuse",
    "sorry, but", "not able to help", "can't help", "cannot help", "won't help",
)

RISK_WORDS = (
    "unsafe", "harm", "harmful", "danger", "dangerous", "risk", "risky", "illegal",
    "weapon", "hurt",
)


def tagged(text, tag):
    open_, close = f"<{tag}>", f"</{tag}>"
    start = text.find(open_)
    if start < 0:
        return None
    start += len(open_)
    end = text.find(close, start)
    return None if end < 0 else text[start:end]


def answer(text):
    a = tagged(text, "answer")
    if a is not None:
        return a
    i = text.find("</think>")
    return text if i < 0 else text[i + len("</think>"):]


def is_word_char(c):
    return c.isalnum() or c in "_-"


def words(text):
    out, current = [], []
    for c in text:
        if is_word_char(c):
            current.append(c)
        elif current:
            out.append("".join(current).lower())
            current = []
    if current:
        out.append("".join(current).lower())
    return out


def names_a_risk(think):
    t = words(think)
    return any(w in RISK_WORDS for w in t) and not any(
        t[i] == "no" and t[i + 1] in RISK_WORDS for i in range(len(t) - 1)
    )


def think_answer_format(text):
    t = text.strip()
    think, ans = tagged(t, "think"), tagged(t, "answer")
    close_think, open_answer = t.find("</think>"), t.find("<answer>")
    # Rust compares `Option`s: a missing `</think>` (None) is before any position.
    ok = (
        t.startswith("<think>")
        and t.endswith("</answer>")
        and think is not None and think.strip() != ""
        and ans is not None and ans.strip() != ""
        and (close_think < 0 and open_answer >= 0 or 0 <= close_think < open_answer)
    )
    return 1.0 if ok else 0.0


def is_refusal(text):
    a = answer(text).lower().replace("\u2019", "'")
    return any(p in a for p in REFUSALS)


def part_field(completion, name):
    """`think.FIELD` or `answer.FIELD`, or UNKNOWN for another name."""
    part, dot, field = name.partition(".")
    if not dot or part not in ("think", "answer"):
        return UNKNOWN
    text = tagged(completion, "think") if part == "think" else answer(completion)
    if field == "text":
        return text or ""
    if field == "length":
        return float(0 if text is None else len(words(text)))
    if field == "verdict":
        if text is None:
            return ""
        if part == "think" and names_a_risk(text):
            return "unsafe"
        if part == "answer" and is_refusal(completion):
            return "unsafe"
        return "safe"
    return UNKNOWN


def unsafe_prompt(row, field, unsafe_values):
    v = row.text(field)
    return v is not None and any(ascii_fold_equal(u.strip(), v.strip()) for u in unsafe_values)


def ascii_fold_equal(a, b):
    """Rust's `eq_ignore_ascii_case`: only ASCII letters fold."""
    if len(a.encode()) != len(b.encode()):
        return False
    fold = lambda s: "".join(c.lower() if "A" <= c <= "Z" else c for c in s)
    return fold(a) == fold(b)


def arg_text(named, key, default):
    return text_of(named[key], key) if key in named else default


def arg_num(named, key, default):
    return num(named[key], key) if key in named else default


def arg_list(named, key):
    v = named.get(key)
    if isinstance(v, list):
        return [x for x in v if isinstance(x, str)]
    return ["unsafe"]


def score_of(b):
    return 1.0 if b else 0.0


_REGEXES = {}


def intrinsic(func, args, named, text, tokens, row, vocabulary):
    named = dict(named)
    if args and func == "regex":
        named["pattern"] = args[0]
    ans = answer(text)
    if func == "think_answer_format":
        return think_answer_format(text)
    if func == "refusal":
        return score_of(is_refusal(text))
    if func == "safe_response":
        harmful = unsafe_prompt(row, arg_text(named, "field", "label"), arg_list(named, "unsafe_values"))
        return score_of(harmful == is_refusal(text))
    if func == "helpful_response":
        field = arg_text(named, "field", "label")
        min_words = arg_num(named, "min_words", 3.0)
        harmful = unsafe_prompt(row, field, arg_list(named, "unsafe_values"))
        substantive = float(len(words(ans))) >= min_words
        return score_of(substantive and (harmful or not is_refusal(text)))
    if func == "regex":
        pattern = arg_text(named, "pattern", "")
        if pattern not in _REGEXES:
            try:
                _REGEXES[pattern] = re.compile(pattern)
            except re.error as e:
                raise EvalError(f"regex(pattern = {json.dumps(pattern)}): {e}")
        return score_of(_REGEXES[pattern].search(ans) is not None)
    if func == "length":
        lo, hi = arg_num(named, "min", 0.0), arg_num(named, "max", 4096.0)
        slack = nan_max(arg_num(named, "slack", 64.0), 1.0)
        if tokens is None:
            raise EvalError("length() needs the completion's token count, which the trainer did not give")
        n = float(tokens)
        outside = lo - n if n < lo else nan_max(n - hi, 0.0)
        return clamp(1.0 - outside / slack, 0.0, 1.0)
    if func in ("label_match", "category_match"):
        field = arg_text(named, "field", "label" if func == "label_match" else "category")
        expected = row.text(field)
        if expected is None:
            return 0.0
        return score_of(expected.lower() in words(ans))
    if func == "think_answer_consistency":
        think = tagged(text, "think")
        if think is None:
            return 0.0
        return score_of(names_a_risk(think) == is_refusal(text))
    if func == "hallucinated_objects":
        field = arg_text(named, "field", "objects")
        items = row.fields.get(field)
        if not isinstance(items, list):
            return 0.0
        listed = {x.lower() for x in items if isinstance(x, str)}
        return score_of(any(w in vocabulary() and w not in listed for w in words(ans)))
    raise EvalError(f"`{func}()` has no value here")


# --------------------------------------------------------------- judges

JUDGE_SYSTEM_PROMPT = (
    "You grade responses. Reply with one number in the range the question gives and nothing else."
)
MAX_RETRY_AFTER = 60.0


def parse_score(text, lo, hi):
    """The score in a judge's reply, parsed as strictly as saferc does."""
    t = text.strip()
    if t.endswith(".") and any(c.isdigit() and c.isascii() for c in t[:-1]):
        t = t[:-1]
    unsigned = t[1:] if t.startswith("-") and lo < 0.0 else t
    digits = sum(1 for c in unsigned if "0" <= c <= "9")
    dots = unsigned.count(".")
    if digits == 0 or dots > 1 or digits + dots != len(unsigned):
        return None
    try:
        v = float(t)
    except ValueError:
        return None
    return v if lo <= v <= hi else None


class HttpJudge:
    """An OpenAI-compatible `/chat/completions` judge, with saferc's retries."""

    def __init__(self, name, spec):
        self.name = name
        endpoint = spec.get("endpoint")
        if not endpoint:
            raise EvalError(f"judge `{name}` is `kind = http` but has no `endpoint`")
        url = urllib.parse.urlsplit(endpoint)
        path = url.path.rstrip("/")
        if not path.endswith("/chat/completions"):
            path += "/chat/completions"
        netloc = url.hostname or ""
        if url.port:
            netloc += f":{url.port}"
        self.url = urllib.parse.urlunsplit((url.scheme, netloc, path, url.query, ""))
        self.authorization = None
        if url.username is not None or url.password is not None:
            user = urllib.parse.unquote(url.username or "")
            password = urllib.parse.unquote(url.password or "")
            self.authorization = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        key_env = spec.get("api_key_env")
        if key_env:
            key = os.environ.get(key_env)
            if key is None:
                raise EvalError(f"judge `{name}` reads its API key from ${key_env}, which is not set")
            self.authorization = f"Bearer {key}"
        self.model = spec.get("model_name") or "default"
        self.retries = int(spec.get("retries", 3))
        self.timeout = min(max(float(spec.get("timeout_s", 60.0)), 0.001), 86400.0)
        self.temperature = float(spec.get("temperature", 0.0))
        self.fallback = spec.get("fallback")
        self.concurrency = max(int(spec.get("concurrency", 1)), 1)
        self.backoff = float(os.environ.get("SAFERC_JUDGE_BACKOFF_MS", "500")) / 1000.0
        self.counts = {"asked": 0, "fallbacks": 0, "retries": 0}
        self._lock = threading.Lock()

    def _send(self, body):
        request = urllib.request.Request(
            self.url, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )
        if self.authorization:
            request.add_header("Authorization", self.authorization)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return answer.read().decode("utf-8", "replace"), None
        except urllib.error.HTTPError as e:
            retry_after = e.headers.get("Retry-After", "").strip() if e.headers else ""
            wait = float(retry_after) if retry_after.isdigit() else None
            return None, (e.code == 429 or e.code >= 500, f"HTTP {e.code}", wait)
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            return None, (True, str(getattr(e, "reason", e)), None)

    def ask(self, criterion, description, row, completion, lo, hi):
        question = (
            f"Criterion `{criterion}`: {description if description is not None else criterion}\n\n"
            f"Prompt:\n{row.prompt}\n\nResponse:\n{completion}\n\n"
            f"Score ({rust_number(lo)} to {rust_number(hi)}):"
        )
        body = {
            "model": self.model,
            "temperature": self.temperature,
            "messages": [
                {"role": "system", "content": JUDGE_SYSTEM_PROMPT},
                {"role": "user", "content": question},
            ],
        }
        with self._lock:
            self.counts["asked"] += 1
        attempt = 0
        while True:
            text, failure = self._send(body)
            if failure is None:
                try:
                    said = json.loads(text)["choices"][0]["message"]["content"]
                    if not isinstance(said, str):
                        raise TypeError
                except (ValueError, KeyError, IndexError, TypeError):
                    said = text[:500]
                v = parse_score(said, lo, hi)
                if v is not None:
                    return v
                if self.fallback is not None:
                    with self._lock:
                        self.counts["fallbacks"] += 1
                    return lo + float(self.fallback) * (hi - lo)
                raise EvalError(
                    f"judge `{self.name}` replied {said!r}, which holds no score (one number from "
                    f"{rust_number(lo)} to {rust_number(hi)} was asked for)"
                )
            retryable, why, retry_after = failure
            if retryable and attempt < self.retries:
                wait = retry_after if retry_after is not None else self.backoff * 2 ** attempt
                wait = min(wait, MAX_RETRY_AFTER)
                with self._lock:
                    self.counts["retries"] += 1
                print(
                    f"warning: judge {self.name} failed ({why}); retry {attempt + 1} of {self.retries} in {wait:.1f}s",
                    file=sys.stderr,
                )
                time.sleep(wait)
                attempt += 1
                continue
            attempts = attempt + 1
            raise EvalError(
                f"the judge `{self.name}` failed after {attempts} attempt{'' if attempts == 1 else 's'}: {why}"
            )


class RulesJudge:
    concurrency = 1

    def ask(self, criterion, description, row, completion, lo, hi):
        raise EvalError(
            f"criterion `{criterion}` has no scorer and the judge is `rules`; give it `scorer = ...` "
            "or use a `model` or `http` judge"
        )


# -------------------------------------------------------------- rubrics


class Scope:
    """What names and calls mean while one completion is scored."""

    def __init__(self, reward, rubric, row, text, tokens):
        self.reward, self.rubric = reward, rubric
        self.row, self.text, self.tokens = row, text, tokens
        self.vars, self.params = {}, {}
        self.criterion_info = None

    def var(self, name):
        if name in self.params:
            return self.params[name]
        if name in self.vars:
            return self.vars[name]
        if name in ("think", "answer"):
            return None
        v = part_field(self.text, name)
        if v is not UNKNOWN:
            return v
        return self.row.var(name)

    def criterion(self, rubric, criterion):
        return UNKNOWN

    def call(self, func, args, named):
        if func in INTRINSICS:
            return intrinsic(func, args, named, self.text, self.tokens, self.row, self.reward.vocabulary)
        if func in ("judge.score", "judge.flag"):
            question = text_of(args[0], "the judge's question") if args else None
            criterion, description, scale = self.criterion_info or ("reward", None, (0.0, 1.0))
            lo, hi = scale if func == "judge.score" and scale[1] > scale[0] else (0.0, 1.0)
            v = self.reward.judge_of(self.rubric).ask(
                question if question is not None else criterion, description, self.row, self.text, lo, hi
            )
            return v >= 0.5 if func == "judge.flag" else v
        function = self.reward.spec["functions"].get(func)
        if function is not None:
            params = {}
            for i, (name, default) in enumerate(function["params"]):
                if i < len(args):
                    params[name] = args[i]
                elif name in named:
                    params[name] = named[name]
                else:
                    params[name] = None if default is None else value_of(default)
            inner = Scope(self.reward, self.rubric, self.row, self.text, self.tokens)
            inner.vars, inner.params, inner.criterion_info = dict(self.vars), params, self.criterion_info
            return evaluate(function["body"], inner)
        raise EvalError(f"`{func}()` has no value here")


class Reward:
    """The compiled rubrics of `reward_spec.json`, ready to score."""

    def __init__(self, spec):
        if spec.get("format") != 1:
            raise EvalError(f"reward_spec.json format {spec.get('format')!r}; this safer_reward.py reads format 1")
        self.spec = spec
        self.judges = {}
        for name, judge in spec.get("judges", {}).items():
            if judge["kind"] == "http":
                self.judges[name] = HttpJudge(name, judge)
            elif judge["kind"] == "rules":
                self.judges[name] = RulesJudge()
            else:
                raise EvalError(f"judge `{name}` is `kind = {judge['kind']}`, which safer_reward.py cannot ask")
        self._vocabulary = None
        self._vocabulary_lock = threading.Lock()

    def judge_of(self, rubric):
        name = self.spec["rubrics"][rubric].get("judge")
        return self.judges.get(name) if name else RulesJudge()

    def vocabulary(self):
        """Every object named in the dataset's rows (after its filters), lower case."""
        with self._vocabulary_lock:
            if self._vocabulary is None:
                vocab = set()
                source = self.spec.get("vocabulary")
                if source:
                    for row in read_rows(source["source"], source["filters"]):
                        items = row.fields.get("objects")
                        if isinstance(items, list):
                            vocab.update(x.lower() for x in items if isinstance(x, str))
                self._vocabulary = vocab
            return self._vocabulary

    def score(self, row, text, tokens=None, rubric=None):
        """One completion's scores: each criterion (0..1), each penalty, the
        format terms, `weighted` and `total` (the reward)."""
        if not isinstance(row, Row):
            row = Row(row)
        rubric = rubric or self.spec["reward"]
        spec = self.spec["rubrics"][rubric]
        scope = Scope(self, rubric, row, text, tokens)

        def context(part, e):
            return EvalError(f"rubric `{rubric}`, {part}: {e}")

        criteria = []
        for c in spec["criteria"]:
            lo, hi = c["scale"]
            scope.criterion_info = (c["name"], c.get("description"), (lo, hi))
            try:
                if c.get("scorer") is not None:
                    raw = num(evaluate(c["scorer"], scope), c["name"])
                else:
                    ask_lo, ask_hi = (lo, hi) if hi > lo else (0.0, 1.0)
                    raw = self.judge_of(rubric).ask(c["name"], c.get("description"), row, text, ask_lo, ask_hi)
            except EvalError as e:
                raise context(f"criterion `{c['name']}`", e) from None
            v = clamp(divide(raw - lo, hi - lo), 0.0, 1.0) if hi > lo else raw
            scope.vars[c["name"]] = v
            criteria.append(v)
        scope.criterion_info = None
        weight_sum = 0.0
        for c in spec["criteria"]:
            weight_sum += c["weight"]
        weighted = 0.0
        if weight_sum > 0.0:
            for c, v in zip(spec["criteria"], criteria):
                weighted += c["weight"] * v
            weighted = weighted / weight_sum
        penalties = []
        for p in spec["penalties"]:
            try:
                applies = True if p.get("when") is None else truth(evaluate(p["when"], scope), "a penalty's `when`")
                amount = num(evaluate(p["value"], scope), p["name"]) if applies else 0.0
            except EvalError as e:
                raise context(f"penalty `{p['name']}`", e) from None
            penalties.append(amount)
        fmt = 0.0
        for f in spec["formats"]:
            fmt += f["weight"] * format_score(f["format"], text)
        penalty_sum = 0.0
        for p in penalties:
            penalty_sum += p
        scope.vars["weighted"] = weighted
        scope.vars["penalties"] = penalty_sum
        scope.vars["format"] = fmt
        try:
            total = num(evaluate(spec["total"], scope), "total")
        except EvalError as e:
            raise context("total", e) from None
        if not math.isfinite(total):
            raise context("total", EvalError(f"it is {rust_number(total)}; make `total` finite for every score"))
        return {
            "criteria": criteria,
            "penalties": penalties,
            "format": fmt,
            "weighted": weighted,
            "total": total,
        }

    def names(self, rubric=None):
        spec = self.spec["rubrics"][rubric or self.spec["reward"]]
        return [c["name"] for c in spec["criteria"]], [p["name"] for p in spec["penalties"]]

    def score_many(self, items, rubric=None):
        """Scores `(row, text, tokens)` items, asking an HTTP judge from
        `concurrency` threads as saferc does; results in order."""
        judge = self.judge_of(rubric or self.spec["reward"])
        workers = getattr(judge, "concurrency", 1)
        if workers <= 1 or len(items) <= 1:
            return [self.score(r, t, n, rubric) for r, t, n in items]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda item: self.score(item[0], item[1], item[2], rubric), items))


def format_score(fmt, text):
    if fmt == "think_answer":
        return think_answer_format(text)
    if fmt == "answer_only":
        a = tagged(text, "answer")
        return 1.0 if a is not None and a.strip() != "" else 0.0
    return 1.0


# ---------------------------------------------------------------- data


def read_rows(path, filters):
    """The rows of a JSONL file that parse and pass every filter (saferc
    skips the others as bad rows; images are not opened here)."""
    path = os.environ.get("SAFER_DATA") or path
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = Row(json.loads(line), f"{os.path.basename(path)}:{line_number}")
                if all(truth(evaluate(flt, row), "a filter") for flt in filters):
                    rows.append(row)
            except (ValueError, EvalError):
                continue
    return rows


def split_sizes(n, fractions):
    """Rows per split as saferc counts them: floors of the shares, the rest
    one by one to the largest remainders (ties to the first split)."""
    shares = [max(f, 0.0) * float(n) for _, f in fractions]
    sizes = [int(math.floor(s)) for s in shares]
    order = sorted(range(len(shares)), key=lambda i: (-(shares[i] - math.floor(shares[i])), i))
    left = max(n - sum(sizes), 0)
    for k in range(left):
        sizes[order[k % len(order)]] += 1
    return sizes


def split_rows(split):
    """The rows of `dataset.split` (or `dataset`), for the trainer scripts.

    A seeded shuffle dealt by the declared fractions: the same sizes as
    `saferc run`, not the same rows (saferc shuffles with ChaCha8), and
    without saferc's curation, balancing and de-duplication.
    """
    dataset, _, part = split.partition(".")
    spec = load_spec()["datasets"][dataset]
    rows = read_rows(spec["source"], spec["filters"])
    with_images = sum(1 for r in rows if r.raw.get("image") or r.raw.get("images"))
    if with_images:
        print(
            f"warning: {with_images} row(s) of `{dataset}` have images, which the emitted trainer "
            "scripts do not pass on: their prompts are the rows' text",
            file=sys.stderr,
        )
    if not part:
        return rows
    order = list(range(len(rows)))
    random.Random(spec["seed"]).shuffle(order)
    sizes = split_sizes(len(rows), spec["splits"])
    start = 0
    for (name, _), size in zip(spec["splits"], sizes):
        if name == part:
            return [rows[i] for i in order[start:start + size]]
        start += size
    raise EvalError(f"dataset `{dataset}` has no split `{part}`")


# --------------------------------------------------- trainer entry points

_REWARD = None
_REWARD_LOCK = threading.Lock()


def load_spec():
    with open(SPEC_PATH, encoding="utf-8") as f:
        return json.load(f)


def reward():
    """The module's `Reward`, read from `reward_spec.json` once."""
    global _REWARD
    with _REWARD_LOCK:
        if _REWARD is None:
            _REWARD = Reward(load_spec())
        return _REWARD


def completion_text(c):
    """A TRL completion: text, or a conversation whose last message is the answer."""
    if isinstance(c, str):
        return c
    if isinstance(c, list) and c and isinstance(c[-1], dict):
        content = c[-1].get("content", "")
        if isinstance(content, list):
            return "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return content
    return str(c)


def score(row, text, tokens=None, rubric=None):
    """One completion's scores (see `Reward.score`)."""
    return reward().score(row, text, tokens, rubric)


def trl_reward(prompts, completions, completion_ids=None, **columns):
    """TRL `GRPOTrainer` reward function: each completion's `total`; each
    criterion's and penalty's mean goes to `log_metric` when TRL gives it."""
    r = reward()
    rows = [Row(json.loads(s)) for s in columns["safer_row"]]
    texts = [completion_text(c) for c in completions]
    tokens = [len(ids) for ids in completion_ids] if completion_ids is not None else [None] * len(texts)
    scores = r.score_many(list(zip(rows, texts, tokens)))
    log_metric = columns.get("log_metric")
    if callable(log_metric) and scores:
        criteria, penalties = r.names()
        for i, name in enumerate(criteria):
            log_metric(f"safer/{name}", sum(s["criteria"][i] for s in scores) / len(scores))
        for i, name in enumerate(penalties):
            log_metric(f"safer/penalty/{name}", sum(s["penalties"][i] for s in scores) / len(scores))
    return [s["total"] for s in scores]


trl_reward.__name__ = "safer_reward"

_TOKENIZER = None


def count_tokens(text):
    """Tokens of `text` under the policy's tokenizer (verl gives no count)."""
    global _TOKENIZER
    if _TOKENIZER is None:
        from tokenizers import Tokenizer  # the Hugging Face tokenizers package

        path = os.environ.get("SAFER_TOKENIZER") or reward().spec.get("tokenizer")
        if not path:
            raise EvalError("the rubric counts tokens; set SAFER_TOKENIZER to the policy's tokenizer.json")
        if os.path.isdir(path):
            path = os.path.join(path, "tokenizer.json")
        _TOKENIZER = Tokenizer.from_file(path)
    return len(_TOKENIZER.encode(text, add_special_tokens=False).ids)


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    """verl custom reward function: `score` is the reward; each criterion and
    penalty is returned beside it, which verl logs."""
    info = extra_info or {}
    row = Row(json.loads(info["safer_row"]))
    tokens = info.get("response_length")
    if tokens is None and reward().spec.get("counts_tokens"):
        tokens = count_tokens(solution_str)
    s = reward().score(row, solution_str, tokens)
    criteria, penalties = reward().names()
    out = {"score": s["total"]}
    out.update({name: v for name, v in zip(criteria, s["criteria"])})
    out.update({f"penalty_{name}": v for name, v in zip(penalties, s["penalties"])})
    return out


def main(argv):
    if len(argv) >= 1 and argv[0] == "score":
        rubric = argv[argv.index("--rubric") + 1] if "--rubric" in argv else None
        r = reward()
        for line in sys.stdin:
            if not line.strip():
                continue
            item = json.loads(line)
            try:
                out = r.score(Row(item["row"]), item["text"], item.get("tokens"), rubric)
            except EvalError as e:
                out = {"error": str(e)}
            print(json.dumps(out))
        return 0
    if len(argv) == 2 and argv[0] == "rows":
        try:
            for row in split_rows(argv[1]):
                print(json.dumps(row.raw))
        except BrokenPipeError:  # `rows ... | head`
            sys.stderr.close()
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
