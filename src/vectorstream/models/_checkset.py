"""A built-in, generated set of varied texts for accuracy checks (int8 gate, `models check`).

Generated, not copied: templates filled deterministically, so every run checks the same texts.
It spans one word to over-limit lengths, prose, lists, code, numbers and several scripts.
"""

from __future__ import annotations

import random

_SUBJECTS = [
    "the river",
    "a small bakery",
    "the committee",
    "our new compiler",
    "the orchard",
    "a vector index",
    "the night train",
    "this recipe",
    "the city council",
    "a solar panel",
    "the library",
    "an old lighthouse",
    "the quarterly report",
    "a mountain trail",
    "the database",
]
_VERBS = [
    "opened",
    "reduced",
    "described",
    "measured",
    "replaced",
    "questioned",
    "celebrated",
    "delayed",
    "improved",
    "translated",
    "ignored",
    "repaired",
    "predicted",
    "announced",
]
_OBJECTS = [
    "the budget for next year",
    "twelve loaves of rye bread",
    "the latency of every query",
    "a storm warning for the coast",
    "the results of the survey",
    "its winter timetable",
    "the cost of maintenance",
    "a proposal about public parks",
    "three new indexes",
    "the history of the harbour",
    "an error in the billing code",
    "the harvest festival",
]
_TAILS = [
    "before anyone noticed.",
    "after a long debate.",
    "with surprising accuracy.",
    "despite the heavy rain.",
    "for the first time in years.",
    "without any explanation.",
    "to the delight of the neighbours.",
    "in under a second.",
]
_WORDS = ["cat", "Zürich", "embedding", "42", "naïve", "tokenizer", "über", "quantum", "jazz", "?"]
_UNICODE = [
    "Die Straßenbahn fährt heute nicht über die Brücke.",
    "Le café est fermé le dimanche, mais la boulangerie reste ouverte.",
    "El tren nocturno llegó con dos horas de retraso.",
    "東京の天気は明日晴れるでしょう。",
    "Москва — столица России.",
    "مرحبا بكم في المكتبة العامة",
    "नमस्ते, आप कैसे हैं?",
    "🙂 emoji 🚀 mixed ✓ with text ∑ x² ≤ ∞",
    "Ελληνικά γράμματα: αβγ δεζ",
    "한국어 문장도 잘 처리되어야 합니다.",
]
_CODE = [
    "def add(a: int, b: int) -> int:\n    return a + b\n",
    "SELECT id, name FROM users WHERE created_at > NOW() - INTERVAL '1 day';",
    "for (int i = 0; i < n; ++i) { sum += v[i] * w[i]; }",
    "const f = async (url) => { const r = await fetch(url); return r.json(); };",
    '{"name": "vectorstream", "version": "0.1.0", "tags": ["vectors", "search"]}',
    'fn main() { println!("{}", (1..=10).map(|x| x * x).sum::<u32>()); }',
]


def sentence(rng: random.Random) -> str:
    return (
        f"{rng.choice(_SUBJECTS).capitalize()} {rng.choice(_VERBS)} "
        f"{rng.choice(_OBJECTS)} {rng.choice(_TAILS)}"
    )


def check_texts(n: int = 96, seed: int = 1234) -> list[str]:
    """``n`` varied texts, the same for the same ``n`` and ``seed``."""
    rng = random.Random(seed)
    fixed: list[str] = ["", *_WORDS, *_UNICODE, *_CODE]
    out = list(fixed)
    while len(out) < n:
        roll = rng.random()
        if roll < 0.5:
            out.append(" ".join(sentence(rng) for _ in range(rng.randint(1, 4))))
        elif roll < 0.8:
            out.append(" ".join(sentence(rng) for _ in range(rng.randint(5, 15))))
        elif roll < 0.9:
            # Longer than any model window: exercises truncation.
            out.append(" ".join(sentence(rng) for _ in range(rng.randint(30, 50))))
        else:
            out.append("- " + "\n- ".join(rng.choice(_OBJECTS) for _ in range(rng.randint(2, 8))))
    return out[:n]


__all__ = ["check_texts", "sentence"]
