"""The pipeline timed on this machine (``ivedu.timing``): the chapter 5 rows marked as measured."""

import dataclasses

def test_measure_times_the_pipeline_on_this_machine(tiny, world):
    """The chapter's measured rows: the same steps, timed, with the basis saying where."""
    from ivedu.prompts import TINY_FORMAT
    from ivedu.settings import ExtractionSettings, FinetuneSettings, settings
    from ivedu.study import ModelUnderStudy
    from ivedu.timing import measure_pipeline
    model, tokenizer = tiny
    s = settings("ch5", "tiny",
                 extraction=ExtractionSettings(n_prompts=4, head_counts=(1,), scales=(1.0,), layers=(0,)),
                 finetune=FinetuneSettings(batch_size=4))
    tasks = [dataclasses.replace(world.task(n), valid=world.task(n).valid[:3], test=world.task(n).test[:3])
             for n in ("capital", "antonym")]
    rows = measure_pipeline(ModelUnderStudy(model, tokenizer, TINY_FORMAT), tasks, world.task("first_french"), s,
                            train_steps=2)
    assert [r.step for r in rows] == ["scan (causal mediation)", "vector (sum of top heads)",
                                      "intervention sweep + test", "fine-tuning (lora)", "fine-tuning (full)"]
    assert all(r.basis == "measured on CPU" and r.seconds >= 0 for r in rows)
