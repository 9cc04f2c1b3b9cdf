"""Time to score 10,000 VQA pairs with every metric (BLEU-1..4, ROUGE-1/L, medical-term P/R,
BERTScore F1 with the packaged MiniLM) and 1000-resample bootstrap CIs.

    .venv/bin/python scripts/bench_metrics.py [--n 10000] [--resamples 1000] [--batch-size 64]

Pairs are synthetic (seeded) radiology-style question answers of 1-20 words. Prints the time of
each stage, measured one after another in the same process; ``--end-to-end`` also times the
real entry point (``radfm.metrics.suite.score_records``) on the same pairs.
"""

from __future__ import annotations

import argparse
import os
import random
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = ("left right upper lower lobe lung liver kidney brain pleural effusion pneumothorax nodule mass cyst "
         "consolidation opacity fracture enlarged normal no yes there is a the of with without small large "
         "ct mri x-ray ultrasound sphere cube bright dark lesion").split()


def synthetic_pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    references = [" ".join(rng.choices(WORDS, k=rng.randint(1, 20))) for _ in range(n)]
    predictions = []
    for reference in references:
        words = reference.split()
        keep = [w for w in words if rng.random() < 0.6] + rng.choices(WORDS, k=rng.randint(0, 6))
        rng.shuffle(keep)
        predictions.append(" ".join(keep))
    return predictions, references


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--end-to-end", action="store_true",
                        help="also time score_records on the same pairs (computes everything, BERTScore included, again)")
    args = parser.parse_args()

    import numpy as np
    import torch

    from radfm.metrics import text
    from radfm.metrics.bertscore import BertScoreF1
    from radfm.metrics.bootstrap import Bootstrap, mean_stats, reduce_mean
    from radfm.metrics.predictions import PredictionRecord
    from radfm.metrics.suite import ScoringOptions, score_records
    from radfm.metrics.terms import default_term_extractor, term_precision_recall

    predictions, references = synthetic_pairs(args.n)
    print(f"{args.n} pairs, {args.resamples} resamples, torch threads {torch.get_num_threads()}, cpu count {os.cpu_count()}")
    times: dict[str, float] = {}

    def timed(name, function):
        start = time.perf_counter()
        result = function()
        times[name] = time.perf_counter() - start
        print(f"  {name:<34s} {times[name]:8.2f} s", flush=True)
        return result

    bertscore = timed("load BERTScore model", lambda: BertScoreF1(batch_size=args.batch_size))
    extractor, note = timed("load term vocabulary", lambda: default_term_extractor())
    print(f"  ({note})")
    stats = timed("BLEU statistics (sacrebleu)", lambda: text.bleu_statistics(predictions, references))
    timed("sentence BLEU-1..4", lambda: [text.sentence_bleu_from_stats(stats, n) for n in range(1, 5)])
    rouge = timed("ROUGE-1/ROUGE-L (rouge-score)", lambda: text.rouge_scores(predictions, references))
    timed("medical-term precision/recall", lambda: term_precision_recall(predictions, references, extractor))
    bert = timed("BERTScore F1", lambda: bertscore(predictions, references))
    plan = Bootstrap(args.n, n_resamples=args.resamples, seed=0)
    timed("bootstrap weights", lambda: plan.weights)
    timed("bootstrap CIs, 12 metrics", lambda: [plan.estimate(mean_stats(v), reduce_mean)
                                                for v in [rouge["rouge1"], rouge["rougeL"], bert] * 4])
    print(f"  per-metric stages total            {sum(times.values()):8.2f} s "
          f"(scoring without model loading: {sum(times.values()) - times['load BERTScore model']:.2f} s)")
    if not args.end_to_end:
        return

    records = [PredictionRecord(id=str(i), dataset="bench", task="vqa", reference=r, prediction=p)
               for i, (p, r) in enumerate(zip(predictions, references))]
    options = ScoringOptions(n_resamples=args.resamples, bertscore=bertscore, term_extractor=extractor)
    start = time.perf_counter()
    (result,) = score_records(records, options)
    total = time.perf_counter() - start
    print(f"score_records (all metrics + CIs, models loaded): {total:.2f} s for {args.n} pairs "
          f"({args.n / total:.0f} pairs/s)")
    for name in ("BLEU", "ROUGE", "UMLS_Precision", "UMLS_Recall", "BERT-Sim", "AVG", "Corpus-BLEU-4"):
        e = result.metrics[name]
        print(f"  {name:<15s} {100 * e.value:6.2f} ({100 * e.ci_low:.2f}, {100 * e.ci_high:.2f})")
    assert np.isfinite(result.metrics["AVG"].value)


if __name__ == "__main__":
    main()
