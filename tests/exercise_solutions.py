"""The chapters' solution cells as functions, for the checker tests on the real-model profile.

``solution("01_diagnosis", "abilities")`` runs the solution cell that defines ``abilities`` in
``book/01_diagnosis.ipynb`` and returns the function: the tests check the book's own model
answer, not a copy of it.
"""

from pathlib import Path

from ivedu.student import exercises_in, read_notebook, source

BOOK = Path(__file__).resolve().parents[1] / "book"


def solution(notebook: str, name: str):
    """The function ``name`` as the solution cell of ``book/<notebook>.ipynb`` defines it."""
    nb = read_notebook(BOOK / f"{notebook}.ipynb")
    for ex in exercises_in(nb):
        code = source(nb["cells"][ex.solution])
        if f"def {name}(" in code:
            namespace: dict = {}
            exec(compile(code, f"<{notebook} solution>", "exec"), namespace)
            return namespace[name]
    raise LookupError(f"no solution cell of {notebook} defines {name}")


def stub(*args, **kwargs):
    raise NotImplementedError("your code here")


def small(task, n: int = 8):
    """``task`` cut to its first ``n`` examples per split: a real-model check in a few seconds."""
    from ivedu.exercises import first_examples

    return first_examples(task, n)


def smol_world(smol, chapter: str = "ch1"):
    """``(settings, model, tokenizer, fmt, world)`` of the smol profile, every example kept (the
    known-examples cut would generate for hundreds of examples; the tests cut tasks with :func:`small`)."""
    import dataclasses

    from ivedu.settings import settings as chapter_settings
    from ivedu.study import ModelUnderStudy, load_tasks, prompt_format

    settings = chapter_settings(chapter, "smol")
    model, tokenizer = smol
    fmt = prompt_format(settings, tokenizer)
    whole = dataclasses.replace(settings, data=dataclasses.replace(settings.data, known_only=False))
    return settings, model, tokenizer, fmt, load_tasks(whole, ModelUnderStudy(model, tokenizer, fmt, "smol"))
