"""Probes on frozen tokens: what each RVQ level group carries.

A token of level l stands for its code vector (the codebook row); a group of levels (level 1; levels 2..n_q; all)
is represented frame by frame by the sum of its code vectors, which is exactly what the decoder receives from
those levels. On these features, linear classifiers (scikit-learn's multinomial logistic regression, standardised
inputs, a fixed iteration budget) are trained and scored on held-out data:

- utterance labels (speaker, and any categorical label the manifest or a label file gives, e.g. gender, voice,
  emotion): features are the mean and standard deviation over time; utterances of each class are dealt
  alternately to train and test, so every class is in both;
- phones: one example per 20 ms frame, labelled by PocketSphinx's forced alignment of the transcript (the phone
  at the frame's centre; silence frames dropped); utterances are dealt alternately to train and test.

Each probe is also scored on held-out speakers (`*_by_speaker`): speakers, not utterances, are dealt alternately
(within each class, for an utterance label), so the test part holds voices the probe never saw. For phones this
asks whether the content is coded the same way across voices; the speaker label itself has no such split.

The paper's claim, in probe terms: level 1 predicts phones better than levels 2..n_q, and levels 2..n_q predict
the speaker better than level 1. Accuracy is reported with the majority-class rate as the chance line.
"""

from __future__ import annotations

import numpy as np

PROBE_MAX_ITER = 300  # the fixed training budget of every probe (lbfgs iterations)
MAX_PHONE_FRAMES = 60_000  # frames kept for the phone probe (a uniform subsample beyond this)
SILENCE_PHONES = frozenset({"SIL", "+SPN+", "+NSN+"})


def level_groups(n_q: int) -> dict[str, list[int]]:
    groups = {"level 1": [0]}
    if n_q > 1:
        groups[f"levels 2-{n_q}"] = list(range(1, n_q))
        groups[f"levels 1-{n_q}"] = list(range(n_q))
    return groups


def frame_features(codes_qt: np.ndarray, codebooks_qkd: np.ndarray, levels: list[int]) -> np.ndarray:
    """float32 [T, D]: the sum of the code vectors of `levels` per frame."""
    return np.sum([codebooks_qkd[level][codes_qt[level]] for level in levels], axis=0).astype(np.float32)


def utterance_features(frames_td: np.ndarray) -> np.ndarray:
    return np.concatenate([frames_td.mean(0), frames_td.std(0)])


def frame_phone_labels(phones: list[tuple[str, float, float]], num_frames: int, frame_seconds: float) -> list[str]:
    """The phone at each frame's centre ('' outside every segment or in silence)."""
    labels = [""] * num_frames

    def first_frame_from(seconds: float) -> int:  # the first frame whose centre is at or after `seconds`
        return int(np.ceil(round(seconds / frame_seconds - 0.5, 6)))  # rounded: 0.07 / 0.02 is 3.0000000000000004

    for name, start, end in phones:
        first, last = max(first_frame_from(start), 0), min(first_frame_from(end), num_frames)
        for t in range(first, last):
            labels[t] = "" if name in SILENCE_PHONES else name
    return labels


def alternate_split(labels: list[str]) -> np.ndarray:
    """Boolean train mask: the examples of each label dealt alternately to train (even) and test (odd)."""
    seen: dict[str, int] = {}
    train = np.zeros(len(labels), bool)
    for i, label in enumerate(labels):
        train[i] = seen.get(label, 0) % 2 == 0
        seen[label] = seen.get(label, 0) + 1
    return train


def speaker_split(speakers: list[str], labels: list[str] | None = None) -> np.ndarray:
    """Boolean train mask that holds out whole speakers: the speakers (of each label, when given) dealt
    alternately to train and test in order of first appearance."""
    classes = labels if labels is not None else [""] * len(speakers)
    order: dict[str, list[str]] = {}
    for speaker, label in zip(speakers, classes, strict=True):
        if speaker not in order.setdefault(label, []):
            order[label].append(speaker)
    train_speakers = {(label, speaker) for label, group in order.items() for k, speaker in enumerate(group)
                      if k % 2 == 0}
    return np.array([(label, speaker) in train_speakers for speaker, label in zip(speakers, classes, strict=True)])


def linear_probe(features: np.ndarray, labels: list[str], train: np.ndarray, seed: int = 0) -> dict | None:
    """Train on `train`, score on the rest: accuracy, chance (majority class of the test part), sizes.
    None when there are not two classes in training or nothing to test."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels_arr = np.asarray(labels)
    test = ~train
    if len(set(labels_arr[train])) < 2 or not test.any():
        return None
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=PROBE_MAX_ITER, random_state=seed))
    model.fit(features[train], labels_arr[train])
    predicted = model.predict(features[test])
    _, counts = np.unique(labels_arr[test], return_counts=True)
    return {"accuracy": float(np.mean(predicted == labels_arr[test])), "chance": float(counts.max() / test.sum()),
            "classes": int(len(set(labels_arr))), "train": int(train.sum()), "test": int(test.sum())}


def utterance_probes(codes: list[np.ndarray], codebooks_qkd: np.ndarray, labels: dict[str, list[str | None]],
                     speakers: list[str] | None = None) -> dict[str, dict[str, dict | None]]:
    """{label name: {level group: probe result}} for utterance-level labels (None entries = unlabelled). With
    `speakers`, the test utterances are those of held-out speakers (and the speaker label is left out)."""
    results: dict[str, dict[str, dict | None]] = {}
    for name, values in labels.items():
        keep = [i for i, v in enumerate(values) if v is not None]
        if len({values[i] for i in keep}) < 2 or (speakers is not None and name == "speaker"):
            continue
        kept_labels = [str(values[i]) for i in keep]
        train = (alternate_split(kept_labels) if speakers is None
                 else speaker_split([speakers[i] for i in keep], kept_labels))
        results[name] = {}
        for group, levels in level_groups(codebooks_qkd.shape[0]).items():
            features = np.stack([utterance_features(frame_features(codes[i], codebooks_qkd, levels)) for i in keep])
            results[name][group] = linear_probe(features, kept_labels, train)
    return results


def phone_probe(codes: list[np.ndarray], codebooks_qkd: np.ndarray, frame_labels: list[list[str] | None],
                seed: int = 0, speakers: list[str] | None = None) -> dict[str, dict | None]:
    """{level group: probe result} for frame-level phone labels (None for utterances without an alignment). With
    `speakers` (one per utterance), whole speakers are held out instead of utterances."""
    aligned = [i for i, labels in enumerate(frame_labels) if labels is not None]
    if len(aligned) < 2:
        return {}
    if speakers is None:
        utterance_train = {i: k % 2 == 0 for k, i in enumerate(aligned)}
    else:
        mask = speaker_split([speakers[i] for i in aligned])
        utterance_train = {i: bool(m) for i, m in zip(aligned, mask, strict=True)}
    rows = [(i, t) for i in aligned for t, label in enumerate(frame_labels[i]) if label]
    if len(rows) > MAX_PHONE_FRAMES:
        keep = np.random.default_rng(seed).choice(len(rows), MAX_PHONE_FRAMES, replace=False)
        rows = [rows[k] for k in np.sort(keep)]
    labels = [frame_labels[i][t] for i, t in rows]
    train = np.array([utterance_train[i] for i, _ in rows])
    results = {}
    for group, levels in level_groups(codebooks_qkd.shape[0]).items():
        per_utterance = {i: frame_features(codes[i], codebooks_qkd, levels) for i in aligned}
        features = np.stack([per_utterance[i][t] for i, t in rows])
        results[group] = linear_probe(features, labels, train, seed)
    return results
