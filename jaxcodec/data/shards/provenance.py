"""What a shard set's provenance (the teachers that made it, by role) means to its consumers: the config overrides
it implies, the speaker teacher's calibration, and one phrase per teacher for reports."""

from __future__ import annotations

from jaxcodec.data.shards.format import CONTENT, SPEAKER, normalise_index

# A phone posteriorgram (teachers/phones.py) is a per-frame distribution: it is matched frame by frame (cosine
# over its 40 dimensions). SpeechTokenizer's default, the cosine over time per dimension, is trivially near 1 for
# the phones a crop does not contain (their rows are constant), which is most of them: measured in the ablation
# (bench/learning.md), the level-1 phone probe did not move under it.
POSTERIORGRAM_LAYER = "phones"


def by_role(provenance: dict) -> dict:
    """A provenance dict with its teachers under the role names (a legacy set's or workdir's `hubert`/`ecapa`)."""
    return normalise_index({"provenance": provenance})["provenance"]


# What the merge (or `jaxcodec shards calibrate`) adds to the speaker teacher's provenance: the parts, written per
# shard before the set is complete, do not have it.
MERGE_ADDED = ("calibration", "calibration_skipped")


def as_written_by_shards(provenance: dict) -> dict:
    """The provenance without what the merge added (MERGE_ADDED): what each shard's part-index records."""
    provenance = by_role(provenance)
    speaker = provenance.get(SPEAKER)
    if not isinstance(speaker, dict):
        return provenance
    return {**provenance, SPEAKER: {k: v for k, v in speaker.items() if k not in MERGE_ADDED}}


def config_overrides(provenance: dict) -> list[str]:
    """The `--set` overrides a shard set implies: the teachers' dimensions and the content layer, and for a phone
    posteriorgram the per-frame semantic cosine."""
    provenance = by_role(provenance)
    content, speaker = provenance[CONTENT], provenance[SPEAKER]
    overrides = [f"model.semantic_dim={content['dim']}", f"model.acoustic_dim={speaker['dim']}",
                 f"data.content_layer={content['layer']}"]
    if content.get("layer") == POSTERIORGRAM_LAYER:
        overrides.append("loss.semantic_axis=time")
    return overrides


def speaker_calibration(provenance: dict) -> dict | None:
    """The speaker teacher's calibration (jaxcodec.data.shards.calibration), or None for a set without one (made
    before calibration existed, or `jaxcodec shards calibrate` could not calibrate it)."""
    speaker = by_role(provenance).get(SPEAKER) or {}
    calibration = speaker.get("calibration")
    return calibration if isinstance(calibration, dict) else None


def describe_teachers(provenance: dict) -> dict[str, str]:
    """One phrase per teacher role from a shard set's provenance, for reports: a stand-in says what it is."""
    provenance = by_role(provenance)
    content, speaker = provenance.get(CONTENT) or {}, provenance.get(SPEAKER) or {}
    if content.get("teacher"):  # an offline content teacher, e.g. "phones from PocketSphinx, not HuBERT"
        content_text = f"{content.get('model')} ({content['teacher']})"
    else:
        content_text = f"HuBERT {content.get('model')}, layer {content.get('layer')}" + (
            f" ({content['random_init']})" if content.get("random_init") else "")
    calibration = speaker_calibration(provenance)
    calibrated = (f", calibrated: centred, scaled, τ = {calibration['temperature']:.3g} "
                  f"({calibration['calibrated']['kl_between_speakers']:.2f} nats between speakers)"
                  if calibration else ", uncalibrated")
    return {"content": content_text, "speaker": f"{speaker.get('model')} ({speaker.get('dim')}-d{calibrated})"}
