"""What a shard set's provenance (the teachers that made it) means to its consumers: the config overrides it
implies, and one phrase per teacher for reports."""

from __future__ import annotations

TEACHERS_FILE = "teachers.json"  # a training workdir's copy of its shard set's provenance (for later reports)


# A phone posteriorgram (teachers/phones.py) is a per-frame distribution: it is matched frame by frame (cosine
# over its 40 dimensions). SpeechTokenizer's default, the cosine over time per dimension, is trivially near 1 for
# the phones a crop does not contain (their rows are constant), which is most of them: measured in the ablation
# (bench/learning.md), the level-1 phone probe did not move under it.
POSTERIORGRAM_LAYER = "phones"


def config_overrides(provenance: dict) -> list[str]:
    """The `--set` overrides a shard set implies: the teachers' dimensions and layer, and for a phone posteriorgram
    the per-frame semantic cosine."""
    content, acoustic = provenance["hubert"], provenance["ecapa"]
    overrides = [f"model.semantic_dim={content['dim']}", f"model.acoustic_dim={acoustic['dim']}",
                 f"data.hubert_layer={content['layer']}"]
    if content.get("layer") == POSTERIORGRAM_LAYER:
        overrides.append("loss.semantic_axis=time")
    return overrides


def describe_teachers(provenance: dict) -> dict[str, str]:
    """One phrase per teacher from a shard set's provenance, for reports: a stand-in says what it is."""
    content, acoustic = provenance.get("hubert") or {}, provenance.get("ecapa") or {}
    if content.get("teacher"):  # an offline content teacher, e.g. "phones from PocketSphinx, not HuBERT"
        content_text = f"{content.get('model')} ({content['teacher']})"
    else:
        content_text = f"HuBERT {content.get('model')}, layer {content.get('layer')}" + (
            f" ({content['random_init']})" if content.get("random_init") else "")
    return {"content": content_text, "acoustic": f"{acoustic.get('model')} ({acoustic.get('dim')}-d)"}

