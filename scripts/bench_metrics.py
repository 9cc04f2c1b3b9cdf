"""Time to score N VQA pairs with every metric (BLEU-1..4, ROUGE-1/L, medical-term P/R,
BERTScore F1 with the packaged MiniLM, 1000-resample bootstrap CIs) against the model-forward floor.

    .venv/bin/python scripts/bench_metrics.py [--n 10000] [--resamples 1000] [--batch-size 64]
                                              [--repeats 1] [--no-suite] [--output table.md]

Pairs are synthetic (seeded) radiology-style answers of 1-20 words, with a share of repeated
short answers ("yes", "no", ...) as in VQA sets. In the same run it measures:

* the **forward floor**: the same MiniLM forward over the same distinct sentences in plain
  batched torch (length-sorted batches of ``--batch-size``, ``torch.inference_mode``, tokens
  prepared beforehand and not timed) -- the least any BERTScore over these pairs can cost;
* each metric stage (``BERTScore F1`` is the whole scorer: de-duplication, tokenising, forward,
  greedy matching);
* the whole suite, ``radfm.metrics.suite.score_records`` (all metrics + CIs) on the same pairs;

and prints each time as a ratio of the floor. With ``--repeats R`` the floor, the BERTScore stage
and the suite are measured R times, interleaved, and medians are reported.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = ("left right upper lower lobe lung liver kidney brain pleural effusion pneumothorax nodule mass cyst "
         "consolidation opacity fracture enlarged normal no yes there is a the of with without small large "
         "ct mri x-ray ultrasound sphere cube bright dark lesion").split()
SHORT_ANSWERS = ("yes", "no", "normal", "left", "right", "ct", "mri")


def synthetic_pairs(n: int, seed: int = 0, short_share: float = 0.2) -> tuple[list[str], list[str]]:
    """n seeded (predictions, references); ``short_share`` of the references are one-word answers."""
    rng = random.Random(seed)
    references = [rng.choice(SHORT_ANSWERS) if rng.random() < short_share
                  else " ".join(rng.choices(WORDS, k=rng.randint(1, 20))) for _ in range(n)]
    predictions = []
    for reference in references:
        if len(reference.split()) == 1:
            predictions.append(reference if rng.random() < 0.7 else rng.choice(SHORT_ANSWERS))
            continue
        words = reference.split()
        keep = [w for w in words if rng.random() < 0.6] + rng.choices(WORDS, k=rng.randint(0, 6))
        rng.shuffle(keep)
        predictions.append(" ".join(keep))
    return predictions, references


def forward_floor(scorer, token_ids: list[list[int]], batch_size: int) -> float:
    """Seconds of the bare MiniLM forward over pre-tokenised sentences, length-sorted batches."""
    import torch

    from radfm.metrics.bertscore import length_buckets, pad_batch, torch_threads

    pad_id = scorer.tokenizer.pad_token_id or 0
    batches = [pad_batch([token_ids[i] for i in batch], pad_id)
               for batch in length_buckets([len(ids) for ids in token_ids], batch_size)]
    with torch_threads(scorer.threads), torch.inference_mode():
        start = time.perf_counter()
        for input_ids, mask in batches:
            scorer.model(input_ids=input_ids, attention_mask=mask)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1, help="measure floor, BERTScore and suite this many times")
    parser.add_argument("--no-suite", action="store_true", help="skip the end-to-end score_records timing")
    parser.add_argument("--output", help="also write the Markdown table here")
    args = parser.parse_args()

    import numpy as np

    from radfm.metrics import text
    from radfm.metrics.bertscore import BertScoreF1
    from radfm.metrics.bootstrap import Bootstrap, mean_stats, reduce_mean
    from radfm.metrics.predictions import PredictionRecord
    from radfm.metrics.suite import ScoringOptions, score_records
    from radfm.metrics.terms import default_term_extractor, term_precision_recall
    from radfm.utils.io import atomic_write_text

    predictions, references = synthetic_pairs(args.n)
    distinct = sorted({s.strip() for s in predictions + references if s.strip()})
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    times: dict[str, list[float]] = {}

    def timed(name, function):
        start = time.perf_counter()
        result = function()
        times.setdefault(name, []).append(time.perf_counter() - start)
        print(f"  {name:<34s} {times[name][-1]:8.2f} s", flush=True)
        return result

    bertscore = timed("load BERTScore model", lambda: BertScoreF1(batch_size=args.batch_size))
    print(f"{args.n} pairs, {len(distinct)} distinct sentences, {args.resamples} resamples, "
          f"BERTScore threads {bertscore.threads}, cpu count {os.cpu_count()}, load average {load:.2f}")
    extractor, note = timed("load term vocabulary", lambda: default_term_extractor())
    print(f"  ({note})")
    token_ids = bertscore.tokenize(distinct)
    n_tokens = sum(len(ids) for ids in token_ids)
    stats = timed("BLEU statistics (sacrebleu)", lambda: text.bleu_statistics(predictions, references))
    timed("sentence BLEU-1..4", lambda: [text.sentence_bleu_from_stats(stats, n) for n in range(1, 5)])
    rouge = timed("ROUGE-1/ROUGE-L (rouge-score)", lambda: text.rouge_scores(predictions, references))
    timed("medical-term precision/recall", lambda: term_precision_recall(predictions, references, extractor))
    records = [PredictionRecord(id=str(i), dataset="bench", task="vqa", reference=r, prediction=p)
               for i, (p, r) in enumerate(zip(predictions, references))]
    options = ScoringOptions(n_resamples=args.resamples, bertscore=bertscore, term_extractor=extractor)
    bert = None
    result = None
    for _ in range(args.repeats):
        floor = forward_floor(bertscore, token_ids, args.batch_size)
        times.setdefault("forward floor (plain batched MiniLM)", []).append(floor)
        print(f"  {'forward floor (plain batched MiniLM)':<34s} {floor:8.2f} s  ({n_tokens} tokens)", flush=True)
        bert = timed("BERTScore F1", lambda: bertscore(predictions, references))
        if not args.no_suite:
            (result,) = timed("whole suite (score_records)", lambda: score_records(records, options))
    plan = Bootstrap(args.n, n_resamples=args.resamples, seed=0)
    timed("bootstrap weights", lambda: plan.weights)
    timed("bootstrap CIs, 12 metrics", lambda: [plan.estimate(mean_stats(v), reduce_mean)
                                                for v in [rouge["rouge1"], rouge["rougeL"], bert] * 4])

    floor = statistics.median(times["forward floor (plain batched MiniLM)"])
    lines = [f"{args.n} pairs ({len(distinct)} distinct sentences, {n_tokens} tokens), {args.resamples} resamples, "
             f"{bertscore.threads} threads, load average at start {load:.2f}, medians of {args.repeats} run(s)", "",
             "| stage | seconds | x forward floor |", "|---|---:|---:|"]
    for name, values in times.items():
        seconds = statistics.median(values)
        lines.append(f"| {name} | {seconds:.2f} | {seconds / floor:.2f} |")
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    if args.output:
        atomic_write_text(args.output, table)
    if result is not None:
        for name in ("BLEU", "ROUGE", "UMLS_Precision", "UMLS_Recall", "BERT-Sim", "AVG", "Corpus-BLEU-4"):
            e = result.metrics[name]
            print(f"  {name:<15s} {100 * e.value:6.2f} ({100 * e.ci_low:.2f}, {100 * e.ci_high:.2f})")
        assert np.isfinite(result.metrics["AVG"].value)


if __name__ == "__main__":
    main()
