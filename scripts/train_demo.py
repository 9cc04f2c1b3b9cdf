#!/usr/bin/env python
"""Train the demo model shipped in ``bundles/radfm/models/demo`` (reproducible from this script).

Steps (all offline, CPU):
1. phantoms: training cases with seed 0, held-out evaluation cases with a NEW seed (1);
2. the demo training manifest: the phantom tasks (modality open/inductive, yes/no diagnosis for
   each disease, VQA count/location/shape; findings reports with --reports) plus two-scan prompts
   ("What are the modalities of these scans?");
3. a small byte-level BPE tokenizer trained on that corpus and the prompt banks;
   stage 0: the ViT is first trained as a multi-label lesion classifier (warm start);
4. a small RadFM trained with our own ``instruct.json`` bundle (``monai.bundle run``);
5. evaluation on the held-out split: yes/no diagnosis, single-lesion location VQA, modality;
   and yes/no diagnosis again with every image replaced by zeros (the images must matter);
6. weights (safetensors), config, processor (tokenizer + grid, ``processor_config.json``) and ``EVAL.md``/``eval.json``
   to the output folder, and the same weights as a plain state dict in ``<output>/../model.pt``
   (``bundles/radfm/models/model.pt``, what the bundle's ``inference.json`` loads).

    python scripts/train_demo.py --output bundles/radfm/models/demo --work WORK_FOLDER
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "radfm"

# model sizes: small enough for 2 CPU cores, large enough to read phantoms
DEMO_CONFIG = {
    "vision": {"dim": 48, "depth": 2, "heads": 4, "dim_head": 16, "mlp_dim": 96},
    "perceiver": {"depth": 2, "heads": 4, "dim_head": 16, "ff_mult": 2},
    "llm": {
        "model_type": "llama", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 512,
        "rms_norm_eps": 1e-6, "initializer_range": 0.02, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
        "tie_word_embeddings": False, "hidden_act": "silu",
    },
}
# the standard preprocessing (radfm.transforms) at a smaller grid: 4x4 patches per slice, so that a
# lesion fills a good part of its patch (at 64x64 it fills ~7% and the model does not learn it)
IMAGE_SIZES = {"size_2d": [128, 128], "size_3d": [128, 128], "max_depth": 8}
TRAIN_TASKS = {"modality_open", "modality_inductive", "diagnosis_inductive", "vqa"}  # + "report" with --reports


def log(message: str) -> None:
    print(f"[train_demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def build_manifest(phantom_dir: Path, out_path: Path, seed: int, reports: bool = False) -> list[dict]:
    """Demo training samples (all phantom splits of the training seed are training data)."""
    tasks = TRAIN_TASKS | ({"report"} if reports else set())
    from radfm.data.phantoms import DISEASES, MODALITIES
    from radfm.data.prompts import sample_prompt

    rng = random.Random(seed)
    samples = []
    for split in ("train", "val", "test"):
        for line in (phantom_dir / f"{split}.jsonl").read_text().splitlines():
            item = json.loads(line)
            if item["task"] in tasks and item["task"] != "diagnosis_inductive":
                item["images"] = [{**ref, "path": str((phantom_dir / ref["path"]).resolve())} for ref in item["images"]]
                item["split"] = "train"
                samples.append(item)
    cases = [json.loads(line) for line in (phantom_dir / "cases.jsonl").read_text().splitlines()]
    for case in cases:
        image = [{"path": str((phantom_dir / case["image"]).resolve()), "modality": case["modality"]}]
        for disease in DISEASES:  # both diseases per case: twice the yes/no signal of the balanced set
            samples.append({
                "id": f"{case['id']}:diagnosis:{disease}", "dataset": "phantoms", "task": "diagnosis_inductive",
                "images": image, "instruction": sample_prompt("diagnosis_inductive", rng, 1, disease=disease),
                "response": "yes" if disease in case["diseases"] else "no", "split": "train",
            })
    for k in range(len(cases) // 3):  # prompts with two scans (the quick start asks one)
        a, b = rng.sample(cases, 2)
        samples.append({
            "id": f"pair_{k}", "dataset": "phantoms", "task": "modality_open",
            "images": [{"path": str((phantom_dir / c["image"]).resolve())} for c in (a, b)],
            "instruction": "What are the modalities of these scans? <image> <image>",
            "response": f"{a['modality']} and {b['modality']}", "split": "train",
        })
    assert all(m in MODALITIES for m in (c["modality"] for c in cases))
    rng.shuffle(samples)
    out_path.write_text("".join(json.dumps(s) + "\n" for s in samples), encoding="utf-8")
    return samples


QUADRANT_LABELS = ("left upper", "right upper", "left lower", "right lower")


def warm_start_vision(phantom_dir: Path, out_file: Path, steps: int, seed: int, lr: float = 1e-3,
                      held_out_dir: Path | None = None) -> dict:
    """Stage 0: train the demo-sized ViT as a multi-label classifier (mass, cyst, lesion per quadrant).

    End to end, a from-scratch tiny model learns the modality (a global feature) but not small
    lesions within a CPU budget; an encoder that already sees lesions fixes that (the paper, too,
    trains in stages). Uses ``radfm.model.classifier``; 2D and 3D batches alternate.
    This stage is cheap, so it gets its own, larger phantom set: with the instruct stage's 720
    cases the encoder memorises the ultrasound speckle and is at chance on new ultrasound cases.
    Returns the accuracy per label on the training cases and, with ``held_out_dir``, per modality
    (both diagnoses right; quadrant labels right) on held-out cases.
    """
    import torch
    from safetensors.torch import save_file

    from radfm.data.loaders import default_image_loader
    from radfm.model.classifier import load_classifier

    loader = default_image_loader(**IMAGE_SIZES)

    def target(case: dict) -> list[float]:
        present = {les["location"] for les in case["lesions"]}
        return [float("mass" in case["diseases"]), float("cyst" in case["diseases"])] + [
            float(q in present) for q in QUADRANT_LABELS]

    def load_cases(folder: Path) -> list[tuple]:
        # one grey channel in float16 per image (the loader's 3 channels are copies): 6000 cases in ~1.2 GB
        cases = [json.loads(line) for line in (folder / "cases.jsonl").read_text().splitlines()]
        return [(loader(str(folder / c["image"]))[:1].half(), torch.tensor(target(c)), c) for c in cases]

    def images(batch: list) -> torch.Tensor:
        return torch.stack([b[0] for b in batch]).float().expand(-1, 3, -1, -1, -1)

    def predict(data: list) -> list[tuple[torch.Tensor, tuple]]:
        out = []
        for dims in (2, 3):  # one image shape per forward call
            same = [b for b in data if b[2]["dims"] == dims]
            for start in range(0, len(same), 64):
                chunk = same[start : start + 64]
                out += list(zip((model(images(chunk)) > 0).float(), chunk))
        return out

    train = load_cases(phantom_dir)
    by_dims = {dims: [b for b in train if b[2]["dims"] == dims] for dims in (2, 3)}
    model = load_classifier(2 + len(QUADRANT_LABELS), vision_overrides=DEMO_CONFIG["vision"], seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    rng = random.Random(seed)
    model.train()
    for step in range(steps):
        data = by_dims[2 if step % 2 else 3]
        batch = rng.sample(data, min(16, len(data)))
        logits = model(images(batch))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.stack([b[1] for b in batch]))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 200 == 0:
            log(f"vision warm start step {step}/{steps}: loss {loss.item():.3f}")
    model.eval()
    results: dict = {}
    with torch.no_grad():
        hits = [(pred == b[1]).float() for pred, b in predict(train)]
        results["train"] = dict(zip(("mass", "cyst", *QUADRANT_LABELS), torch.stack(hits).mean(0).tolist()))
        if held_out_dir is not None:
            per_modality: dict[str, list[torch.Tensor]] = {}
            for pred, b in predict(load_cases(held_out_dir)):
                per_modality.setdefault(b[2]["modality"], []).append(
                    torch.stack([(pred[:2] == b[1][:2]).all().float(), (pred[2:] == b[1][2:]).all().float()]))
            results["held_out"] = {m: dict(zip(("diagnoses", "quadrants"), torch.stack(v).mean(0).tolist()))
                                   for m, v in sorted(per_modality.items())}
    save_file({k: v.contiguous() for k, v in model.vision_encoder.state_dict().items()}, str(out_file))
    return results


def train_demo_tokenizer(samples: list[dict], out_dir: Path, vocab_size: int):
    from radfm.data.prompts import PROMPT_DIR
    from radfm.model.tokenizer import train_tokenizer

    corpus = [s["instruction"].replace("<image>", " ") + " " + s["response"] for s in samples]
    for bank in sorted(PROMPT_DIR.glob("*.json")):
        corpus += [p.replace("{images}", " ") for p in json.loads(bank.read_text())["prompts"]]
    tokenizer = train_tokenizer(corpus, vocab_size=vocab_size)
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def evaluate(model_dir: Path, phantom_dir: Path, batch_size: int = 32) -> dict:
    """Held-out accuracy per task (difflib closed-set matching) and the zero-image ablation."""
    import torch

    from radfm.data.loaders import default_image_loader
    from radfm.engines.inference import answer_prompts
    from radfm.metrics.closed import match_closed_set, match_reference
    from radfm.model.loading import load

    model, processor = load(model_dir, device="cpu", dtype="float32")
    loader = default_image_loader(**IMAGE_SIZES)
    groups: dict[str, list[dict]] = {"diagnosis_yes_no": [], "lesion_location": [], "modality_open": [],
                                     "modality_yes_no": []}
    for line in (phantom_dir / "test.jsonl").read_text().splitlines() + (phantom_dir / "val.jsonl").read_text().splitlines():
        s = json.loads(line)
        if s["task"] == "diagnosis_inductive":
            groups["diagnosis_yes_no"].append(s)
        elif s["task"] == "vqa" and s.get("question_type") == "location" and s.get("closed_set"):
            groups["lesion_location"].append(s)
        elif s["task"] == "modality_open":
            groups["modality_open"].append(s)
        elif s["task"] == "modality_inductive":
            groups["modality_yes_no"].append(s)
    cache: dict[str, torch.Tensor] = {}

    def image(ref: dict) -> torch.Tensor:
        path = str((phantom_dir / ref["path"]).resolve())
        if path not in cache:
            cache[path] = loader(path)
        return cache[path]

    def accuracy(samples: list[dict], zero_images: bool = False) -> float:
        correct = 0
        for start in range(0, len(samples), batch_size):
            chunk = samples[start : start + batch_size]
            images = [[torch.zeros_like(image(r)) if zero_images else image(r) for r in s["images"]] for s in chunk]
            answers = answer_prompts(model, processor, [s["instruction"] for s in chunk], images, max_new_tokens=8)
            for s, answer in zip(chunk, answers):
                choices = s.get("closed_set") or ["yes", "no"]
                correct += match_closed_set(answer, choices) == match_reference(s["response"], choices)
        return correct / max(1, len(samples))

    results = {name: {"n": len(samples), "accuracy": accuracy(samples)} for name, samples in groups.items()}
    results["diagnosis_yes_no_zero_images"] = {
        "n": len(groups["diagnosis_yes_no"]), "accuracy": accuracy(groups["diagnosis_yes_no"], zero_images=True)}
    yes = sum(s["response"] == "yes" for s in groups["diagnosis_yes_no"])
    results["diagnosis_yes_no"]["share_yes"] = yes / max(1, len(groups["diagnosis_yes_no"]))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=str(BUNDLE / "models" / "demo"))
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "radfm_demo"))
    parser.add_argument("--train-cases", type=int, default=1440)
    parser.add_argument("--eval-cases", type=int, default=1200, help="held-out cases; val+test splits (20%%) are scored")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--reports", action="store_true", help="also train on findings reports (long answers)")
    parser.add_argument("--vision-steps", type=int, default=3200, help="vision warm-start steps (0: none)")
    parser.add_argument("--vision-cases", type=int, default=6000, help="phantom cases for the vision warm start")
    parser.add_argument("--llm-hidden", type=int, default=192)
    parser.add_argument("--llm-layers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--vocab-size", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on busy shared cores)")
    args = parser.parse_args(argv)

    import torch
    from monai.bundle import run as bundle_run

    from radfm.data.phantoms import make_phantoms

    torch.set_num_threads(args.threads)
    heads = max(1, args.llm_hidden // 32)
    DEMO_CONFIG["llm"].update(hidden_size=args.llm_hidden, intermediate_size=2 * args.llm_hidden,
                              num_hidden_layers=args.llm_layers, num_attention_heads=heads, num_key_value_heads=heads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    log(f"phantoms: {args.train_cases} training cases (seed {args.seed}), {args.eval_cases} held-out (seed {args.eval_seed})")
    train_dir, eval_dir = work / "phantoms_train", work / "phantoms_eval"
    make_phantoms(train_dir, n=args.train_cases, seed=args.seed, overwrite=True, progress=False)
    make_phantoms(eval_dir, n=args.eval_cases, seed=args.eval_seed, overwrite=True, progress=False)
    samples = build_manifest(train_dir, work / "demo_train.jsonl", args.seed, reports=args.reports)
    log(f"{len(samples)} training samples")

    tokenizer_dir = work / "tokenizer"
    tokenizer = train_demo_tokenizer(samples, tokenizer_dir, args.vocab_size)
    log(f"tokenizer: {len(tokenizer)} tokens (V = {tokenizer.convert_tokens_to_ids('<image>')})")

    vision_init, warm_start = None, None
    if args.vision_steps:
        vision_init = work / "vision_init.safetensors"
        vision_dir = work / "phantoms_vision"
        make_phantoms(vision_dir, n=args.vision_cases, seed=args.seed, overwrite=True, progress=False)
        warm_start = warm_start_vision(vision_dir, vision_init, args.vision_steps, args.seed, held_out_dir=eval_dir)
        shutil.rmtree(vision_dir)
        log("vision warm start accuracy: " + json.dumps(warm_start))

    run_dir = work / "bundle_run"
    shutil.rmtree(run_dir, ignore_errors=True)
    bundle_run(
        config_file=[str(BUNDLE / "configs" / "train.json"), str(BUNDLE / "configs" / "instruct.json")],
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        logging_file=str(BUNDLE / "configs" / "logging.conf"),
        bundle_root=str(run_dir),
        run_name="demo",
        train_manifest=str(work / "demo_train.jsonl"),
        val_manifest=str(eval_dir / "val.jsonl"),
        model="tiny",
        tokenizer_dir=str(tokenizer_dir),
        vision_init=str(vision_init) if vision_init else None,
        config_overrides=DEMO_CONFIG,
        image_grid=IMAGE_SIZES,  # written to the model's processor_config.json by SavePretrained
        cache_images=True,
        term_weighting=False,
        seed=args.seed,
        epochs=args.epochs,
        batching="mixed",  # 2D and 3D in one batch of 8: fewer, fuller steps than the paper's 4 x 2D / 1 x 3D
        batch_size=args.batch_size,
        accumulation_steps=1,
        learning_rate=args.lr,
        weight_decay=0.01,
        warmup_steps=50,
        precision="fp32",
        frozen_llm_epochs=0,
        max_length=256,
        val_interval=args.epochs,
        val_limit=96,
        val_batch_size=32,
        max_new_tokens=8,
    )
    model_dir = run_dir / "runs" / "demo" / "model"
    log(f"trained in {(time.time() - started) / 60:.1f} min; evaluating on held-out phantoms (seed {args.eval_seed})")
    results = evaluate(model_dir, eval_dir)
    results["vision_warm_start"] = warm_start
    results["settings"] = {**vars(args), "image_sizes": IMAGE_SIZES, "model": DEMO_CONFIG,
                           "minutes_total": round((time.time() - started) / 60, 1)}

    output = Path(args.output)
    tmp = output.parent / f".{output.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(model_dir, tmp)
    from radfm.model.processing import RadFMImageProcessor

    # already recorded by SavePretrained; stated again so the folder cannot drift
    RadFMImageProcessor.at_grid(IMAGE_SIZES).save_grid(tmp)
    (tmp / "eval.json").write_text(json.dumps(results, indent=2))
    rows = [f"| {name} | {r['n']} | {100 * r['accuracy']:.1f}% |" for name, r in results.items()
            if name not in ("settings", "vision_warm_start")]
    (tmp / "EVAL.md").write_text(
        "# Demo model: held-out phantom evaluation\n\n"
        f"Trained by `python scripts/train_demo.py` (seed {args.seed}); evaluated on phantoms made with seed "
        f"{args.eval_seed} (val + test splits), greedy decoding, answers matched to the closed set with difflib.\n\n"
        "| task | cases | accuracy |\n|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "`diagnosis_yes_no_zero_images`: the same yes/no questions with every image replaced by zeros.\n"
    )
    tmp.chmod(0o755)
    for path in tmp.iterdir():
        path.chmod(0o644)  # save_pretrained writes private temp files; these are for sharing
    shutil.rmtree(output, ignore_errors=True)
    tmp.rename(output)
    # the weights where MONAI looks for them (inference.json's CheckpointLoader, MONAI Label, ckpt_export)
    from radfm.engines.build import export_state_dict

    export_state_dict(output, output.parent / "model.pt")
    log(json.dumps({k: v for k, v in results.items() if k != "settings"}, indent=1))
    log(f"wrote {output} in {(time.time() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
