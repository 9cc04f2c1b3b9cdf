"""Evaluation metrics of the RadFM paper with 95% bootstrap confidence intervals.

- :mod:`radfm.metrics.closed`: SequenceMatcher matching to a closed set, ACC, binary/macro F1
- :mod:`radfm.metrics.text`: BLEU-1..4 (sacrebleu), ROUGE-1/ROUGE-L (rouge-score)
- :mod:`radfm.metrics.terms`: medical-term (UMLS) precision/recall with a pluggable extractor
- :mod:`radfm.metrics.bertscore`: BERTScore F1 with a local model directory
- :mod:`radfm.metrics.classification`: macro AUC/F1 for classification finetunes
- :mod:`radfm.metrics.bootstrap`: seeded, vectorised bootstrap
- :mod:`radfm.metrics.suite` / :mod:`radfm.metrics.score`: everything for prediction files
- :mod:`radfm.metrics.fewshot`: Flamingo-style zero/few-shot prompts for baseline models

Submodules are imported on use so that ``import radfm.metrics`` stays light.
"""
