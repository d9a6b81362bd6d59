"""Peak memory and time per training iteration for each fine-tuning configuration.

Each configuration runs in a fresh subprocess (so peak-memory figures do not carry over),
builds the model with PEFT (random weights: memory and time do not depend on them),
and times ``--iters`` optimiser steps at ``--batch`` after one warm-up step: image
encoder (with gradients when it is in scope), prompt encoder, mask decoder, Dice + CE
loss, backward, AdamW. On CUDA it runs under bf16 autocast where supported (as the
training loop does) and reports ``torch.cuda.max_memory_allocated``; on the CPU it
reports the process's peak resident memory, which includes Python and torch themselves.

``s/iter`` runs the frozen encoder in every step (the upper bound a naive loop pays); ``cached s/iter``
is the step the training loop really takes for the decoder scope -- prompt encoder + mask decoder on
cached embeddings (samlab.train.loop embeds each slice once), timed by
:func:`samlab.estimate.time_training_step`, the same function ``samlab estimate`` calibrates with.
Comparing with the paper's Table 3 iteration times (A6000 GPU) needs a GPU run (``--device cuda``);
none was available when this was written.

    .venv/bin/python benchmarks/train_memory.py --models litemedsam --batch 4
    .venv/bin/python benchmarks/train_memory.py --models sam_vit_b sam_vit_h vit_t --device cuda   # a GPU machine
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def measure(model: str, scope: str, method: str, batch: int, iters: int, device: str) -> dict:
    import torch

    from samlab.train.configs import GridConfig, build_model
    from samlab.train import decode, segmentation_loss
    from samlab.train.forward import _autocast

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    loaded = build_model(GridConfig(model, scope, method), allow_random_init=True, device=dev)
    net = loaded.module.train()
    size = loaded.spec.image_size
    trainable = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    autocast, _ = _autocast(dev, enabled=True)
    encoder_trains = any(p.requires_grad for p in net.image_encoder.parameters())
    images = torch.rand(batch, 3, size, size, device=dev)
    boxes = torch.tensor([[size * 0.3, size * 0.3, size * 0.6, size * 0.7]] * batch, device=dev)
    low = 4 * int(net.prompt_encoder.image_embedding_size[0])
    target = (torch.rand(batch, 1, low, low, device=dev) > 0.5).float()

    def step() -> None:
        with autocast:
            if encoder_trains:
                features = net.image_encoder(images)
            else:
                with torch.no_grad():
                    features = net.image_encoder(images)
            logits, _ = decode(net, features, boxes, multimask=False)
        loss, _ = segmentation_loss("dice_ce", logits, target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up (allocator, kernels)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    tick = time.perf_counter()
    for _ in range(iters):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        peak_gib, kind = torch.cuda.max_memory_allocated() / 2**30, "CUDA max allocated"
    else:
        peak_gib, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process peak RSS"
    s_per_iter = (time.perf_counter() - tick) / iters
    cached = None
    if not encoder_trains:
        from samlab.estimate import time_training_step

        cached = time_training_step(model, scope, method, batch, iters=iters, device=str(dev))
    return {"configuration": f"{model}-{scope}-{method}", "device": str(dev), "batch": batch,
            "s_per_iter": s_per_iter, "cached_s_per_iter": cached, "peak_gib": peak_gib, "memory": kind,
            "trainable_m": sum(p.numel() for p in trainable) / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["litemedsam"])
    parser.add_argument("--scopes", nargs="+", default=["decoder", "encoder_decoder"])
    parser.add_argument("--methods", nargs="+", default=["vanilla", "adapter", "lora"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # model,scope,method: run one in this process
    args = parser.parse_args()
    if args.one:
        model, scope, method = args.one.split(",")
        print(json.dumps(measure(model, scope, method, args.batch, args.iters, args.device)))
        return
    rows = []
    for model in args.models:
        for scope in args.scopes:
            for method in args.methods:
                command = [sys.executable, __file__, "--one", f"{model},{scope},{method}", "--batch", str(args.batch),
                           "--iters", str(args.iters), "--device", args.device]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"{model}-{scope}-{method}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
                    continue
                row = json.loads(done.stdout.strip().splitlines()[-1])
                rows.append(row)
                cached = row.get("cached_s_per_iter")
                cached_text = f"{cached:7.2f} cached s/iter" if cached is not None else f"{'-':>7} cached s/iter"
                print(f"{row['configuration']:<40} {row['device']:<6} batch {row['batch']}  "
                      f"{row['s_per_iter']:7.2f} s/iter  {cached_text}  {row['peak_gib']:6.2f} GiB ({row['memory']})  "
                      f"trainable {row['trainable_m']:.2f} M", flush=True)


if __name__ == "__main__":
    main()
